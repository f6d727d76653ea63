"""`kinesis-eo run --metrics emf|prometheus|none`: a worker's metrics, from the command."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from kinesis_eo import cli
from kinesis_eo.testing.backends import MotoServer
from tests.helpers import applied, produce
from tests.streams import make_stream
from tests.test_cli_worker import create_tables, start_run, unique_names
from tests.workers import wait_for

SCHEMA = json.loads((Path(__file__).parent / "emf_schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def emf_totals(output: str, name: str) -> int:
    """The sum of ``name`` over every EMF document in ``output`` (other lines are logs)."""
    total = 0
    for line in output.splitlines():
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        document = json.loads(line)
        VALIDATOR.validate(document)
        if name in document:
            value = document[name]
            total += int(sum(value) if isinstance(value, list) else value)
    return total


def test_run_writes_emf_documents_that_count_what_it_applied_by_default(
    moto_server: MotoServer, processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    names = unique_names("emf")
    kinesis, dynamodb = moto_server.client("kinesis"), moto_server.client("dynamodb")
    make_stream(kinesis, names.stream, 2)
    create_tables(dynamodb, names)
    ids = produce(kinesis, names.stream, 40)
    log = tmp_path / "run.log"
    process = start_run(moto_server, names, log, "--failover-seconds", "3")
    processes.append(process)

    wait_for(lambda: len(applied(dynamodb, names.effects)) == 40, 30, "the effects")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    output = log.read_text()

    assert applied(dynamodb, names.effects) == dict.fromkeys(ids, 1)
    assert emf_totals(output, "records_applied") == 40
    assert emf_totals(output, "records_read") == 40
    namespaces = {
        metrics["Namespace"]
        for line in output.splitlines()
        if '"_aws"' in line
        for metrics in json.loads(line)["_aws"]["CloudWatchMetrics"]
    }
    assert namespaces == {"KinesisEO"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def counter(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(f"kinesis_eo_{name}_total{{")
    )


def test_run_serves_prometheus_metrics_on_the_port_given(
    moto_server: MotoServer, processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    names = unique_names("prom")
    kinesis, dynamodb = moto_server.client("kinesis"), moto_server.client("dynamodb")
    make_stream(kinesis, names.stream, 1)
    create_tables(dynamodb, names)
    produce(kinesis, names.stream, 25)
    port = free_port()
    flags = ["--metrics", "prometheus", "--metrics-port", str(port)]
    flags += ["--metrics-address", "127.0.0.1"]
    process = start_run(moto_server, names, tmp_path / "run.log", *flags)
    processes.append(process)

    def served() -> bool:
        assert process.poll() is None, (tmp_path / "run.log").read_text()
        try:
            return counter(scrape(port), "records_applied") == 25
        except OSError:
            return False

    wait_for(served, 30, "the scrape to show 25 applied records")
    assert counter(scrape(port), "records_read") == 25
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--metrics", "prometheus"], "--metrics prometheus needs --metrics-port"),
        (["--metrics", "prometheus", "--metrics-port", "70000"], "--metrics-port must be 0"),
    ],
)
def test_run_refuses_metrics_settings_that_cannot_work_in_one_line(
    flags: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["run", "--stream", "s", "--app", "a", "--handler", "tests.handlers:count_effect"]
    code = cli.main([*args, *flags])
    err = capsys.readouterr().err
    assert code == 2
    assert says in err
    assert len(err.strip().splitlines()) == 1

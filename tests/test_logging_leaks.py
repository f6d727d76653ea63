"""`kinesis-eo run --log-level DEBUG` writes neither credentials nor record payloads.

A real worker process runs against the moto server with a secret-looking
session token in its environment and reads a record with a recognisable
payload; its whole output is then searched for both, raw and in base64.
"""

from __future__ import annotations

import base64
import io
import logging
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kinesis_eo.logs import configure_logging
from kinesis_eo.producer import Event, Producer
from kinesis_eo.records import Record
from kinesis_eo.testing.backends import MotoServer
from tests.helpers import applied
from tests.streams import make_stream
from tests.test_cli_worker import create_tables, start_run, subprocess_env, unique_names
from tests.workers import wait_for

SESSION_TOKEN = "FwoGZXIvYXdzEXAMPLE-SECRET-session-token-9c1f3e7a2b6d4f80a1c2e3d4"
RunWorker = Callable[..., str]
PAYLOAD = b'{"card":"4111-PAYLOAD-MARKER-7f3a9d","note":"recognisable payload bytes"}'


def base64_fragments(payload: bytes) -> list[str]:
    """What base64 of any byte string that contains ``payload`` contains, per alignment."""
    fragments = []
    for skip in range(3):
        aligned = payload[skip:]
        aligned = aligned[: len(aligned) // 3 * 3]
        fragments.append(base64.b64encode(aligned).decode("ascii"))
    return fragments


def leaks(output: str) -> list[str]:
    found = []
    if SESSION_TOKEN in output:
        found.append("the session token")
    if PAYLOAD.decode() in output or "PAYLOAD-MARKER" in output:
        found.append("the payload")
    if any(fragment in output for fragment in base64_fragments(PAYLOAD)):
        found.append("the payload in base64")
    return found


@pytest.fixture
def worker_output(moto_server: MotoServer, tmp_path: Path) -> Iterator[RunWorker]:
    """Runs `kinesis-eo run --log-level DEBUG` plus extra flags until it applied the event."""
    processes: list[subprocess.Popen[bytes]] = []

    def run(*flags: str) -> str:
        names = unique_names("logleak")
        kinesis, dynamodb = moto_server.client("kinesis"), moto_server.client("dynamodb")
        make_stream(kinesis, names.stream, 1)
        create_tables(dynamodb, names)
        Producer(kinesis, names.stream).put([Event(PAYLOAD, "k", "leak-1")])
        env = subprocess_env(names)
        env["AWS_SESSION_TOKEN"] = SESSION_TOKEN
        log_path = tmp_path / f"{names.app}.log"
        process = start_run(
            moto_server,
            names,
            log_path,
            "--failover-seconds",
            "3",
            "--log-level",
            "DEBUG",
            *flags,
            env=env,
        )
        processes.append(process)

        def running() -> bool:
            assert process.poll() is None, log_path.read_text(errors="replace")
            return True

        wait_for(
            lambda: running() and applied(dynamodb, names.effects) == {"leak-1": 1},
            timeout=30,
            what="the worker to apply the event",
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log_path.read_text(errors="replace")
        return log_path.read_text(errors="replace")

    yield run
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_a_debug_run_logs_neither_the_session_token_nor_payloads(worker_output: RunWorker) -> None:
    output = worker_output()
    assert "starting on stream" in output, output
    assert leaks(output) == [], output[-5000:]
    # The SDK's wire loggers were not asked for, so they say nothing at DEBUG.
    assert " DEBUG botocore" not in output
    assert " DEBUG urllib3" not in output


def test_a_wire_logger_asked_for_by_name_logs_but_without_token_or_payloads(
    worker_output: RunWorker,
) -> None:
    output = worker_output("--debug-logger", "botocore", "--debug-logger", "urllib3")
    assert " DEBUG botocore" in output, output[-3000:]
    assert " DEBUG urllib3" in output, output[-3000:]
    assert leaks(output) == [], output[-5000:]


def test_log_payloads_shows_bodies_but_never_the_session_token(worker_output: RunWorker) -> None:
    output = worker_output("--debug-logger", "botocore", "--log-payloads")
    assert leaks(output) == ["the payload in base64"], output[-5000:]


def test_payload_arguments_of_a_log_call_print_as_their_size() -> None:
    stream = io.StringIO()
    handler = configure_logging("text", logging.DEBUG, stream)
    record = Record("orders", "shardId-000000000000", "7", "k", PAYLOAD)
    try:
        logging.getLogger("kinesis_eo.test").debug("record %s data %r", record, PAYLOAD)
    finally:
        logging.getLogger().removeHandler(handler)
    output = stream.getvalue()
    assert f"<{len(PAYLOAD)} bytes>" in output
    assert leaks(output) == [], output

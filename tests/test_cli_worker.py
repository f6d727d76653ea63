"""`kinesis-eo run`, `status` and `health` on the moto server, and the pieces behind them.

The server is shared by the session (and with in-process ``mock_aws``), so
every test names its own stream and tables.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kinesis_eo import cli, runner
from kinesis_eo.deadletter import create_dead_letter_table, read_dead_letters
from kinesis_eo.errors import ConfigurationError
from kinesis_eo.flow import run_sync
from kinesis_eo.leases import (
    DynamoDBLeaseStore,
    Lease,
    LeaseConfig,
    LeaseManager,
    create_lease_table,
)
from kinesis_eo.leases.model import is_entity_key
from kinesis_eo.ledger import DynamoDBLedgerStore, Ledger, LedgerConfig, create_ledger_table
from kinesis_eo.logs import JsonFormatter, configure_logging
from kinesis_eo.records import Position, Record
from kinesis_eo.retry import RetryConfig
from kinesis_eo.runner import RunOptions, load_handler
from kinesis_eo.sinks import TransactionalSink
from kinesis_eo.status import abbreviate_checkpoint, check_health, human_lag
from kinesis_eo.testing.backends import MotoServer
from kinesis_eo.testing.effects import create_effects_table, scan_table
from kinesis_eo.worker import Worker
from tests.handlers import EFFECTS_TABLE_ENV, count_effect
from tests.helpers import applied, produce
from tests.streams import make_stream
from tests.workers import CONFIG, QUICK, wait_for

REPO = Path(__file__).resolve().parents[1]
# The subprocess's failover time. The worker that takes over judges expiry
# with a far longer one, so a take within seconds can only come from a release.
SUBPROCESS_FAILOVER_S = 3.0
TAKER_LEASES_FAILOVER_S = 30.0


@dataclasses.dataclass(frozen=True)
class Names:
    stream: str
    app: str
    leases: str
    ledger: str
    effects: str


def unique_names(prefix: str) -> Names:
    app = f"{prefix}-{uuid.uuid4().hex[:8]}"
    return Names(app, app, f"{app}-leases", f"{app}-ledger", f"{app}-effects")


def create_tables(dynamodb: Any, names: Names) -> None:
    create_lease_table(dynamodb, names.leases)
    create_ledger_table(dynamodb, names.ledger)
    create_effects_table(dynamodb, names.effects)


def lease_owners(dynamodb: Any, table: str) -> Counter[str | None]:
    return Counter(
        i.get("leaseOwner", {}).get("S")
        for i in scan_table(dynamodb, table)
        if not is_entity_key(i["leaseKey"]["S"])
    )


def subprocess_env(names: Names) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_SESSION_TOKEN="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        # The server is on loopback: a proxy in the environment must not reroute it.
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        PYTHONUNBUFFERED="1",
    )
    env[EFFECTS_TABLE_ENV] = names.effects
    return env


def start_run(
    moto_server: MotoServer,
    names: Names,
    log_path: Path,
    *flags: str,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """`kinesis-eo run` of the test handler on ``names`` with ``flags``, output to ``log_path``."""
    command = [
        *(sys.executable, "-m", "kinesis_eo.cli", "run"),
        *("--stream", names.stream, "--app", names.app),
        *("--handler", "tests.handlers:count_effect"),
        *flags,
        *("--endpoint-url", moto_server.endpoint_url, "--region", "us-east-1"),
    ]
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command,
            cwd=REPO,
            env=subprocess_env(names) if env is None else env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    # `run` configures the root logger for a process; in a test it must not outlive the test.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def server_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """The moto server, for clients this process makes through ``cli.main``."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return moto_server


def taker(moto_server: MotoServer, names: Names, worker_id: str) -> Worker:
    """An in-process worker on the same tables, judging expiry over 30 s."""
    leases = LeaseConfig(
        names.leases, failover_s=TAKER_LEASES_FAILOVER_S, renew_interval_s=1.0, take_interval_s=0.25
    )
    ledger = Ledger(DynamoDBLedgerStore(names.ledger, QUICK), LedgerConfig(names.app))
    manager = LeaseManager(DynamoDBLeaseStore(names.leases), leases, worker_id)
    return Worker(
        moto_server.client("kinesis"),
        moto_server.client("dynamodb"),
        names.stream,
        TransactionalSink(ledger, count_effect),
        manager,
        dataclasses.replace(CONFIG, leases=leases),
    )


@pytest.fixture
def run_process(moto_server: MotoServer, tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Started `kinesis-eo run` processes, killed if a test leaves one running."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_sigterm_hands_every_lease_over_with_no_gap_and_no_duplicate(
    moto_server: MotoServer,
    run_process: list[subprocess.Popen[bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = unique_names("sigterm")
    kinesis, dynamodb = moto_server.client("kinesis"), moto_server.client("dynamodb")
    make_stream(kinesis, names.stream, 4)
    create_tables(dynamodb, names)
    ids = produce(kinesis, names.stream, 200)
    health_file = tmp_path / "health.json"
    log_path = tmp_path / "run.log"
    process = start_run(
        moto_server,
        names,
        log_path,
        "--failover-seconds",
        str(SUBPROCESS_FAILOVER_S),
        "--worker-id",
        "leaving",
        "--health-file",
        str(health_file),
        "--log-format",
        "json",
    )
    run_process.append(process)

    def logs() -> str:
        return log_path.read_text(errors="replace")

    def running() -> bool:
        assert process.poll() is None, f"kinesis-eo run exited early:\n{logs()}"
        return True

    monkeypatch.setenv(EFFECTS_TABLE_ENV, names.effects)
    staying = taker(moto_server, names, "staying")
    thread = threading.Thread(target=staying.run, name="staying")
    try:
        wait_for(
            lambda: running() and lease_owners(dynamodb, names.leases) == {"leaving": 4},
            timeout=30,
            what="the subprocess to own every lease",
        )
        wait_for(
            lambda: running() and len(applied(dynamodb, names.effects)) == 200,
            timeout=30,
            what="the subprocess to apply the first 200 effects",
        )
        assert check_health(str(health_file), max_age_s=5) is None

        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
        exit_s = time.monotonic() - signalled
        after_exit = scan_table(dynamodb, names.leases)
        assert code == 0, logs()
        assert exit_s < 10, f"took {exit_s:.1f} s to stop"
        # Released, not left to expire: no owner and no fencing token right after
        # exit, and the progress of each shard saved in its lease.
        assert [i.get("leaseOwner") for i in after_exit] == [None] * 4
        assert [i.get("eoOwnerToken") for i in after_exit] == [None] * 4
        assert all(i["checkpoint"]["S"].isdigit() for i in after_exit), after_exit

        thread.start()
        handed_over = wait_for(
            lambda: lease_owners(dynamodb, names.leases) == {"staying": 4},
            timeout=20,
            what="the in-process worker to take every lease",
        )
        ids += produce(kinesis, names.stream, 100, start=200)
        wait_for(
            lambda: len(applied(dynamodb, names.effects)) == 300,
            timeout=30,
            what="all 300 effects",
        )
    finally:
        staying.stop()
        if thread.is_alive():
            thread.join(timeout=30)

    print(f"SIGTERM to exit: {exit_s:.2f} s; release to the new owner: {handed_over:.2f} s")
    # No gap: taken far sooner than any failover time could have allowed.
    assert handed_over < SUBPROCESS_FAILOVER_S
    # No duplicate: the checkpoint written on the way out covered every applied record.
    assert applied(dynamodb, names.effects) == dict.fromkeys(ids, 1)
    assert staying.metrics.duplicates == 0
    assert staying.metrics.applied == 100
    # JSON log lines; the EMF metric documents on the same output are not log lines.
    documents = [json.loads(line) for line in logs().splitlines() if line.startswith("{")]
    lines = [line for line in documents if "_aws" not in line]
    stopped = [line for line in lines if "stopped" in line["message"]]
    assert stopped, logs()
    assert stopped[-1]["metrics"]["applied"] == 200
    assert stopped[-1]["worker_id"] == "leaving"

    # The health file stopped changing with the process: the health check notices.
    written = json.loads(health_file.read_text())["time"]
    time.sleep(max(0.0, written + 1.0 - time.time()))
    problem = check_health(str(health_file), max_age_s=1.0)
    assert problem is not None
    assert "ago" in problem


# --- status -------------------------------------------------------------------------------------

LONG_SEQUENCE = "49590338271490256608559692538361571095921575989136588898"


def test_status_prints_each_shards_owner_checkpoint_lag_and_state(
    server_env: MotoServer, capsys: pytest.CaptureFixture[str]
) -> None:
    names = unique_names("status")
    kinesis, dynamodb = server_env.client("kinesis"), server_env.client("dynamodb")
    make_stream(kinesis, names.stream, 2)
    create_lease_table(dynamodb, names.leases)
    store = DynamoDBLeaseStore(names.leases)
    leases = [
        Lease("shardId-000000000000"),
        Lease("shardId-000000000002", checkpoint="SHARD_END"),
        Lease("shardId-000000000005", checkpoint="LATEST"),
        Lease(
            "shardId-000000000009",
            parents=frozenset({"shardId-000000000002", "shardId-000000000005"}),
        ),
    ]
    for lease in leases:
        assert run_sync(store.create(lease), dynamodb, RetryConfig())
    # The owned shard as a worker leaves it: taken, then checkpointed with its lag.
    owner = LeaseManager(store, LeaseConfig(names.leases), "worker-a")
    assert run_sync(owner.take(leases[0]), dynamodb, RetryConfig()) is not None
    position = Position(LONG_SEQUENCE, 3)
    run_sync(owner.checkpoint("shardId-000000000000", position, 4200), dynamodb, RetryConfig())
    common = ["--app", names.app, "--endpoint-url", server_env.endpoint_url]

    assert cli.main(["status", *common, "--stream", names.stream]) == 0
    table = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in table[1:-1]}

    assert table[0].split() == ["SHARD", "OWNER", "CHECKPOINT", "LAG", "STATE", "PARENTS"]
    owned = rows["shardId-000000000000"].split()
    assert owned[:3] == ["shardId-000000000000", "worker-a", "4959...5989136588898/3"]
    assert "4.2 s" in rows["shardId-000000000000"]
    assert owned[-2:] == ["owned", "-"]
    assert "no lease yet" in rows["shardId-000000000001"]  # in the stream, no lease
    assert rows["shardId-000000000002"].split()[2] == "SHARD_END"
    assert "finished" in rows["shardId-000000000002"]
    assert rows["shardId-000000000005"].split()[1:3] == ["-", "LATEST"]
    assert "free" in rows["shardId-000000000005"]
    assert "waiting for parents" in rows["shardId-000000000009"]
    assert rows["shardId-000000000009"].endswith("shardId-000000000002,shardId-000000000005")
    assert table[-1].startswith("5 shard(s):")

    assert cli.main(["status", *common, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    shards = {s["shard_id"]: s for s in document["shards"]}
    assert set(shards) == {lease.shard_id for lease in leases}  # no --stream: leases only
    assert shards["shardId-000000000000"] == {
        "shard_id": "shardId-000000000000",
        "state": "owned",
        "owner": "worker-a",
        "checkpoint": LONG_SEQUENCE,
        "checkpoint_sub_sequence": 3,
        "millis_behind_latest": 4200,
        "lag": "4.2 s",
        "parents": [],
        "lease_counter": 1,
        "records_processed": None,  # checkpointed here without a count
    }
    assert shards["shardId-000000000009"]["state"] == "waiting for parents"
    assert document["lease_table"] == names.leases


def test_status_of_a_missing_lease_table_is_one_line_and_exit_2(
    server_env: MotoServer, capsys: pytest.CaptureFixture[str]
) -> None:
    app = unique_names("nostatus").app
    code = cli.main(["status", "--app", app, "--endpoint-url", server_env.endpoint_url])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert f"'{app}-leases' does not exist" in err


@pytest.mark.parametrize(
    ("millis", "text"),
    [
        (None, "-"),
        (0, "0 s"),
        (850, "850 ms"),
        (4_249, "4.2 s"),
        (184_000, "3 min 04 s"),
        (7_500_000, "2 h 05 min"),
        (97_200_000, "1 d 03 h"),
    ],
)
def test_lag_reads_in_the_largest_sensible_units(millis: int | None, text: str) -> None:
    assert human_lag(millis) == text


def test_checkpoints_keep_sentinels_and_short_numbers_and_shorten_long_ones_at_the_front() -> None:
    assert abbreviate_checkpoint("TRIM_HORIZON") == "TRIM_HORIZON"
    assert abbreviate_checkpoint("SHARD_END", 0) == "SHARD_END"
    assert abbreviate_checkpoint("17") == "17"
    assert abbreviate_checkpoint(None) == "-"
    short = abbreviate_checkpoint(LONG_SEQUENCE)
    assert short == "4959...5989136588898"
    assert len(short) == 20
    # Two checkpoints of one shard differ at the end, which stays visible.
    assert abbreviate_checkpoint(LONG_SEQUENCE[:-1] + "9") != short


# --- health -------------------------------------------------------------------------------------


def health(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(["health", *args])
    return code, capsys.readouterr().err


def test_health_passes_a_fresh_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "health.json"
    path.write_text(json.dumps({"worker": "w", "time": time.time() - 2, "leases": []}))
    assert health(["--file", str(path), "--max-age", "30"], capsys) == (0, "")


def test_health_fails_a_stale_file_with_its_age(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "health.json"
    path.write_text(json.dumps({"time": time.time() - 100}))
    code, err = health(["--file", str(path), "--max-age", "30"], capsys)
    assert code == 1
    assert err.count("\n") == 1
    assert "last reported 100 s ago (allowed: 30 s)" in err


def test_health_fails_a_missing_or_foreign_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = health(["--file", str(tmp_path / "none.json")], capsys)
    assert (code, err.count("\n")) == (1, 1)
    assert "no health file" in err
    foreign = tmp_path / "foreign.json"
    for text in ("not json", json.dumps({"time": "yesterday"}), "[]"):
        foreign.write_text(text)
        code, err = health(["--file", str(foreign)], capsys)
        assert (code, err.count("\n")) == (1, 1), text


def test_health_default_max_age_is_the_documented_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "health.json"
    path.write_text(json.dumps({"time": time.time() - cli.DEFAULT_HEALTH_MAX_AGE_S - 5}))
    assert health(["--file", str(path)], capsys)[0] == 1
    path.write_text(json.dumps({"time": time.time() - cli.DEFAULT_HEALTH_MAX_AGE_S + 5}))
    assert health(["--file", str(path)], capsys)[0] == 0


# --- run: what fails before any shard is touched ------------------------------------------------


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        ("tests.no_such_module:f", "handler module 'tests.no_such_module' was not found"),
        ("tests.handlers:missing", "handler module 'tests.handlers' has no 'missing'"),
        ("tests.handlers:NOT_A_FUNCTION", "is a int, not a function"),
        ("tests.handlers", "--handler must look like module:function"),
        ("tests.handlers:async_effect", "is async"),
    ],
)
def test_run_with_a_bad_handler_says_why_in_one_line_and_exits_2(
    handler: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # No endpoint: the handler is checked before any client is made or call sent.
    code = cli.main(["run", "--stream", "s", "--app", "a", "--handler", handler])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert err.startswith("kinesis-eo: error: ")
    assert message in err


def test_run_without_its_tables_names_the_missing_one_and_exits_2(
    server_env: MotoServer, capsys: pytest.CaptureFixture[str]
) -> None:
    names = unique_names("notables")
    make_stream(server_env.client("kinesis"), names.stream, 1)
    args = ["run", "--stream", names.stream, "--app", names.app]
    args += ["--handler", "tests.handlers:count_effect", "--endpoint-url", server_env.endpoint_url]
    code = cli.main(args)
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert err[-1] == (
        f"kinesis-eo: error: the lease table '{names.leases}' does not exist: "
        "deploy infra/worker.yaml or pass --create-tables"
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        # A lease renewed every 33 µs: a busy loop of writes, and leases that flap.
        (
            ["--failover-seconds", "0.0001"],
            "--failover-seconds 0.0001: failover_s must be at least 1 s",
        ),
        (["--failover-seconds", "-3"], "--failover-seconds -3: failover_s must be at least 1 s"),
        (["--handler-attempts", "0"], "--handler-attempts 0: max_attempts must be at least 1"),
        (
            ["--outage-max-backoff", "-1"],
            "--outage-max-backoff -1: outage_max_backoff_s must be a positive number",
        ),
        (
            ["--outage-max-backoff", "0.1"],
            "--outage-max-backoff 0.1: outage_max_backoff_s must be at least",
        ),
        (["--mark-ttl-hours", "0"], "--mark-ttl-hours 0: record_ttl must be positive"),
        (["--mark-ttl-hours", "nan"], "--mark-ttl-hours nan: "),
    ],
)
def test_run_refuses_a_setting_that_cannot_work_in_one_line_naming_the_flag(
    server_env: MotoServer, flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # No tables exist: the settings are judged before any AWS call.
    names = unique_names("badflag")
    args = ["run", "--stream", names.stream, "--app", names.app]
    args += ["--handler", "tests.handlers:count_effect", "--endpoint-url", server_env.endpoint_url]
    code = cli.main([*args, *flags])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert err.startswith(f"kinesis-eo: error: {message}"), err


def test_run_refuses_a_health_file_whose_folder_cannot_be_created(
    server_env: MotoServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    health = blocker / "sub" / "health.json"
    names = unique_names("health")
    args = ["run", "--stream", names.stream, "--app", names.app, "--health-file", str(health)]
    args += ["--handler", "tests.handlers:count_effect", "--endpoint-url", server_env.endpoint_url]
    code = cli.main(args)
    err = capsys.readouterr().err
    assert code == 2
    assert err == (
        f"kinesis-eo: error: --health-file '{health}' cannot be written: '{blocker}' is a "
        "file, so the folder cannot be created\n"
    )


def test_run_accepts_a_health_file_whose_folder_it_can_create(tmp_path: Path) -> None:
    # The worker makes the folder; only a folder that cannot be made is refused.
    options = RunOptions(
        stream="s", app="a", handler="h:f", health_file=str(tmp_path / "new" / "health.json")
    )
    runner.check_options(options)
    with pytest.raises(ConfigurationError, match="is a directory"):
        runner.check_options(dataclasses.replace(options, health_file=str(tmp_path)))


def test_run_refuses_marks_that_expire_before_the_streams_records(
    server_env: MotoServer, capsys: pytest.CaptureFixture[str]
) -> None:
    names = unique_names("markttl")
    kinesis, dynamodb = server_env.client("kinesis"), server_env.client("dynamodb")
    make_stream(kinesis, names.stream, 1)
    kinesis.increase_stream_retention_period(StreamName=names.stream, RetentionPeriodHours=168)
    create_tables(dynamodb, names)
    args = ["run", "--stream", names.stream, "--app", names.app, "--mode", "per-record"]
    args += ["--handler", "tests.handlers:count_effect", "--endpoint-url", server_env.endpoint_url]
    code = cli.main([*args, "--mark-ttl-hours", "100"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert err[-1] == (
        f"kinesis-eo: error: per-record marks expire after 100 h but stream '{names.stream}' "
        "keeps records for 168 h, so a replay of an older record would apply it twice: set "
        "--mark-ttl-hours to at least 192 h (the retention plus 24 h)"
    )


def test_handler_attempts_is_how_often_a_failing_record_is_tried_before_it_is_dead_lettered(
    dynamodb: Any,
) -> None:
    names = unique_names("attempts")
    create_ledger_table(dynamodb, names.ledger)
    create_dead_letter_table(dynamodb, f"{names.app}-dead")
    options = RunOptions(
        stream=names.stream,
        app=names.app,
        handler="h:f",
        dead_letter_table=f"{names.app}-dead",
        handler_attempts=5,
    )
    calls = []

    def failing(record: Record, ctx: Any) -> list[Any]:
        calls.append(ctx.attempt)
        raise ValueError("cannot apply")

    sink = runner.build_sink(options, failing, dynamodb)
    record = Record(names.stream, "shardId-000000000000", "1", "pk", b"payload")
    run_sync(sink.process([record]), dynamodb, RetryConfig())

    assert calls == [1, 2, 3, 4, 5]
    (letter,) = read_dead_letters(dynamodb, f"{names.app}-dead")
    assert letter.attempts == 5
    assert letter.record.data == b"payload"


def test_outage_max_backoff_reaches_the_worker() -> None:
    options = RunOptions(stream="s", app="a", handler="h:f", outage_max_backoff_s=2.5)
    worker = runner.build_worker(options, None, None, handler=count_effect)
    assert worker.config.outage_max_backoff_s == 2.5


def test_run_help_describes_the_new_flags_with_the_real_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from kinesis_eo.sinks import FailurePolicy
    from kinesis_eo.worker import WorkerConfig

    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    defaults = {f.name: f.default for f in dataclasses.fields(WorkerConfig)}
    attempts = FailurePolicy().max_attempts
    assert f"before it is dead-lettered; at least 1 (default: {attempts})" in help_text
    assert "with waits growing from 0.5 s up to SECONDS (default: 30)" in help_text
    assert defaults["outage_initial_backoff_s"] == 0.5
    assert defaults["outage_max_backoff_s"] == 30.0
    mark_ttl_h = LedgerConfig("g").record_ttl.total_seconds() / 3600
    assert "--mark-ttl-hours H --mode per-record: hours a ledger mark lives" in help_text
    assert f"(default: {mark_ttl_h:g}, raised to the retention plus 24 h" in help_text


def test_the_handler_module_is_found_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = f"eo_handler_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text("def handle(record, ctx):\n    return []\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert load_handler(f"{module}:handle").__name__ == "handle"


# --- logs ---------------------------------------------------------------------------------------


def test_json_logs_are_one_object_per_line_with_the_extra_fields() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream)
    configure_logging("json", "info", stream)  # again: still one line per record
    logger = logging.getLogger("kinesis_eo.test")
    logger.info("took %d leases", 3, extra={"worker_id": "w1", "shards": ["a", "b"]})
    logger.debug("not at INFO")
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        logger.exception("failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "took 3 leases"
    assert first["level"] == "INFO"
    assert first["logger"] == "kinesis_eo.test"
    assert (first["worker_id"], first["shards"]) == ("w1", ["a", "b"])
    assert first["time"].endswith("+00:00")
    assert "ValueError: boom" in second["exception"]


def test_json_logs_survive_extra_values_json_cannot_hold() -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "m", None, None)
    record.path = Path("/tmp/x")
    record.when = object()
    document = json.loads(JsonFormatter().format(record))
    assert document["path"] == "/tmp/x"
    assert document["when"].startswith("<object")


# --- the ECS template ---------------------------------------------------------------------------


def load_template(path: Path) -> dict[str, Any]:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return {suffix: loader.construct_scalar(node)}
        if isinstance(node, yaml.SequenceNode):
            return {suffix: loader.construct_sequence(node, deep=True)}
        return {suffix: loader.construct_mapping(node, deep=True)}

    Loader.add_multi_constructor("!", tagged)
    document: dict[str, Any] = yaml.load(path.read_text(), Loader=Loader)
    return document


@pytest.mark.parametrize("mark_ttl_hours", ["", "200"])
def test_the_worker_template_runs_commands_the_cli_accepts(mark_ttl_hours: str) -> None:
    # cfn-lint checks the template against CloudFormation; only this checks it against us.
    template = load_template(REPO / "infra" / "worker.yaml")
    parameters = template["Parameters"]
    placeholders = {
        "Handler": "module:function",
        "AWS::Region": "us-east-1",
        "MarkTtlHours": mark_ttl_hours,
    }
    no_value = object()

    def resolve(value: Any) -> Any:
        if isinstance(value, str):
            return value
        ((kind, body),) = value.items()
        if kind == "If":
            condition, then, otherwise = body
            return resolve(then if holds(template["Conditions"][condition]) else otherwise)
        if body == "AWS::NoValue":
            return no_value
        default = parameters.get(body, {}).get("Default")
        return str(placeholders.get(body, default if default is not None else body))

    def holds(condition: Any) -> bool:
        ((kind, body),) = condition.items()
        if kind == "Not":
            return not holds(body[0])
        assert kind == "Equals", f"the test reads Not and Equals conditions only, not {kind}"
        return bool(resolve(body[0]) == resolve(body[1]))

    def command(values: list[Any]) -> list[str]:
        return [v for v in map(resolve, values) if v is not no_value]

    (container,) = template["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    assert container["EntryPoint"] == ["kinesis-eo"]
    run_args = cli.build_parser().parse_args(command(container["Command"]))
    assert run_args.mark_ttl_hours == (float(mark_ttl_hours) if mark_ttl_hours else None)
    assert run_args.command is cli._cmd_run
    assert run_args.health_file is not None
    check = command(container["HealthCheck"]["Command"])
    assert check[:2] == ["CMD", "kinesis-eo"]
    health_args = cli.build_parser().parse_args(check[2:])
    assert health_args.command is cli._cmd_health
    assert health_args.file == run_args.health_file
    # The drain must fit before ECS sends SIGKILL.
    assert container["StopTimeout"] >= 120

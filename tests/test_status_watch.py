"""`kinesis-eo status --watch`: what changed per shard between two reads of the lease table."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import time
import uuid
from typing import Any

import pytest

from kinesis_eo import cli
from kinesis_eo.cli import status as status_cli
from kinesis_eo.flow import run_sync
from kinesis_eo.leases import DynamoDBLeaseStore, LeaseManager, create_lease_table
from kinesis_eo.ledger import DynamoDBLedgerStore, Ledger, LedgerConfig, create_ledger_table
from kinesis_eo.records import Record
from kinesis_eo.retry import RetryConfig
from kinesis_eo.sinks import EffectContext, TransactionalSink
from kinesis_eo.status import (
    ADVANCED,
    ENDED,
    FALLING,
    MOVED_BACK,
    NEW_LEASE,
    OWNED,
    RISING,
    STEADY,
    UNCHANGED,
    ShardChange,
    ShardStatus,
    format_watch_table,
    shard_changes,
)
from kinesis_eo.testing.backends import MotoServer
from kinesis_eo.worker import Worker
from tests.helpers import produce
from tests.streams import make_stream
from tests.workers import CONFIG, QUICK, start, stop, wait_for

SEQ_A = "49590338271490256608559692538361571095921575989136588898"
SEQ_B = "49590338271490256608559692538361571095921575989136599999"


def row(shard: str = "shardId-000000000000", **fields: Any) -> ShardStatus:
    return ShardStatus(shard, fields.pop("state", OWNED), **fields)


def change_of(before: ShardStatus | None, after: ShardStatus) -> ShardChange:
    (change,) = shard_changes([] if before is None else [before], [after])
    return change


# --- the pure comparison ------------------------------------------------------------------------


def test_a_checkpoint_that_moved_forward_is_advanced_and_its_lag_trend_is_judged() -> None:
    before = row(owner="w1", checkpoint=SEQ_A, millis_behind_latest=9000)
    falling = change_of(before, row(owner="w1", checkpoint=SEQ_B, millis_behind_latest=2000))
    rising = change_of(before, row(owner="w1", checkpoint=SEQ_B, millis_behind_latest=15000))
    steady = change_of(before, row(owner="w1", checkpoint=SEQ_B, millis_behind_latest=9800))

    assert (falling.progress, falling.lag_trend, falling.lag_change_ms) == (
        ADVANCED,
        FALLING,
        -7000,
    )
    assert (rising.lag_trend, rising.lag_change_ms) == (RISING, 6000)
    assert (steady.lag_trend, steady.lag_change_ms) == (STEADY, 800)
    assert not falling.owner_changed


def test_a_sub_sequence_step_inside_an_aggregate_is_progress_too() -> None:
    before = row(checkpoint=SEQ_A, checkpoint_sub_sequence=2)
    assert change_of(before, row(checkpoint=SEQ_A, checkpoint_sub_sequence=5)).progress == ADVANCED


def test_an_unchanged_checkpoint_carries_the_old_lag_report_so_no_trend_is_claimed() -> None:
    before = row(owner="w1", checkpoint=SEQ_A, millis_behind_latest=4000)
    change = change_of(before, row(owner="w1", checkpoint=SEQ_A, millis_behind_latest=4000))
    assert (change.progress, change.lag_trend, change.lag_change_ms) == (UNCHANGED, None, None)


def test_an_owner_change_is_reported_with_the_previous_owner() -> None:
    before = row(owner="w1", checkpoint=SEQ_A)
    taken = change_of(before, row(owner="w2", checkpoint=SEQ_A))
    released = change_of(before, row(owner=None, checkpoint=SEQ_A, state="free"))
    assert (taken.owner_changed, taken.previous_owner) == (True, "w1")
    assert (released.owner_changed, released.previous_owner) == (True, "w1")


def test_sentinels_new_leases_and_resets_are_named_for_what_they_are() -> None:
    assert change_of(row(checkpoint="TRIM_HORIZON"), row(checkpoint=SEQ_A)).progress == ADVANCED
    assert change_of(row(checkpoint=SEQ_B), row(checkpoint="SHARD_END")).progress == ENDED
    assert change_of(row(checkpoint=SEQ_B), row(checkpoint=SEQ_A)).progress == MOVED_BACK
    assert change_of(row(checkpoint=SEQ_A), row(checkpoint="TRIM_HORIZON")).progress == MOVED_BACK
    # Absent from the first read, or listed by the stream with no lease then.
    assert change_of(None, row(checkpoint="TRIM_HORIZON")).progress == NEW_LEASE
    assert change_of(row(checkpoint=None), row(checkpoint="LATEST")).progress == NEW_LEASE


def test_the_watch_table_shows_progress_trend_and_a_line_of_counts() -> None:
    before = [
        row(
            "shardId-0",
            owner="w1",
            checkpoint=SEQ_A,
            millis_behind_latest=9000,
            records_processed=100,
        ),
        row("shardId-1", owner="w1", checkpoint=SEQ_A),
    ]
    after = [
        row(
            "shardId-0",
            owner="w1",
            checkpoint=SEQ_B,
            millis_behind_latest=1500,
            records_processed=350,
        ),
        row("shardId-1", owner="w2", checkpoint=SEQ_A),
    ]
    lines = format_watch_table(after, shard_changes(before, after), 2.0).splitlines()
    first = format_watch_table(before, None, None).splitlines()

    assert lines[0].split() == [
        *("SHARD", "OWNER", "CHECKPOINT", "PROGRESS", "REC/S", "LAG", "TREND", "STATE"),
        "PARENTS",
    ]
    assert "advanced" in lines[1]
    assert lines[1].split()[4] == "125.0"  # 250 more records in 2.0 s
    assert lines[2].split()[7] == "-"  # no count on that lease: no rate, not a zero
    assert "falling -7.5 s" in lines[1]
    assert "unchanged; owner was w1" in lines[2]
    assert lines[-1] == "in the last 2.0 s: 1 checkpoint(s) advanced, 1 owner change(s)"
    assert first[1].split()[3] == "-"
    assert first[-1].startswith("2 shard(s):")


# --- the loop -----------------------------------------------------------------------------------


def test_ctrl_c_ends_a_watch_with_exit_0_after_what_was_shown() -> None:
    reads = iter([[row(checkpoint=SEQ_A)], [row(checkpoint=SEQ_B)]])
    shown: list[tuple[list[ShardChange] | None, float | None]] = []
    clock = iter([10.0, 12.5]).__next__

    def read() -> list[ShardStatus]:
        return next(reads)

    def interrupt_after_two(_: float) -> None:
        if len(shown) == 2:
            raise KeyboardInterrupt

    code = status_cli.watch(
        read,
        lambda rows, changes, elapsed: shown.append((changes, elapsed)),
        1.0,
        None,
        sleep=interrupt_after_two,
        clock=clock,
    )

    assert code == 0
    assert shown[0] == (None, None)
    changes, elapsed = shown[1]
    assert elapsed == 2.5
    assert changes is not None
    assert changes[0].progress == ADVANCED


def test_interval_and_count_without_watch_are_refused_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = cli.main(["status", "--app", "a", "--count", "2"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "kinesis-eo: error: --interval and --count apply only with --watch"
    ]


# --- against moto, with a worker consuming ------------------------------------------------------


@pytest.fixture
def server_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """The moto server, for clients this process makes through ``cli.main``."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return moto_server


def no_effect(record: Record, ctx: EffectContext) -> list[Any]:
    return []


def consuming_worker(server: MotoServer, app: str) -> Worker:
    leases = dataclasses.replace(CONFIG.leases, table_name=f"{app}-leases")
    ledger = Ledger(DynamoDBLedgerStore(f"{app}-ledger", QUICK), LedgerConfig(app))
    return Worker(
        server.client("kinesis"),
        server.client("dynamodb"),
        app,
        TransactionalSink(ledger, no_effect),
        LeaseManager(DynamoDBLeaseStore(f"{app}-leases"), leases, "worker-a"),
        dataclasses.replace(CONFIG, leases=leases),
    )


def test_watch_shows_a_consumed_shards_checkpoint_advancing_between_refreshes(
    server_env: MotoServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = f"watch-{uuid.uuid4().hex[:8]}"
    kinesis, dynamodb = server_env.client("kinesis"), server_env.client("dynamodb")
    make_stream(kinesis, app, 1)
    create_lease_table(dynamodb, f"{app}-leases")
    create_ledger_table(dynamodb, f"{app}-ledger")
    store = DynamoDBLeaseStore(f"{app}-leases")

    def checkpoint() -> str | None:
        leases = run_sync(store.list_leases(), dynamodb, RetryConfig())
        return leases[0].checkpoint if leases else None

    numbers = itertools.count(1000, 3)

    def produce_and_wait_for_the_checkpoint_to_move(interval_s: float) -> None:
        # Between the two reads the worker consumes new records and checkpoints them.
        time.sleep(interval_s)
        seen = checkpoint()
        produce(kinesis, app, 3, start=next(numbers))
        wait_for(lambda: checkpoint() != seen, 30, "the worker's next checkpoint")

    worker = consuming_worker(server_env, app)
    threads = start([worker])
    try:
        produce(kinesis, app, 5)
        wait_for(lambda: (checkpoint() or "").isdigit(), 30, "the worker's first checkpoint")
        monkeypatch.setattr(
            status_cli,
            "watch",
            functools.partial(status_cli.watch, sleep=produce_and_wait_for_the_checkpoint_to_move),
        )
        common = ["--app", app, "--endpoint-url", server_env.endpoint_url]
        watching = ["status", "--watch", "--count", "2", "--interval", "0.2", *common]

        assert cli.main([*watching, "--json"]) == 0
        refreshes = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

        assert cli.main(watching) == 0
        text = capsys.readouterr().out
    finally:
        stop([worker], threads)

    assert len(refreshes) == 2
    first, second = (refresh["shards"][0] for refresh in refreshes)
    assert first["change"] is None
    assert refreshes[0]["elapsed_s"] is None
    assert second["change"]["progress"] == ADVANCED
    assert int(second["checkpoint"]) > int(first["checkpoint"])
    assert second["owner"] == first["owner"] == "worker-a"
    assert second["change"]["owner_changed"] is False
    # The worker writes its running count with each checkpoint: the rate's numerator.
    assert 0 < second["change"]["records"] <= 3
    assert second["records_processed"] == first["records_processed"] + second["change"]["records"]
    assert refreshes[1]["elapsed_s"] >= 0.2
    # Not a terminal: no screen clearing, just one table after another.
    assert "\x1b" not in text
    tables = text.strip().split("\n\n")
    assert len(tables) == 2
    assert all(table.startswith("SHARD") for table in tables)
    assert "advanced" in tables[1].splitlines()[1]
    assert "checkpoint(s) advanced" in tables[1].splitlines()[-1]


def test_on_a_terminal_each_refresh_clears_the_screen_first(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = iter([[row(checkpoint=SEQ_A)], [row(checkpoint=SEQ_B)]])
    monkeypatch.setattr(
        status_cli,
        "watch",
        functools.partial(status_cli.watch, sleep=lambda _: None),
    )
    monkeypatch.setattr("kinesis_eo.status.shard_statuses", lambda leases, graph: next(reads))
    monkeypatch.setattr("kinesis_eo.flow.run_sync", lambda flow, clients, retry: flow.close() or [])
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)

    assert (
        cli.main(["status", "--app", "a", "--region", "us-east-1", "--watch", "--count", "2"]) == 0
    )
    out = capsys.readouterr().out
    assert out.count("\x1b[H\x1b[2J") == 2
    assert out.startswith("\x1b[H\x1b[2J")

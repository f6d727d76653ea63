"""A short seeded chaos run in every CI: kills, zombies, throttling, producer duplicates, poison,
invalid writes and a sink outage.

The long run (100,000 events, 4 workers, 50+ kills, a split and a merge) is
``kinesis-eo chaos`` as the README shows; this proves the same machinery on a
small scale, on both Kinesis back-ends.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from kinesis_eo.cli import main
from kinesis_eo.deadletter import DeadLetter, DeadLetterReason
from kinesis_eo.harness.chaos import Adapter, ChaosConfig, KinesisBackend, ReadMode, run_chaos
from kinesis_eo.harness.chaos_faults import (
    OUTAGE_TAG,
    InvalidWrite,
    invalid_write,
    invalid_write_kind,
    outage_letters,
)
from kinesis_eo.records import Record
from kinesis_eo.sinks import update
from kinesis_eo.tables import create_table, create_table_flow


def test_a_short_chaos_run_on_moto_loses_nothing_and_applies_nothing_twice() -> None:
    report = run_chaos(
        ChaosConfig(
            events=1500,
            workers=3,
            shards=4,
            seed=11,
            produce_s=12,
            kill_every_s=3,
            zombie_every_s=6,
            pause_in_handler_probability=0.002,
            throttle_probability=0.05,
            timeout_s=180,
        )
    )

    assert report.ok, report.to_json()
    assert report.produced == 1500
    assert report.dead_lettered == report.poison == 3
    assert report.effects == 1500 - report.poison
    # Every kind of fault really happened in this run.
    assert report.kills > 0
    assert report.zombies > 0
    assert report.throttles_injected > 0
    assert report.producer_duplicates > 0


def test_the_same_chaos_proves_the_lambda_handler_under_a_simulated_event_source_mapping() -> None:
    report = run_chaos(
        ChaosConfig(events=1200, shards=3, seed=13, produce_s=3, adapter=Adapter.LAMBDA)
    )

    assert report.ok, report.to_json()
    assert report.effects == 1200 - report.poison
    assert report.dead_lettered == report.poison > 0
    assert report.kills > 0  # invocations that died after their commits
    assert report.producer_duplicates > 0
    assert report.zombies == report.zombies_fenced > 0


@pytest.mark.kinesis_mock
def test_a_short_chaos_run_with_a_split_and_a_merge_on_kinesis_mock() -> None:
    report = run_chaos(
        ChaosConfig(
            events=1200,
            workers=3,
            shards=3,
            seed=12,
            kinesis=KinesisBackend.KINESIS_MOCK,
            produce_s=10,
            kill_every_s=4,
            zombie_every_s=8,
            timeout_s=180,
        )
    )

    assert report.ok, report.to_json()
    assert report.reshards == 2
    assert report.kills > 0
    assert report.effects == 1200 - report.poison


@pytest.mark.kinesis_mock
def test_a_short_chaos_run_reading_by_subscription_loses_nothing_and_applies_nothing_twice(
    tmp_path: Path,
) -> None:
    # As a user runs it, in a process of its own: --read efo alone picks kinesis-mock and the
    # bridge, and the bridge's sockets end with that process.
    report_path = tmp_path / "chaos.json"
    command = [
        sys.executable, "-m", "kinesis_eo.cli", "chaos", "--read", "efo",
        "--events", "800", "--workers", "3", "--shards", "3", "--seed", "14",
        "--produce-seconds", "16", "--kill-every", "3", "--zombie-every", "6",
        "--sever-every", "1", "--timeout", "150", "--report", str(report_path),
    ]  # fmt: skip
    # Faults (cuts included) land while events are produced; 16 s outlasts the cold start
    # (registering the consumer, the coordinator's first round, the first subscriptions).

    done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["ok"]
    assert report["missing"] == report["duplicated"] == 0
    assert report["effects"] == 800 - report["poison"]
    assert report["dead_lettered"] == report["poison"] > 0
    assert report["reshards"] == 2
    assert report["kills"] > 0
    assert report["zombies"] > 0
    assert report["producer_duplicates"] > 0
    # The workers read by subscription, through the bridge; GetRecords only checks the end of
    # a quiet shard (kinesis-mock sends no closing event with the children).
    assert report["read"] == "efo"
    assert "initial-response bridge" in report["emulator"]
    assert report["subscribe_calls"] >= 3
    # Their connections were cut mid-stream too, and each worker subscribed again.
    assert report["subscriptions_severed"] > 0


def test_the_chaos_command_writes_the_report_and_exits_zero_when_all_is_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report_path = tmp_path / "chaos.json"

    code = main(
        [
            "chaos",
            "--events", "400",
            "--workers", "2",
            "--shards", "2",
            "--seed", "4",
            "--produce-seconds", "4",
            "--kill-every", "2",
            "--zombie-every", "5",
            "--timeout", "120",
            "--report", str(report_path),
        ]
    )  # fmt: skip

    report = json.loads(report_path.read_text())
    assert code == 0
    assert {
        "produced", "effects", "missing", "duplicated", "dead_lettered", "kills",
        "zombies_fenced", "reshards", "throttles_injected", "producer_duplicates", "wall_s",
    } <= report.keys()  # fmt: skip
    assert report["produced"] == 400
    assert report["missing"] == report["duplicated"] == 0
    # Polling by default: the workers' own calls say so.
    assert report["read"] == "polling"
    assert report["get_records_calls"] > 0
    assert report["subscribe_calls"] == 0
    assert "exactly once" in capsys.readouterr().out


# --- record faults and world faults: invalid writes and a sink outage -------------------------


def test_invalid_writes_are_chosen_from_the_seed_and_the_event_id_alone() -> None:
    ids = [f"ev-5-{i:07d}" for i in range(20_000)]

    chosen = {i: invalid_write_kind(5, 0.02, i) for i in ids}
    again = {i: invalid_write_kind(5, 0.02, i) for i in reversed(ids)}
    other_seed = {i: invalid_write_kind(6, 0.02, i) for i in ids}

    assert chosen == again
    picked = {i for i, kind in chosen.items() if kind is not None}
    assert 300 < len(picked) < 500  # about 2 %
    assert {chosen[i] for i in picked} == set(InvalidWrite)
    assert picked != {i for i, kind in other_seed.items() if kind is not None}
    assert all(invalid_write_kind(5, 0.0, i) is None for i in ids[:1000])


@pytest.mark.parametrize("kind", list(InvalidWrite))
def test_each_kind_of_invalid_write_makes_dynamodb_refuse_the_transaction(
    dynamodb: Any, kind: InvalidWrite
) -> None:
    create_table(dynamodb, create_table_flow("effects", [("id", "HASH")]))
    valid = update("effects", {"id": "ev-1"}, "ADD applied :one", values={":one": 1})

    with pytest.raises(ClientError) as refused:
        dynamodb.transact_write_items(TransactItems=[valid, invalid_write(kind, "effects", "ev-2")])

    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert dynamodb.scan(TableName="effects")["Items"] == []


def _letter(event_id: str, reason: DeadLetterReason, error: str, at: datetime) -> DeadLetter:
    record = Record("s", "shardId-0", "49500", "pk", b"x", event_id=event_id)
    return DeadLetter(record, reason, error, 1, "chaos", at)


def test_letters_for_the_outage_are_found_and_those_of_poison_and_invalid_writes_are_not() -> None:
    start = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    end = start + timedelta(seconds=3)
    expected = {
        "poison": DeadLetterReason.PROCESSING_FAILED,
        "invalid": DeadLetterReason.INVALID_WRITE,
    }
    failed = DeadLetterReason.PROCESSING_FAILED
    letters = [
        _letter("poison", failed, "ValueError: poison", start + timedelta(seconds=1)),
        _letter("invalid", DeadLetterReason.INVALID_WRITE, "refused", end),
        # An ordinary event dead-lettered while the sink was down, or just after it.
        _letter("plain-1", failed, "ConnectionResetError", start + timedelta(seconds=2)),
        _letter("plain-2", failed, "ConnectionResetError", end + timedelta(seconds=4)),
        # The invalid write's event dead-lettered for another reason inside the window.
        _letter("invalid", failed, "TimeoutError", start),
        # The outage's own error, whenever it was written.
        _letter("late", failed, f"SinkUnavailableError: ({OUTAGE_TAG})", end + timedelta(hours=1)),
        # Outside the window and not the outage's: some other fault's, not this count's.
        _letter("plain-3", failed, "ValueError", end + timedelta(minutes=5)),
    ]

    assert outage_letters(letters, expected, (start, end)) == {
        "plain-1",
        "plain-2",
        "invalid",
        "late",
    }
    assert outage_letters(letters, expected, None) == {"late"}


def test_a_short_chaos_run_dead_letters_every_invalid_write_and_nothing_for_a_sink_outage() -> None:
    report = run_chaos(
        ChaosConfig(
            events=1000,
            workers=3,
            shards=3,
            seed=21,
            produce_s=8,
            kill_every_s=3,
            zombie_every_s=6,
            invalid_write_rate=0.02,
            sink_outage_s=3,
            timeout_s=150,
        )
    )

    assert report.ok, report.to_json()
    assert report.invalid_writes_injected > 10
    assert report.invalid_writes_dead_lettered == report.invalid_writes_injected
    assert report.invalid_writes_applied == 0
    assert report.outage_dead_lettered == 0
    assert report.outage_s >= 3
    assert report.outage_pauses > 0  # the outage really stopped shards
    assert report.missing == report.duplicated == 0
    assert report.effects == 1000 - report.poison - report.invalid_writes_injected
    assert report.dead_lettered == report.poison + report.invalid_writes_injected
    assert report.kills > 0


def test_the_chaos_command_proves_invalid_writes_and_an_outage_on_the_lambda_adapter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report_path = tmp_path / "chaos.json"

    code = main(
        [
            "chaos",
            "--adapter", "lambda",
            "--events", "600",
            "--shards", "2",
            "--seed", "8",
            "--produce-seconds", "2",
            "--invalid-writes", "0.02",
            "--sink-outage", "2",
            "--report", str(report_path),
        ]
    )  # fmt: skip

    report = json.loads(report_path.read_text())
    out = capsys.readouterr().out
    assert code == 0, out
    assert report["invalid_writes_injected"] > 0
    assert report["invalid_writes_dead_lettered"] == report["invalid_writes_injected"]
    assert report["outage_dead_lettered"] == 0
    assert report["outage_pauses"] > 0
    assert report["missing"] == report["duplicated"] == 0
    for figure in ("invalid writes injected", "invalid writes dead-lettered", "for the outage"):
        assert figure in out
    assert "exactly once" in out


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--invalid-writes", "1"), ("--invalid-writes", "x"), ("--sink-outage", "-1")],
)
def test_the_chaos_command_refuses_an_impossible_fault_setting_in_one_line(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["chaos", flag, value])

    assert exited.value.code == 2
    assert flag in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--read", "efo", "--kinesis", "moto"], "--kinesis kinesis-mock"),
        (["--read", "efo", "--adapter", "lambda"], "--adapter lambda"),
    ],
)
def test_the_chaos_command_refuses_to_read_by_subscription_where_nothing_can_subscribe(
    flags: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["chaos", *flags])

    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert "--read efo" in err
    assert named in err


def test_reading_by_subscription_needs_kinesis_mock_and_worker_processes() -> None:
    with pytest.raises(ValueError, match="kinesis-mock"):
        ChaosConfig(read=ReadMode.EFO)
    with pytest.raises(ValueError, match="workers"):
        ChaosConfig(read=ReadMode.EFO, kinesis=KinesisBackend.KINESIS_MOCK, adapter=Adapter.LAMBDA)

"""A short seeded chaos run in every CI: kills, zombies, throttling, producer duplicates, poison.

The long run (100,000 events, 4 workers, 50+ kills, a split and a merge) is
``kinesis-eo chaos`` as the README shows; this proves the same machinery on a
small scale, on both Kinesis back-ends.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kinesis_eo.cli import main
from kinesis_eo.testing.chaos import Adapter, ChaosConfig, KinesisBackend, run_chaos


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
    assert "exactly once" in capsys.readouterr().out

"""bench/efo.py in a small configuration: both ways of reading, each event applied once, no timings.

Runs the bench as a user does (a subprocess) on kinesis-mock behind the bridge; the figures
it prints are not asserted, only that each way of reading read as it says and the sink holds
every event once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "efo.py"
BACKLOG = 200
RATE = 40
SECONDS = 2


@pytest.mark.kinesis_mock
def test_the_efo_bench_reads_by_polling_then_by_subscription_and_applies_each_event_once(
    tmp_path: Path,
) -> None:
    report_path = tmp_path / "efo.json"
    command = [
        sys.executable, str(BENCH),
        "--records", str(BACKLOG), "--shards", "2",
        "--rate", str(RATE), "--seconds", str(SECONDS),
        "--timeout", "60", "--report", str(report_path),
    ]  # fmt: skip

    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)

    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert "kinesis-mock" in report["emulator"]
    polling, efo = report["reads"]
    assert (polling["read"], efo["read"]) == ("polling", "efo")
    # Each read as it says: polling never subscribes; the subscription does, per shard.
    assert polling["calls"]["GetRecords"] > 0
    assert polling["calls"]["SubscribeToShard"] == 0
    assert efo["calls"]["SubscribeToShard"] >= 2
    assert efo["calls"]["GetRecords"] == 0
    paced = RATE * SECONDS
    for result in (polling, efo):
        assert result["ok"]
        assert result["sink"] == {"items": BACKLOG + paced, "missing": 0, "applied_twice": 0}
        assert result["backlog"] == BACKLOG
        assert result["records_per_s"] > 0
        assert result["latency_events"] == paced
        latency = result["latency_ms"]
        assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
    out = done.stdout
    assert "records/s" in out
    assert "p99 ms" in out

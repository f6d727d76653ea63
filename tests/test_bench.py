"""bench/run.py in its smallest configuration: the report's shape and sane counts, no timings.

Runs the bench as a user does (a subprocess), without the Powertools case, so
that the test needs nothing beyond the test extras: every kinesis_eo case, the
naive baseline and the read-only baseline, a tiny stock-moto run, and the
in-memory CPU measurement.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[1] / "bench" / "run.py"
RECORDS = 80
SHARDS = 2
CASES = ["read_only", "watermark", "per_record", "claim", "naive"]
REQUIRED = {
    "name",
    "rps_first",
    "rps_replay",
    "ddb_calls_per_record",
    "kinesis_calls_per_record",
    "cpu_s",
    "peak_rss_mb",
    "ratio_vs_powertools",
}


def run_bench(tmp_path: Path) -> tuple[dict[str, Any], str]:
    report = tmp_path / "out.json"
    command = [
        sys.executable,
        str(BENCH),
        "--records",
        str(RECORDS),
        "--shards",
        str(SHARDS),
        "--cases",
        ",".join(CASES),
        "--stock-records",
        "30",
        "--report",
        str(report),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(report.read_text()), done.stdout


def test_the_smallest_bench_run_reports_every_case_with_each_record_applied_once(
    tmp_path: Path,
) -> None:
    report, out = run_bench(tmp_path)

    assert "undo-log TransactWriteItems" in report["emulator"]
    assert report["main"]["records"] == RECORDS
    assert report["main"]["shards"] == SHARDS
    names = [c["name"] for c in report["cases"]]
    assert names == CASES[1:]
    for case in report["cases"]:
        assert case.keys() >= REQUIRED
        assert case["ok"], case["problems"]
        assert case["ratio_vs_powertools"] is None  # no Powertools in this run
        assert case["rps_first"] > 0
        assert case["rps_replay"] > 0
        assert case["cpu_s"] > 0
        assert case["peak_rss_mb"] > 0
        first, replay, sink = case["first"], case["replay"], case["sink"]
        # Every record delivered on both passes, applied on the first, a duplicate on the replay.
        assert first["delivered"] == replay["delivered"] == RECORDS
        assert (first["applied"], first["duplicates"]) == (RECORDS, 0)
        assert (replay["applied"], replay["duplicates"]) == (0, RECORDS)
        # The sink table holds each event once, applied once.
        assert sink == {"items": RECORDS, "missing": 0, "applied_twice": 0, "extra": 0}
        # Reading is the same loop for every case: a GetRecords per batch, and a few more.
        assert 0 < case["kinesis_calls_per_record"] < 0.2
    by_name = {c["name"]: c for c in report["cases"]}
    # One transaction per chunk: far under one DynamoDB call per record.
    assert by_name["watermark"]["ddb_calls_per_record"] < 0.2
    # A replay reads the watermark once per shard: it runs no handler and sends no transaction.
    replay = by_name["watermark"]["replay"]
    assert replay["handler_calls"] == 0
    assert "dynamodb:TransactWriteItems" not in replay["calls"]
    assert replay["calls"]["dynamodb:BatchGetItem"] == SHARDS
    assert by_name["per_record"]["ddb_calls_per_record"] < 0.3
    # Claim (PutItem), the handler's own write, complete (UpdateItem): three per record.
    assert 2.9 < by_name["claim"]["ddb_calls_per_record"] < 3.2
    assert by_name["claim"]["first"]["sink_calls"] == RECORDS
    # The naive ledger: a PutItem and a sink write per record, a checkpoint per batch.
    assert 2.0 <= by_name["naive"]["ddb_calls_per_record"] < 2.3

    read_only = report["main"]["read_only"]
    assert read_only["first"]["delivered"] == RECORDS
    assert read_only["ddb_calls_per_record"] == 0

    stock = report["stock"]
    assert "stock TransactWriteItems" in stock["emulator"]
    assert [c["name"] for c in stock["cases"]] == ["watermark", "per_record"]
    assert all(c["ok"] for c in stock["cases"])

    cpu = report["cpu_us_per_record"]
    for name in ("watermark", "per_record", "idempotent_key_watermark", "claim"):
        assert cpu[name] > 0
        assert cpu[f"{name}_replay"] > 0

    targets = {t["target"]: t for t in report["targets"]}
    assert any("DynamoDB calls beyond" in t for t in targets)
    assert any("toolkit CPU" in t for t in targets)
    assert any("replay" in t for t in targets)
    assert report["load_before"]
    assert report["load_after"]
    assert "targets:" in out
    assert "watermark" in out

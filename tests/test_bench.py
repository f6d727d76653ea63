"""bench/run.py in its smallest configuration: the report's shape and sane counts, no timings.

Runs the bench as a user does (a subprocess), without the Powertools case, so
that the test needs nothing beyond the test extras: every kinesis_eo case, the
naive baseline and the read-only baseline, a tiny stock-moto run, and the
in-memory CPU measurement.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "run.py"
RECORDS = 80
SHARDS = 2
CASES = [
    "read_only",
    "watermark",
    "watermark_worker",
    "per_record",
    "keyed_watermark",
    "keyed_watermark_lanes",
    "claim",
    "naive",
]
# The cases the client CPU measurement and the latency model cover.
MODELLED = ["watermark", "per_record", "keyed_watermark", "claim", "naive"]
UNIT_FIELDS = ("write_units_per_record", "read_units_per_record", "usd_per_million_records")
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
        "--client-cpu-records",
        "200",
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
    # The Worker on its defaults reads ahead: the same replay, without a handler or transaction.
    worker_replay = by_name["watermark_worker"]["replay"]
    assert worker_replay["handler_calls"] == 0
    assert "dynamodb:TransactWriteItems" not in worker_replay["calls"]
    # Lanes: the handler's own write once per record, whichever lane ran it.
    assert by_name["keyed_watermark_lanes"]["first"]["sink_calls"] == RECORDS
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

    # Capacity units from the requests sent: a sink write per record, plus each case's marks.
    for case in report["cases"]:
        assert all(isinstance(case[f], float) for f in UNIT_FIELDS), case["name"]
    units = {c["name"]: c["write_units_per_record"] * RECORDS for c in report["cases"]}
    # Every kinesis_eo case saves one checkpoint per shard (1 unit each) at the end.
    # 80 records over 2 shards: one transaction per shard's batch of 40, two units an item.
    assert units["watermark"] == pytest.approx(2 * (RECORDS + SHARDS) + SHARDS)
    # The handler's own write per record, one watermark write per batch.
    assert units["keyed_watermark"] == pytest.approx(RECORDS + SHARDS + SHARDS)
    # A mark and a sink write per record, both transactional.
    assert units["per_record"] == pytest.approx(4 * RECORDS + SHARDS)
    # Claim, write, complete.
    assert units["claim"] == pytest.approx(3 * RECORDS + SHARDS)
    # A ledger put and a sink write per record, and a checkpoint per batch.
    assert 2 * RECORDS < units["naive"] < 2 * RECORDS + 10
    for case in report["cases"]:
        price = 0.625 * case["write_units_per_record"] + 0.125 * case["read_units_per_record"]
        assert case["usd_per_million_records"] == pytest.approx(price, abs=1e-3)

    # Client CPU with botocore, on boto3's clients and on the CLI's, for every case run.
    cpu = report["client_cpu"]
    assert set(cpu["kinesis_eo_run_clients"]) == {"read_only", *MODELLED}
    assert all(v > 0 for v in cpu["boto3_default_clients"].values())
    # Split into the read side (the read-only case's CPU) and the commit side.
    for name in MODELLED:
        split = cpu["split"][name]
        assert split["read_us"] + split["commit_us"] == pytest.approx(cpu["used"][name], abs=0.2)
        assert split["commit_us"] > 0
    assert cpu["split"]["watermark"]["read_ahead"] is True
    assert cpu["split"]["naive"]["read_ahead"] is False

    # The latency model: every case, its ceiling, and the shards one core serves.
    model = report["latency_model"]
    rows = model["cases"]
    assert set(MODELLED) <= set(rows)
    for label, row in rows.items():
        assert row["rps_per_shard"] > 0, label
        assert 0 < row["ceiling_fraction"] <= 1, label
        assert row["ratio_vs_powertools"] is None  # no Powertools in this run
    assert rows["watermark"]["saturated_shards_per_core"] > 0
    # Three round trips per record cap the claim case below a fifth of a write's 200/s.
    assert rows["claim"]["ceiling_rps_per_shard"] == pytest.approx(1000 / 15, abs=0.1)
    # Read-ahead (the worker's default) hides the read: never slower than without it.
    assert rows["watermark"]["variant"] == {"read_ahead": True}
    assert rows["watermark, no read-ahead"]["variant"] == {"read_ahead": False}
    assert rows["watermark"]["rps_per_shard"] >= rows["watermark, no read-ahead"]["rps_per_shard"]
    assert rows["keyed_watermark + lanes"]["variant"] == {"read_ahead": True, "lanes": 16}
    # The model's calls per record are the ones the case made, give or take checkpoints.
    for name in MODELLED:
        row = rows[name]
        assert row["model_calls_per_record"] <= row["measured_calls_per_record"] + 1e-9
        assert row["measured_calls_per_record"] - row["model_calls_per_record"] < 0.08, name
    wu_targets = [t for t in report["targets"] if "write units per record" in t["target"]]
    assert len(wu_targets) == 2
    assert "PASS" in out or "FAIL" in out


# --- units: the arithmetic on known requests -------------------------------------------------


@pytest.fixture
def bench_modules() -> Iterator[Any]:
    sys.path.insert(0, str(BENCH.parent))
    try:
        yield importlib.import_module("_units"), importlib.import_module("_cpu")
    finally:
        sys.path.remove(str(BENCH.parent))


def test_a_2_5_kb_item_costs_3_write_units_and_6_in_a_transaction(bench_modules: Any) -> None:
    units, cpu = bench_modules
    endpoint = cpu.CannedEndpoint(1, 1, 1)
    _, dynamodb = cpu.canned_clients(endpoint, product=False)
    meter = units.UnitMeter()
    meter.attach(dynamodb)
    # pk (2 + 5 bytes) + body (4 + 2,553 bytes): 2,564 bytes, 2.5 KB.
    item = {"pk": {"S": "item1"}, "body": {"S": "x" * 2553}}
    assert units.item_size(item) == 2564

    dynamodb.put_item(TableName="t", Item=item)
    assert meter.units.write == 3

    meter.reset()
    dynamodb.transact_write_items(TransactItems=[{"Put": {"TableName": "t", "Item": item}}])
    assert meter.units.write == 6

    # An update is charged on the item after it (the meter saw it written): 2.5 KB again.
    meter.reset()
    dynamodb.update_item(
        TableName="t",
        Key={"pk": {"S": "item1"}},
        UpdateExpression="SET n = :n",
        ExpressionAttributeValues={":n": {"N": "1"}},
    )
    assert meter.units.write == 3


def test_reads_cost_4_kb_units_strongly_consistent_and_half_eventually(bench_modules: Any) -> None:
    units, _ = bench_modules
    assert units.read_units(3500, consistent=True) == 1
    assert units.read_units(8192, consistent=True) == 2
    assert units.read_units(8192, consistent=False) == 1
    assert units.read_units(10 * 1024, consistent=True) == 3
    assert units.read_units(0, consistent=False) == 0.5
    assert units.write_units(1024) == 1
    assert units.write_units(1025) == 2
    assert units.write_units(1025, transactional=True) == 4


def test_the_latency_model_plot_draws_every_case(bench_modules: Any, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    sys.path.insert(0, str(BENCH.parent))
    try:
        latency = importlib.import_module("_latency")
    finally:
        sys.path.remove(str(BENCH.parent))
    cpu = {
        name: latency.Cpu(read, commit)
        for name, read, commit in (
            ("watermark", 15.0, 35.0),
            ("keyed_watermark", 15.0, 285.0),
            ("powertools", 20.0, 1180.0),
        )
    }
    model = latency.model(cpu, 1000, {})
    path = tmp_path / "model.png"

    latency.plot(model, str(path))

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_real_time_check_runs_the_worker_to_every_record_and_reports_it(
    tmp_path: Path,
) -> None:
    report = tmp_path / "check.json"
    command = [
        sys.executable,
        str(BENCH.with_name("latency_check.py")),
        *("--records", "2500", "--batch", "500", "--repeat", "1"),
        *("--cases", "watermark_worker,watermark_worker_no_read_ahead"),
        *("--report", str(report)),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    # The check fails itself unless the worker came through every record.
    assert done.returncode == 0, done.stdout + done.stderr
    found = json.loads(report.read_text())
    assert set(found["cases"]) == {"watermark_worker", "watermark_worker_no_read_ahead"}
    for name, row in found["cases"].items():
        measured = ("rps_per_shard", "client_cpu_us_per_record", "ceiling_fraction")
        assert all(row[field] > 0 for field in measured), name
        assert row["model_rps_for_this_cpu"] > 0, name
        assert name in done.stdout

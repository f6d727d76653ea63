"""The bench's figures on AWS's shape: client CPU, capacity units, the latency model, targets.

bench/run.py measures each case on moto; this part adds what moto cannot show:
the client's CPU per record against an endpoint that answers at once
(bench/_cpu.py), the capacity units each case's requests cost and their price
(bench/_units.py), and records/s per shard with AWS-like latencies
(bench/_latency.py). The targets are checked here and printed PASS/FAIL.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _cpu import CPU_CASES
from _latency import READS_AHEAD, Cpu, split_cpu
from _latency import model as latency_model
from _units import PRICES_AS_OF, USD_PER_MILLION_READ_UNITS, USD_PER_MILLION_WRITE_UNITS

TARGET_CLIENT_CPU_US_PER_RECORD = 60.0  # botocore included, watermark path, 10,000 records
TARGET_KEYED_WATERMARK_WU = 1.02
TARGET_WATERMARK_WU = 2.04
TARGET_MODEL_WATERMARK_VS_POWERTOOLS = 60.0
TARGET_MODEL_LANES_VS_POWERTOOLS = 20.0
TARGET_CEILING_FRACTION = 0.85
TARGET_SATURATED_SHARDS_PER_PROCESS = 16
# kinesis_eo's cases run on clients made as ``kinesis-eo run`` makes them (no client-side
# parameter validation, epoch timestamps parsed straight to UTC); the peers on boto3's
# defaults, as they ship.
PEERS = ("powertools", "naive")

Log = Callable[..., None]


def client_cpu(names: list[str], records: int, shards: int, batch: int, log: Log) -> dict[str, Any]:
    """Client CPU µs per record, botocore included, on both kinds of clients."""
    picked = tuple(n for n in CPU_CASES if n in names)
    log(f"client CPU, botocore included ({records:,} records, canned endpoint) ... ", end="")
    # Each case and kind of client in a child process of its own: a fresh heap, as a
    # worker's, not one grown by the bench's moto runs or by the cases measured before.
    measured: dict[str, dict[str, float]] = {"boto3": {}, "kinesis-eo-run": {}}
    for clients, results in measured.items():
        for name in picked:
            command = [
                sys.executable,
                str(Path(__file__).with_name("_cpu.py")),
                *("--records", str(records), "--shards", str(shards), "--batch", str(batch)),
                *("--cases", name, "--clients", clients),
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            results.update(json.loads(done.stdout))
    defaults, product = measured["boto3"], measured["kinesis-eo-run"]
    log("done")
    used = {n: (defaults[n] if n in PEERS else product[n]) for n in picked}
    # The read side of every case is the read-only case's CPU on the same kind of clients:
    # the same reading loop, GetRecords parsed and its records decoded; the rest is the
    # commit side (handlers, the sink's own calls, checkpoints).
    read_side = {
        n: (defaults if n in PEERS else product).get("read_only", 0.0)
        for n in picked
        if n != "read_only"
    }
    split = split_cpu(used, read_side)
    return {
        "records": records,
        "endpoint": "botocore before-send hook with canned responses: requests built, "
        "serialized, signed and parsed as for AWS; no socket",
        "boto3_default_clients": defaults,
        "kinesis_eo_run_clients": product,
        "used": used,
        "split": {
            n: {"read_us": c.read_us, "commit_us": c.commit_us, "read_ahead": n in READS_AHEAD}
            for n, c in split.items()
        },
    }


def add_latency_model(report: dict[str, Any]) -> None:
    cpu = report.get("client_cpu")
    if not cpu:
        report["latency_model"] = None
        return
    measured = {c["name"]: c["ddb_calls_per_record"] for c in report["main"]["cases"]}
    main = report["main"]
    run_batch = min(main["batch"], main["records"] // main["shards"])
    split = {n: Cpu(c["read_us"], c["commit_us"]) for n, c in cpu["split"].items()}
    report["latency_model"] = latency_model(split, main["batch"], measured, run_batch)
    report["prices"] = {
        "usd_per_million_write_units": USD_PER_MILLION_WRITE_UNITS,
        "usd_per_million_read_units": USD_PER_MILLION_READ_UNITS,
        "as_of": PRICES_AS_OF,
    }


def _target(text: str, measured: str, met: bool | None) -> dict[str, Any]:
    return {"target": text, "measured": measured, "met": met}


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets on AWS's shape: client CPU, units per record, the latency model."""
    found: list[dict[str, Any]] = []
    by_name = {c["name"]: c for c in report["main"]["cases"]}
    cpu = report.get("client_cpu")
    if cpu and "watermark" in cpu["kinesis_eo_run_clients"]:
        after = cpu["kinesis_eo_run_clients"]["watermark"]
        before = cpu["boto3_default_clients"]["watermark"]
        found.append(
            _target(
                f"client CPU, watermark path, botocore included <= "
                f"{TARGET_CLIENT_CPU_US_PER_RECORD:.0f} µs per record "
                f"(at {cpu['records']:,} records; the target is set at 10,000)",
                f"{after:.1f} µs on the CLI's clients ({before:.1f} µs on boto3's defaults)",
                after <= TARGET_CLIENT_CPU_US_PER_RECORD,
            )
        )
    for name, limit in (
        ("keyed_watermark", TARGET_KEYED_WATERMARK_WU),
        ("watermark", TARGET_WATERMARK_WU),
    ):
        case = by_name.get(name)
        if case is not None and case.get("write_units_per_record") is not None:
            wu = case["write_units_per_record"]
            found.append(
                _target(
                    f"{name} write units per record <= {limit} (items under 1 KB)",
                    f"{wu:.4f} WU",
                    wu <= limit,
                )
            )
    model = report.get("latency_model")
    rows = model["cases"] if model else {}
    for label, limit, how in (
        ("watermark", TARGET_MODEL_WATERMARK_VS_POWERTOOLS, "the worker's defaults: read-ahead"),
        ("keyed_watermark + lanes", TARGET_MODEL_LANES_VS_POWERTOOLS, "--lanes 16, read-ahead"),
    ):
        row = rows.get(label)
        if row is not None and row["ratio_vs_powertools"] is not None:
            ratio = row["ratio_vs_powertools"]
            found.append(
                _target(
                    f"latency model: {label} ({how}) >= {limit:.0f}x Powertools per shard",
                    f"{ratio:.1f}x ({row['rps_per_shard']:,.0f} rec/s)",
                    ratio >= limit,
                )
            )
    if rows:
        # A kinesis_eo case with its read-ahead turned off is printed to show what read-ahead
        # gains; it is not how the case runs, and its ceiling does not count its reads.
        compared = {
            k
            for k, r in rows.items()
            if r["case"] in READS_AHEAD and not r["variant"]["read_ahead"]
        }
        short = {k: r["ceiling_fraction"] for k, r in rows.items() if k not in compared}
        missed = [k for k, f in short.items() if f < TARGET_CEILING_FRACTION]
        found.append(
            _target(
                f"latency model: every case >= {TARGET_CEILING_FRACTION:.2f} of its own ceiling",
                ", ".join(f"{k} {f:.2f}" for k, f in short.items())
                + (f"; under: {', '.join(missed)}" if missed else "")
                + "".join(
                    f"; for comparison, not a target: {k} {rows[k]['ceiling_fraction']:.2f}"
                    for k in sorted(compared)
                ),
                not missed,
            )
        )
    wm = rows.get("watermark")
    if wm is not None and wm["saturated_shards_per_core"]:
        shards = wm["saturated_shards_per_core"]
        found.append(
            _target(
                f"one process keeps up with >= {TARGET_SATURATED_SHARDS_PER_PROCESS} saturated "
                "shards (watermark, 1,000 rec/s each, client CPU both sides on one core)",
                f"{shards:.1f} shards",
                shards >= TARGET_SATURATED_SHARDS_PER_PROCESS,
            )
        )
    return found


def print_sections(report: dict[str, Any], log: Log) -> None:
    cases = report["main"]["cases"]
    if cases and cases[0].get("write_units_per_record") is not None:
        log()
        log(
            f"capacity units per record from the requests sent, and their on-demand price "
            f"(${USD_PER_MILLION_WRITE_UNITS}/M WRU, ${USD_PER_MILLION_READ_UNITS}/M RRU, "
            f"{PRICES_AS_OF}):"
        )
        log(f"  {'case':<18} {'WU/rec':>8} {'RU/rec':>8} {'$/M rec':>8}   replay: WU, RU, $")
        for c in cases:
            log(
                f"  {c['name']:<18} {c['write_units_per_record']:>8.4f} "
                f"{c['read_units_per_record']:>8.4f} {c['usd_per_million_records']:>8.3f}"
                f"   {c['write_units_per_record_replay']:.4f}, "
                f"{c['read_units_per_record_replay']:.4f}, "
                f"{c['usd_per_million_records_replay']:.3f}"
            )
    cpu = report.get("client_cpu")
    if cpu:
        log()
        log(
            f"client CPU per record, botocore included ({cpu['records']:,} records, "
            "canned endpoint), µs:"
        )
        log(
            f"  {'case':<18} {'boto3 defaults':>15} {'kinesis-eo run':>15}"
            f" {'read side':>10} {'commit side':>12}"
        )
        split = cpu.get("split", {})
        for name, value in cpu["boto3_default_clients"].items():
            sides = split.get(name)
            log(
                f"  {name:<18} {value:>15.1f} {cpu['kinesis_eo_run_clients'][name]:>15.1f}"
                + (f" {sides['read_us']:>10.1f} {sides['commit_us']:>12.1f}" if sides else "")
            )
    model = report.get("latency_model")
    if model:
        log()
        log(f"latency model ({model['sources']}; batch {model['batch']}):")
        log(
            f"  {'case':<26} {'read-ahead':>10} {'rec/s/shard':>11} {'vs PT':>6} {'ceiling':>8} "
            f"{'of ceil':>7} {'commit µs':>9} {'shards/core':>11} {'calls/rec model':>15} "
            f"{'moto':>7}"
        )
        for label, row in model["cases"].items():
            ratio = row["ratio_vs_powertools"]
            measured = row["measured_calls_per_record"]
            ahead = "yes" if row["variant"]["read_ahead"] else "no"
            log(
                f"  {label:<26} {ahead:>10} {row['rps_per_shard']:>11,.0f} "
                f"{'—' if ratio is None else f'{ratio:.1f}x':>6} "
                f"{row['ceiling_rps_per_shard']:>8,.0f} {row['ceiling_fraction']:>7.2f} "
                f"{row['commit_cpu_us_per_record']:>9.1f} "
                f"{row['saturated_shards_per_core'] or 0:>11.1f} "
                f"{row['model_calls_per_record']:>15.4f} "
                f"{'—' if measured is None else f'{measured:.4f}':>7}"
            )

"""The latency model checked in real time: the product run where every call waits its latency.

bench/_latency.py models records/s per shard on a simulated clock, from each
case's calls and its client CPU measured apart (bench/_cpu.py). This runs the
product itself, in real time, against the canned endpoint of bench/_cpu.py
made to sleep each call's modelled latency (``LATENCY_MS``) before it answers,
as a socket would: the GIL is free meanwhile, the threads (read-ahead, the
lease keeper, lanes) run as they would against AWS, and their contention for
the GIL, which the model does not count, is in the figure.

- ``watermark_worker``: the watermark case on :class:`Worker`'s defaults
  (read-ahead), reading as ``kinesis-eo run`` reads (AWS's 0.2 s between a
  busy shard's ``GetRecords``). Leases live in the product's
  :class:`MemoryLeaseStore`, whose fence is given here in DynamoDB's form so
  that each transaction carries the same items as in production; lease calls
  are off a shard's path and cost nothing here. Measured from the first commit
  to the last, past the cold start.
- ``watermark_worker_no_read_ahead``: the same with ``read_ahead=False``.
- ``powertools``: the bench's Powertools case, for the ratio.

It prints records/s per shard, the fraction of the case's ceiling, the
client CPU per record in this run, and what the model gives for that CPU.
``python bench/latency_check.py --records 20000`` takes about a minute.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

from _cases import CASES, Env, WorkerWatermarkCase
from _cpu import STREAM, CannedEndpoint, canned_clients
from _latency import PLANS, Cpu, latency_s, rps_per_shard

from kinesis_eo.cli.run import fewer_collections
from kinesis_eo.consumer import ConsumerStats
from kinesis_eo.leases import LeaseStore
from kinesis_eo.leases.store import MemoryLeaseStore
from kinesis_eo.retrieval import ReaderConfig
from kinesis_eo.sinks import condition_check

LEASE_TABLE = "latency-check-leases"


class SlowEndpoint(CannedEndpoint):
    """The canned endpoint, answering each call after its modelled latency."""

    def _answer(self, request: Any, **kwargs: Any) -> Any:
        operation = self.operation(request)
        if operation == "TransactWriteItems":
            time.sleep(latency_s(operation, len(json.loads(request.body)["TransactItems"])))
        elif operation in ("GetRecords", "PutItem", "UpdateItem", "GetItem"):
            time.sleep(latency_s(operation))
        elif operation == "BatchGetItem":
            keys = json.loads(request.body)["RequestItems"]
            time.sleep(latency_s(operation, sum(len(t["Keys"]) for t in keys.values())))
        return super()._answer(request, **kwargs)


class PacedEnv(Env):
    def reader_config(self) -> ReaderConfig:
        # As the worker reads on AWS: a busy shard's reads 0.2 s apart (the default).
        return ReaderConfig(max_records=self.batch, idle_interval_s=0.0)


class DynamoDBFencedLeases(MemoryLeaseStore):
    """The product's in-memory leases, with the fence in DynamoDB's form (one more item)."""

    def fence(self, shard_id: str, owner: str, token: str) -> Any:
        return condition_check(
            LEASE_TABLE, {"leaseKey": shard_id}, "leaseOwner = :o", values={":o": owner}
        )


@dataclass
class Steady:
    """Records and time from a pass's first commit to its last."""

    first_at: float = 0.0
    first_records: int = 0
    last_at: float = 0.0
    records: int = 0
    cpu_at_first: float = 0.0
    cpu_at_last: float = 0.0

    def commit(self, count: int) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        if not self.first_at:
            self.first_at, self.first_records, self.cpu_at_first = now, count, cpu
        self.last_at, self.cpu_at_last = now, cpu
        self.records += count

    def rps(self) -> float:
        return (self.records - self.first_records) / (self.last_at - self.first_at)

    def cpu_us(self) -> float:
        return (self.cpu_at_last - self.cpu_at_first) / (self.records - self.first_records) * 1e6


class CheckedWorker(WorkerWatermarkCase):
    """The bench's `Worker` case on in-memory leases, timed from its first commit to its last."""

    def setup(self) -> None:
        pass

    def lease_table(self, number: int) -> str:
        return LEASE_TABLE

    def lease_store(self, table: str) -> LeaseStore:
        return DynamoDBFencedLeases()

    def committed(self, records: int) -> None:
        self.steady.commit(records)

    def run_pass(self, number: int) -> ConsumerStats:
        self.steady = Steady()
        return super().run_pass(number)


class CheckedWorkerNoReadAhead(CheckedWorker):
    read_ahead = False


def _run(case: Any, records: int) -> dict[str, float]:
    gc.collect()
    started, cpu = time.perf_counter(), time.process_time()
    stats = case.run_pass(1)
    if stats.delivered < records:
        raise AssertionError(f"{case.name}: {stats.delivered} delivered of {records}")
    steady = getattr(case, "steady", None)
    if steady is not None:
        return {"rps": steady.rps(), "cpu_us": steady.cpu_us()}
    return {
        "rps": records / (time.perf_counter() - started),
        "cpu_us": (time.process_time() - cpu) / records * 1e6,
    }


CHECKED: dict[str, type] = {
    "watermark_worker": CheckedWorker,
    "watermark_worker_no_read_ahead": CheckedWorkerNoReadAhead,
    "powertools": CASES["powertools"][0],
}


def _one_case(name: str, count: int, batch: int, repeat: int) -> dict[str, float]:
    endpoint = SlowEndpoint(count, 1, batch)
    # kinesis_eo on clients as ``kinesis-eo run`` makes them, the peer on boto3's defaults.
    kinesis, dynamodb = canned_clients(endpoint, product=name != "powertools")
    env = PacedEnv(kinesis, dynamodb, STREAM, count, batch)
    cls = CASES["read_only"][0] if name == "read_only" else CHECKED[name]
    case = cls(name, name, env)
    if name == "powertools":
        case.stream_arn = f"arn:aws:kinesis:us-east-1:123456789012:stream/{STREAM}"
    runs = [_run(case, count) for _ in range(repeat)]
    best = max(runs, key=lambda r: r["rps"])
    return {**best, "runs": [r["rps"] for r in runs]}


def check(
    names: list[str], records: int, peer_records: int, batch: int, repeat: int
) -> dict[str, Any]:
    """Each case's records/s per shard in real time, its fraction of the ceiling, its CPU,
    and the model's records/s for that CPU (the read side: the read-only case's CPU)."""
    read_us = _one_case("read_only", records, batch, 1)["cpu_us"]
    cases: dict[str, Any] = {}
    for name in names:
        peer = name == "powertools"
        best = _one_case(name, peer_records if peer else records, batch, repeat)
        plan = "powertools" if peer else "watermark"
        model = None
        if not peer:
            cpu = Cpu(read_us, max(best["cpu_us"] - read_us, 0.0))
            model = rps_per_shard(plan, batch, cpu, read_ahead=name == "watermark_worker")
        cases[name] = {
            "rps_per_shard": round(best["rps"], 1),
            "ceiling_fraction": round(best["rps"] * PLANS[plan].ceiling_s_per_record, 3),
            "client_cpu_us_per_record": round(best["cpu_us"], 1),
            "model_rps_for_this_cpu": None if model is None else round(model, 1),
            "runs_rps": [round(r, 1) for r in best["runs"]],
            "ratio_vs_powertools": None,
        }
    if "powertools" in cases:
        for row in cases.values():
            row["ratio_vs_powertools"] = round(
                row["rps_per_shard"] / cases["powertools"]["rps_per_shard"], 1
            )
    return {"batch": batch, "read_cpu_us_per_record": round(read_us, 1), "cases": cases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--peer-records", type=int, default=400, help="records for Powertools")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=2, help="runs per case; the best counts")
    parser.add_argument("--cases", default=",".join(CHECKED), help=f"from {','.join(CHECKED)}")
    parser.add_argument("--report", help="write the results as JSON here")
    args = parser.parse_args()
    names = [n for n in args.cases.split(",") if n]
    unknown = sorted(set(names) - set(CHECKED))
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CHECKED)}")
    fewer_collections()  # as ``kinesis-eo run`` sets up its process
    results = check(names, args.records, args.peer_records, args.batch, args.repeat)
    print(f"the latency model checked in real time (one shard, batch {args.batch}):")
    print(f"  {'case':<32} {'rec/s':>7} {'of ceil':>7} {'vs PT':>6} {'CPU µs':>7} {'model':>7}")
    for name, row in results["cases"].items():
        model, ratio = row["model_rps_for_this_cpu"], row["ratio_vs_powertools"]
        print(
            f"  {name:<32} {row['rps_per_shard']:>7,.0f} {row['ceiling_fraction']:>7.3f} "
            f"{'—' if ratio is None else f'{ratio:.1f}x':>6} "
            f"{row['client_cpu_us_per_record']:>7.1f} "
            f"{'—' if model is None else f'{model:,.0f}':>7}"
        )
    if args.report:
        with open(args.report, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    sys.exit(main())

"""A latency model: each case's records/s per shard on AWS's shape, on a simulated clock.

The emulator answers in its own time (moto's CPU), which says little about
AWS, where a call costs a round trip whatever its size and a 100-item
transaction does not take 100 times as long as a write. So each case is also
run here as the sequence of calls it makes per batch (its *plan*), every call
costing the latency in :data:`LATENCY_MS`, plus the client CPU per record
measured against the canned endpoint (bench/_cpu.py). The clock is simulated:
nothing sleeps, a whole sweep takes milliseconds.

Each plan is checked against the calls the case really made in the moto run
(``model_calls_per_record`` beside ``measured_calls_per_record`` in the
report), so the model follows the code, not a wish.

One shard is read by one loop: GetRecords, then the batch's calls one after the
other. A busy shard's GetRecords start ``min_read_interval_s`` (0.2 s, AWS's 5
reads/s per shard) apart, as the reader paces them. A process
serves many shards at once (a thread each), so their waits overlap and only
their CPU adds up: one core serves ``1e6 / cpu_us`` records/s, i.e. that many
shards at AWS's 1,000 records/s write limit per shard.

The worker reads ahead by default (kinesis_eo/read_ahead.py): while batch *n*
is applied and committed, the read of batch *n + 1* runs beside it, and the
next loop starts when both are done; the checkpoint, when due, follows. The
model does exactly that for kinesis_eo's cases. Client CPU is split in two
(bench/_cpu.py): the read side (botocore parsing GetRecords, decoding, building
``Record``s), which runs in the read-ahead while the commit waits on its round
trips, and the commit side (handlers, building, sending and parsing the
transactions), which is on the shard's sequential path. Both sides share one
core, so a batch never takes less than both sides' CPU. Without read-ahead
(``--no-read-ahead``, and the peers, which read and then process) a batch costs
the read, all its CPU and its calls, one after the other.

Variants name what is opt-in: *lanes* run the handler's own writes for
different keys of a shard concurrently (``--lanes 16``), as per-key ordering
allows; and the watermark path without read-ahead, for comparison.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Modelled latency of one call, in ms: (fixed, per item). AWS publishes no
# per-call figures for these; they are assumptions in line with AWS's
# "single-digit millisecond" for DynamoDB item operations (the DynamoDB
# developer guide's introduction), transactions doing two underlying writes per
# item (prepare and commit, the developer guide on transactions' capacity), and
# GetRecords returning up to 10 MB per call. Change them here; the report
# carries the table it used.
LATENCY_MS: dict[str, tuple[float, float]] = {
    "GetRecords": (20.0, 0.0),
    "PutItem": (5.0, 0.0),
    "UpdateItem": (5.0, 0.0),
    "GetItem": (5.0, 0.0),
    "BatchGetItem": (5.0, 0.02),
    "TransactWriteItems": (10.0, 0.1),
}
LATENCY_SOURCES = (
    "assumptions: DynamoDB item writes and reads 5 ms (AWS: 'single-digit millisecond'); "
    "TransactWriteItems 10 ms + 0.1 ms per item (two phases: prepare, commit); "
    "BatchGetItem 5 ms + 0.02 ms per key; GetRecords 20 ms"
)
GET_RECORDS_PER_SECOND = 5  # per shard (Kinesis Data Streams quota)
SHARD_WRITE_LIMIT = 1000  # records/s a shard takes in (Kinesis quota)
CHECKPOINT_INTERVAL_S = 5.0
TRANSACTION_ITEMS = 100
PAGES_AT_ONCE = 16  # a screening read's pages read at once (kinesis_eo/ledger/store.py)
LANES = 16
BATCH_SIZES = (10, 25, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


def latency_s(operation: str, items: int = 1) -> float:
    fixed, per_item = LATENCY_MS[operation]
    return (fixed + per_item * items) / 1000


# --- plans: the calls a case makes for one batch of ``b`` records on one shard --------------------

Call = tuple[str, int]  # (operation, items)


@dataclass(frozen=True)
class Plan:
    """How a case spends one batch: calls once per batch, and calls per record."""

    name: str
    per_batch: Callable[[int], list[Call]]
    per_record: tuple[Call, ...] = ()
    # Calls made at once before the batch's others (a screening read's pages), PAGES_AT_ONCE
    # at a time: they cost the slowest of each round.
    at_once: Callable[[int], list[Call]] = lambda b: []
    checkpoints: bool = True
    # The sequential round trips no implementation of this case can avoid, per record.
    ceiling_s_per_record: float = 0.0


def _transactions(records: int, per_transaction: int, extra: int) -> list[Call]:
    full, rest = divmod(records, per_transaction)
    calls = [("TransactWriteItems", per_transaction + extra)] * full
    if rest:
        calls.append(("TransactWriteItems", rest + extra))
    return calls


def _screen(records: int) -> list[Call]:
    return [("BatchGetItem", min(100, records - i)) for i in range(0, records, 100)]


# One slot of every transaction stays free for the lease's fencing check; the
# watermark takes one more: 98 records per transaction, each one sink write.
WATERMARK_PER_TX = TRANSACTION_ITEMS - 2
# Per-record: a mark and a sink write per record, one slot free: 49 records.
PER_RECORD_PER_TX = (TRANSACTION_ITEMS - 1) // 2

PLANS: dict[str, Plan] = {
    "watermark": Plan(
        "watermark",
        lambda b: _transactions(b, WATERMARK_PER_TX, 1),
        ceiling_s_per_record=latency_s("TransactWriteItems", TRANSACTION_ITEMS) / WATERMARK_PER_TX,
    ),
    "per_record": Plan(
        "per_record",
        # Transactions of a mark and a write per record, after a screening read of the batch.
        lambda b: [("TransactWriteItems", 2 * n) for n in _sizes(b, PER_RECORD_PER_TX)],
        at_once=_screen,
        ceiling_s_per_record=latency_s("TransactWriteItems", 2 * PER_RECORD_PER_TX)
        / PER_RECORD_PER_TX,
    ),
    "keyed_watermark": Plan(
        "keyed_watermark",
        lambda b: [("UpdateItem", 1)],
        per_record=(("UpdateItem", 1),),
        ceiling_s_per_record=latency_s("UpdateItem"),
    ),
    "claim": Plan(
        "claim",
        lambda b: [],
        at_once=_screen,
        per_record=(("PutItem", 1), ("UpdateItem", 1), ("UpdateItem", 1)),
        ceiling_s_per_record=latency_s("PutItem") + 2 * latency_s("UpdateItem"),
    ),
    "powertools": Plan(
        "powertools",
        lambda b: [],
        per_record=(("PutItem", 1), ("UpdateItem", 1), ("UpdateItem", 1)),
        checkpoints=False,
        ceiling_s_per_record=latency_s("PutItem") + 2 * latency_s("UpdateItem"),
    ),
    "naive": Plan(
        "naive",
        lambda b: [("UpdateItem", 1)],  # its checkpoint, every batch
        per_record=(("PutItem", 1), ("UpdateItem", 1)),
        checkpoints=False,
        ceiling_s_per_record=latency_s("PutItem") + latency_s("UpdateItem"),
    ),
}


def _sizes(records: int, per_call: int) -> list[int]:
    full, rest = divmod(records, per_call)
    return [per_call] * full + ([rest] if rest else [])


def calls_per_record(name: str, batch: int) -> float:
    """DynamoDB calls per record of a plan at this batch size (checkpoints left out)."""
    plan = PLANS[name]
    calls = len(plan.at_once(batch)) + len(plan.per_batch(batch))
    return (calls + batch * len(plan.per_record)) / batch


# --- the simulated clock ------------------------------------------------------------------------

MIN_READ_INTERVAL_S = 1 / GET_RECORDS_PER_SECOND  # between a busy shard's reads' starts


@dataclass(frozen=True)
class Cpu:
    """Client CPU µs per record: the read side and the commit side (handlers included)."""

    read_us: float
    commit_us: float

    @property
    def total_us(self) -> float:
        return self.read_us + self.commit_us


def _process_s(plan: Plan, size: int, cpu_s: float, lanes: int) -> float:
    """The batch's calls and the commit side's CPU, one after the other (lanes overlap waits)."""
    process = sum(latency_s(op, n) for op, n in plan.per_batch(size))
    together = plan.at_once(size)
    for first in range(0, len(together), PAGES_AT_ONCE):
        process += max(latency_s(op, n) for op, n in together[first : first + PAGES_AT_ONCE])
    per_record_wait = sum(latency_s(op, n) for op, n in plan.per_record)
    if lanes > 1 and plan.per_record:
        # ``lanes`` records in flight; their waits overlap, their CPU does not.
        return process + size * max(cpu_s, (per_record_wait + cpu_s) / lanes)
    return process + size * (per_record_wait + cpu_s)


def shard_seconds(
    name: str,
    records: int,
    batch: int,
    cpu: Cpu,
    *,
    read_ahead: bool = False,
    lanes: int = 1,
) -> float:
    """Simulated seconds one shard's loop takes for ``records`` records."""
    plan = PLANS[name]
    read, read_cpu, commit_cpu = latency_s("GetRecords"), cpu.read_us / 1e6, cpu.commit_us / 1e6
    sizes = _sizes(records, batch)
    # The first batch is read before anything else happens.
    clock = read + sizes[0] * read_cpu
    read_ready = MIN_READ_INTERVAL_S
    last_checkpoint = 0.0
    for index, size in enumerate(sizes):
        if not read_ahead:
            if index:
                read_start = max(clock, read_ready)
                clock = read_start + read + size * read_cpu
                read_ready = read_start + MIN_READ_INTERVAL_S
            clock += _process_s(plan, size, commit_cpu, lanes)
        else:
            started = clock
            clock += _process_s(plan, size, commit_cpu, lanes)
            if index + 1 < len(sizes):
                following = sizes[index + 1]
                read_start = max(started, read_ready)
                read_done = read_start + read + following * read_cpu
                read_ready = read_start + MIN_READ_INTERVAL_S
                # Both sides share one core: the batch takes at least their CPU together.
                both_cpu = started + size * commit_cpu + following * read_cpu
                clock = max(clock, read_done, both_cpu)
        if plan.checkpoints and clock - last_checkpoint >= CHECKPOINT_INTERVAL_S:
            clock += latency_s("UpdateItem")
            last_checkpoint = clock
    return clock


def rps_per_shard(name: str, batch: int, cpu: Cpu, **variant: Any) -> float:
    records = max(batch * 20, 20_000)
    return records / shard_seconds(name, records, batch, cpu, **variant)


@dataclass(frozen=True)
class Variant:
    """A way of running a case: read-ahead on or off, and lanes."""

    label: str
    case: str
    read_ahead: bool
    lanes: int = 1


# What the worker does by default: kinesis_eo's cases read ahead; the peers read, then process.
READS_AHEAD = frozenset({"watermark", "per_record", "keyed_watermark", "claim"})

VARIANTS = (
    Variant("watermark, no read-ahead", "watermark", read_ahead=False),
    Variant("keyed_watermark + lanes", "keyed_watermark", read_ahead=True, lanes=LANES),
    Variant("claim + lanes", "claim", read_ahead=True, lanes=LANES),
)


def _entries(cpu: dict[str, Cpu]) -> list[Variant]:
    rows = [Variant(name, name, name in READS_AHEAD) for name in PLANS if name in cpu]
    return rows + [v for v in VARIANTS if v.case in cpu]


def split_cpu(total_us: dict[str, float], read_us: dict[str, float]) -> dict[str, Cpu]:
    """Each case's CPU split into read and commit sides; ``read_us`` per case (or absent: 0)."""
    split = {}
    for name, total in total_us.items():
        if name == "read_only":
            continue
        read = min(read_us.get(name, 0.0), total)
        split[name] = Cpu(round(read, 1), round(total - read, 1))
    return split


def model(
    cpu: dict[str, Cpu],
    batch: int,
    measured: dict[str, float],
    run_batch: int | None = None,
) -> dict[str, Any]:
    """The ``latency_model`` section of the report.

    ``cpu``: client CPU per record per case, read and commit sides (canned
    endpoint); ``measured``: DynamoDB calls per record each case made in the
    moto run, whose batches held ``run_batch`` records (fewer than ``batch``
    when a shard held fewer), to check the plans against.
    """
    run_batch = run_batch or batch
    rows: dict[str, dict[str, Any]] = {}
    for entry in _entries(cpu):
        case, split = entry.case, cpu[entry.case]
        rps = rps_per_shard(case, batch, split, read_ahead=entry.read_ahead, lanes=entry.lanes)
        plan = PLANS[case]
        ceiling_per_record = plan.ceiling_s_per_record
        if entry.lanes > 1 and plan.per_record:
            ceiling_per_record /= entry.lanes
        # A process's core pays both sides' CPU, whichever overlaps a wait.
        per_core = 1e6 / split.total_us if split.total_us else None
        variant: dict[str, Any] = {"read_ahead": entry.read_ahead}
        if entry.lanes > 1:
            variant["lanes"] = entry.lanes
        rows[entry.label] = {
            "case": case,
            "variant": variant,
            "rps_per_shard": round(rps, 1),
            "rps_per_process": round(per_core, 1) if per_core else None,
            "ceiling_rps_per_shard": round(1 / ceiling_per_record, 1),
            "ceiling_fraction": round(rps * ceiling_per_record, 3),
            "saturated_shards_per_core": round(per_core / SHARD_WRITE_LIMIT, 1)
            if per_core
            else None,
            "client_cpu_us_per_record": split.total_us,
            "read_cpu_us_per_record": split.read_us,
            "commit_cpu_us_per_record": split.commit_us,
            "model_calls_per_record": round(calls_per_record(case, run_batch), 4),
            "measured_calls_per_record": measured.get(case),
            "ratio_vs_powertools": None,
        }
    peer = rows.get("powertools")
    for row in rows.values():
        if peer is not None:
            row["ratio_vs_powertools"] = round(row["rps_per_shard"] / peer["rps_per_shard"], 1)
    return {
        "latency_ms": {op: {"fixed": f, "per_item": p} for op, (f, p) in LATENCY_MS.items()},
        "sources": LATENCY_SOURCES,
        "get_records_per_second_per_shard": GET_RECORDS_PER_SECOND,
        "batch": batch,
        "run_batch": run_batch,
        "lanes": LANES,
        "cases": rows,
        "sweep": sweep(cpu),
    }


def sweep(cpu: dict[str, Cpu]) -> dict[str, dict[int, float]]:
    """Records/s per shard of every case and variant at each of :data:`BATCH_SIZES`."""
    return {
        entry.label: {
            b: round(
                rps_per_shard(
                    entry.case, b, cpu[entry.case], read_ahead=entry.read_ahead, lanes=entry.lanes
                ),
                1,
            )
            for b in BATCH_SIZES
        }
        for entry in _entries(cpu)
    }


def plot(latency_model: dict[str, Any], path: str) -> None:
    """Records/s per shard against batch size, one line per case (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 6))
    for label, line in latency_model["sweep"].items():
        points = {int(b): v for b, v in line.items()}  # a report read back has string keys
        sizes = sorted(points)
        axes.plot(sizes, [points[b] for b in sizes], marker="o", label=label)
    axes.axhline(SHARD_WRITE_LIMIT, color="grey", linestyle=":", label="a shard's write limit")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("records per GetRecords (batch size)")
    axes.set_ylabel("records/s per shard (latency model)")
    axes.set_title("kinesis_eo beside Powertools and a naive consumer, modelled on AWS latencies")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)

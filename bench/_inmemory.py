"""The toolkit's own CPU per record: in-memory ledger, in-memory sink, records built in memory.

No HTTP, no emulator, no botocore: what is left is kinesis_eo's work per
record (screening, contexts, chunking, marks, the commit's bookkeeping) plus a
handler that does next to nothing. The handler's own cost is measured alone
and subtracted, so the figure is the toolkit's.

Each sink processes the same batches twice, as the moto cases do: a first
pass, and a replay by a fresh :class:`Ledger` object over the same store (a
restarted process). The garbage collector is off while timing, as in ``timeit``.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from typing import Any

from _cases import payload

from kinesis_eo.flow import run_sync
from kinesis_eo.ledger import Ledger, LedgerConfig, LedgerMode, MemoryLedgerStore, MemoryWrite
from kinesis_eo.records import Record
from kinesis_eo.retry import RetryConfig
from kinesis_eo.sinks import ClaimSink, EffectContext, IdempotentKeySink, TransactionalSink

# AWS hands out 56-digit sequence numbers; moto's "1", "2", ... would flatter the key formatting.
_SEQUENCE_BASE = 49_650_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000


def build_batches(records: int, shards: int, batch: int) -> list[list[Record]]:
    """``records`` records spread over ``shards`` shards, cut into per-shard batches."""
    per_shard: list[list[Record]] = [[] for _ in range(shards)]
    for index in range(records):
        event_id, data = payload(index)
        shard = index % shards
        sequence = _SEQUENCE_BASE + index * 1_000_003
        per_shard[shard].append(
            Record(
                stream="bench",
                shard_id=f"shardId-{shard:012d}",
                sequence_number=str(sequence),
                partition_key=f"pk-{index}",
                data=data,
                event_id=event_id,
            )
        )
    return [rs[i : i + batch] for rs in per_shard for i in range(0, len(rs), batch)]


class _Effects:
    """The in-memory sink: event id -> times applied."""

    def __init__(self) -> None:
        self.applied: dict[str, int] = {}

    def add(self, key: str) -> None:
        self.applied[key] = self.applied.get(key, 0) + 1

    def write(self, record: Record) -> MemoryWrite:
        key = str(record.event_id)
        return MemoryWrite(apply=lambda: self.add(key), item=key)


def _sinks(effects: _Effects) -> dict[str, Callable[[Ledger], Any]]:
    def transactional(record: Record, ctx: EffectContext) -> list[MemoryWrite]:
        return [effects.write(record)]

    def direct(record: Record, ctx: EffectContext) -> None:
        effects.add(str(record.event_id))

    return {
        "watermark": lambda ledger: TransactionalSink(ledger, transactional),
        "per_record": lambda ledger: TransactionalSink(ledger, transactional),
        "idempotent_key_watermark": lambda ledger: IdempotentKeySink(ledger, direct),
        "claim": lambda ledger: ClaimSink(ledger, direct),
    }


_MODES = {
    "watermark": LedgerMode.WATERMARK,
    "per_record": LedgerMode.PER_RECORD,
    "idempotent_key_watermark": LedgerMode.WATERMARK,
    "claim": LedgerMode.PER_RECORD,
}


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """The cyclic garbage collector off while timing, as ``timeit`` does.

    Its cost depends on everything else the process holds, not on the toolkit.
    """
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _handler_only_cpu(batches: list[list[Record]]) -> float:
    """CPU of the handler alone (building one MemoryWrite per record), per record, in µs."""
    effects = _Effects()
    count = sum(len(b) for b in batches)
    with _no_gc():
        started = time.process_time()
        for batch in batches:
            for record in batch:
                effects.write(record).apply()
        return (time.process_time() - started) / count * 1e6


def _one_run(name: str, batches: list[list[Record]]) -> tuple[float, float, int, int]:
    """(first-pass µs per record, replay µs per record, effects applied, applied twice)."""
    effects = _Effects()
    make = _sinks(effects)[name]
    store = MemoryLedgerStore()
    retry = RetryConfig()
    count = sum(len(b) for b in batches)
    timings = []
    for _ in ("first", "replay"):
        sink = make(Ledger(store, LedgerConfig(consumer_group="cpu", mode=_MODES[name])))
        with _no_gc():
            started = time.process_time()
            for batch in batches:
                run_sync(sink.process(batch), None, retry)
            timings.append((time.process_time() - started) / count * 1e6)
    twice = sum(1 for n in effects.applied.values() if n > 1)
    return timings[0], timings[1], len(effects.applied), twice


def measure(records: int, shards: int, batch: int, repeat: int = 3) -> dict[str, Any]:
    """Toolkit CPU per record (best of ``repeat``), net of the handler's own cost."""
    batches = build_batches(records, shards, batch)
    handler_us = min(_handler_only_cpu(batches) for _ in range(repeat))
    result: dict[str, Any] = {"records": records, "handler_us": round(handler_us, 2)}
    for name in _MODES:
        runs = [_one_run(name, batches) for _ in range(repeat)]
        first = min(r[0] for r in runs)
        replay = min(r[1] for r in runs)
        applied, twice = runs[-1][2], runs[-1][3]
        if applied != records or twice:
            raise AssertionError(f"in-memory {name}: {applied} applied of {records}, {twice} twice")
        # The claim and idempotent-key handlers do even less than the transactional one.
        result[name] = round(first - handler_us, 2)
        result[f"{name}_replay"] = round(replay, 2)
    return result

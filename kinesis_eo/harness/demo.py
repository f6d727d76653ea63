"""``kinesis-eo demo``: exactly-once effects shown end to end, on an embedded moto, in seconds.

The demo makes records arrive twice in both of the ways the notes in docs/design.md
describe, then counts what the sink really did:

- inbound duplicates: a seeded :class:`FaultInjector` reports some PutRecords
  entries failed after the stream stored them, so the producer's retry stores
  those events a second time (same event id, new sequence number); it also
  throttles some PutRecords and GetRecords calls;
- outbound duplicates: the first consumer "dies" right after a batch's sink
  commit and before its checkpoint, so the second consumer reads that batch
  again; a third consumer then re-reads the whole stream with no checkpoints.

The sink's effect is deliberately not idempotent (``ADD applied :one`` on an
item per event id), so an effect applied twice is visible as ``applied = 2``.
A few events are poison (the handler rejects them): they must end up in the
dead-letter table with their payload, never silently dropped.

Everything runs against moto's HTTP server in a thread of this process, with
fixed fake credentials handed to each client: no AWS account, no change to
``os.environ`` or to the user's AWS configuration.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from kinesis_eo.errors import ConfigurationError
from kinesis_eo.harness.demo_phases import (
    Consumed,
    Produced,
    Progress,
    consume,
    plural,
    produce,
    require_moto_server,
    setup,
    start,
    verify_sink,
)
from kinesis_eo.harness.scenario import Verdict

__all__ = ["DemoReport", "format_report", "run_demo"]

DEFAULT_EVENTS = 2000
DEFAULT_SHARDS = 4
DEFAULT_SEED = 7


@dataclass(frozen=True, slots=True)
class DemoReport:
    """What the demo did and what it found in the sink; ``ok`` when nothing was lost or doubled."""

    produced: int
    delivered: int
    effects: int
    duplicates_suppressed: int
    dead_lettered: int
    missing: int
    duplicated: int
    producer_duplicates: int
    crashes: int
    wall_s: float
    emulator: str
    seed: int
    shards: int
    poison: int
    stored_records: int
    redelivered: int
    throttled_calls: int
    consumer_passes: int
    phase_s: Mapping[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.duplicated == 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["phase_s"] = dict(self.phase_s)
        data["ok"] = self.ok
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


# --- the run ----------------------------------------------------------------------------------


def _report_file(events: int, shards: int, report_path: str | Path | None) -> Path | None:
    """The arguments checked before anything starts; the report's path, if one is asked for."""
    if events < 1:
        raise ValueError("events must be at least 1")
    if shards < 1:
        raise ValueError("shards must be at least 1")
    report_file = Path(report_path) if report_path is not None else None
    if report_file is not None and not report_file.parent.is_dir():
        # Found out now rather than after the run.
        raise ConfigurationError(f"cannot write the report to {report_file}: no such directory")
    require_moto_server()
    return report_file


def _demo_report(
    produced: Produced, consumed: Consumed, verdict: Verdict, **facts: Any
) -> DemoReport:
    tallies = consumed.tallies
    delivered = sum(t.delivered for t in tallies)
    return DemoReport(
        produced=len(produced.plan.events),
        delivered=delivered,
        effects=verdict.effects,
        duplicates_suppressed=sum(t.duplicates for t in tallies),
        dead_lettered=verdict.letters,
        missing=len(verdict.missing),
        duplicated=len(verdict.duplicated),
        producer_duplicates=produced.producer_duplicates,
        crashes=sum(1 for t in tallies if t.crashed),
        poison=len(produced.plan.poison),
        stored_records=produced.stored,
        redelivered=delivered - produced.stored,
        throttled_calls=produced.throttled + consumed.throttled,
        consumer_passes=len(tallies),
        **facts,
    )


def run_demo(
    events: int = DEFAULT_EVENTS,
    shards: int = DEFAULT_SHARDS,
    seed: int = DEFAULT_SEED,
    report_path: str | Path | None = None,
    out: TextIO | None = None,
) -> DemoReport:
    """Run the demo, print its progress and result table to ``out``, and return the report.

    ``report_path`` also gets the report as JSON. Raises
    :class:`~kinesis_eo.errors.KinesisEOError` subclasses for what the user
    can fix (moto missing, a report path that cannot be written).
    """
    report_file = _report_file(events, shards, report_path)
    out = out if out is not None else sys.stdout
    started = time.monotonic()
    progress = Progress(out, total=6)
    with contextlib.ExitStack() as stack:
        session, emulator = start(stack, progress, events, shards, seed)
        setup(session, shards)
        produced = produce(session, events)
        consumed = consume(session, produced.stored)
        verdict = verify_sink(session, produced.plan)
    report = _demo_report(
        produced,
        consumed,
        verdict,
        wall_s=round(time.monotonic() - started, 2),
        emulator=emulator,
        seed=seed,
        shards=shards,
        phase_s=progress.times,
    )
    print(file=out)
    print(format_report(report), file=out)
    if report_file is not None:
        try:
            report_file.write_text(report.to_json())
        except OSError as exc:
            raise ConfigurationError(f"cannot write the report to {report_file}: {exc}") from exc
        print(f"report written to {report_file}", file=out)
    out.flush()
    return report


def format_report(report: DemoReport) -> str:
    """The result table, as the CLI prints it."""
    rows = [
        ("produced", f"{report.produced}", f"events, {report.poison} of them poison"),
        (
            "delivered (with redeliveries)",
            f"{report.delivered}",
            f"{report.stored_records} records stored "
            f"({report.producer_duplicates} by producer retries), "
            f"{report.redelivered} redelivered over {plural(report.consumer_passes, 'consumer')}",
        ),
        ("effects applied", f"{report.effects}", "in the sink: one per event that is not poison"),
        ("duplicates suppressed", f"{report.duplicates_suppressed}", "by the ledger"),
        ("dead-lettered", f"{report.dead_lettered}", "with their full payload"),
        ("lost (missing)", f"{report.missing}", ""),
        ("duplicated effects", f"{report.duplicated}", ""),
        ("crashes injected", f"{report.crashes}", "after a sink commit, before the checkpoint"),
        ("throttled calls", f"{report.throttled_calls}", "PutRecords and GetRecords"),
        ("wall time", f"{report.wall_s:.1f} s", ""),
        ("emulator", report.emulator, ""),
    ]
    label_width = max(len(label) for label, _, _ in rows)
    value_width = max(len(value) for _, value, _ in rows[:-1])
    lines = []
    for label, value, note in rows:
        cell = value.rjust(value_width) if label != "emulator" else value
        lines.append(f"  {label:<{label_width}}  {cell}  {note}".rstrip())
    verdict = (
        "exactly once: every event applied once or dead-lettered, none lost, none doubled"
        if report.ok
        else f"NOT exactly once: {report.missing} lost, {report.duplicated} applied more than once"
    )
    return "\n".join([*lines, "", verdict])

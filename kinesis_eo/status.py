"""What ``kinesis-eo status`` and ``kinesis-eo health`` report, as plain functions over data.

``status`` reads the lease table (and, given the stream, its shards) and
says per shard who owns it, how far it is checkpointed, how far behind the
owner last was, and whether it can be worked on; :func:`shard_changes`
compares two such reads (``status --watch``). ``health`` judges a
worker's health file, which its coordinator rewrites every round: a file
that stopped changing means a coordinator that stopped going round.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kinesis_eo.leases import Lease, Sentinel, retired_shards
from kinesis_eo.retrieval.shards import ShardGraph

__all__ = [
    "ADVANCED",
    "COLUMNS",
    "DEFAULT_STEADY_MS",
    "ENDED",
    "FALLING",
    "FINISHED",
    "FINISHED_REMOVED",
    "FREE",
    "MOVED_BACK",
    "NEW_LEASE",
    "NO_LEASE",
    "OWNED",
    "RISING",
    "STEADY",
    "UNCHANGED",
    "WAITING",
    "WATCH_COLUMNS",
    "ShardChange",
    "ShardStatus",
    "abbreviate_checkpoint",
    "check_health",
    "format_table",
    "format_watch_table",
    "human_lag",
    "shard_changes",
    "shard_statuses",
]

OWNED = "owned"
FREE = "free"
FINISHED = "finished"
WAITING = "waiting for parents"
NO_LEASE = "no lease yet"
# Listed by the stream, read to its end, and its lease removed once its children were under way.
FINISHED_REMOVED = "finished (lease removed)"

_SENTINELS = frozenset(s.value for s in Sentinel)


@dataclass(frozen=True, slots=True)
class ShardStatus:
    """One line of ``kinesis-eo status``: a shard's state, owner, checkpoint, lag, records."""

    shard_id: str
    state: str
    owner: str | None = None
    checkpoint: str | None = None
    checkpoint_sub_sequence: int = 0
    millis_behind_latest: int | None = None
    parents: tuple[str, ...] = ()
    lease_counter: int | None = None
    records_processed: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "shard_id": self.shard_id,
            "state": self.state,
            "owner": self.owner,
            "checkpoint": self.checkpoint,
            "checkpoint_sub_sequence": self.checkpoint_sub_sequence,
            "millis_behind_latest": self.millis_behind_latest,
            "lag": human_lag(self.millis_behind_latest),
            "parents": list(self.parents),
            "lease_counter": self.lease_counter,
            "records_processed": self.records_processed,
        }


def shard_statuses(leases: Iterable[Lease], graph: ShardGraph | None = None) -> list[ShardStatus]:
    """One row per lease, plus one per listed shard without a lease (none yet, or removed)."""
    by_shard = {lease.shard_id: lease for lease in leases}

    def state(lease: Lease) -> str:
        if lease.finished:
            return FINISHED
        # As the lease manager judges it: only parents still in the table count.
        if any(not by_shard[p].finished for p in lease.parents if p in by_shard):
            return WAITING
        return OWNED if lease.owner else FREE

    rows = [
        ShardStatus(
            shard_id=lease.shard_id,
            state=state(lease),
            owner=lease.owner,
            checkpoint=lease.checkpoint,
            checkpoint_sub_sequence=lease.checkpoint_sub_sequence,
            millis_behind_latest=lease.millis_behind_latest,
            records_processed=lease.records_processed,
            parents=tuple(sorted(lease.parents)),
            lease_counter=lease.counter,
        )
        for lease in by_shard.values()
    ]
    if graph is not None:
        retired = retired_shards(graph, by_shard.values())
        rows += [
            ShardStatus(
                shard.shard_id,
                FINISHED_REMOVED if shard.shard_id in retired else NO_LEASE,
                parents=graph.parents_of(shard.shard_id),
            )
            for shard in graph.shards
            if shard.shard_id not in by_shard
        ]
    return sorted(rows, key=lambda row: row.shard_id)


def abbreviate_checkpoint(checkpoint: str | None, sub_sequence: int = 0, width: int = 20) -> str:
    """A sequence number short enough for a table column; sentinels as they are.

    Sequence numbers of one shard share a long prefix and differ at the end,
    so the end is kept: ``4959...2785093634``.
    """
    if checkpoint is None:
        return "-"
    if checkpoint in _SENTINELS:
        return checkpoint
    text = checkpoint
    if len(text) > width:
        keep = width - 7
        text = f"{text[:4]}...{text[-keep:]}"
    return f"{text}/{sub_sequence}" if sub_sequence else text


def human_lag(millis: int | None) -> str:
    """``eoMillisBehindLatest`` for people: 0 s, 850 ms, 4.2 s, 3 min 04 s, 2 h 05 min, 1 d 03 h."""
    if millis is None:
        return "-"
    if millis == 0:
        return "0 s"
    if millis < 1000:
        return f"{millis} ms"
    seconds = millis / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = math.floor(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60:02d} min"
    return f"{whole // 86400} d {whole % 86400 // 3600:02d} h"


COLUMNS = ("SHARD", "OWNER", "CHECKPOINT", "LAG", "STATE", "PARENTS")


def format_table(rows: Sequence[ShardStatus]) -> str:
    """A fixed-width table, one shard a line, and a count of states under it."""
    cells = [
        (
            row.shard_id,
            row.owner or "-",
            abbreviate_checkpoint(row.checkpoint, row.checkpoint_sub_sequence),
            human_lag(row.millis_behind_latest),
            row.state,
            ",".join(row.parents) or "-",
        )
        for row in rows
    ]
    return "\n".join([*_aligned(COLUMNS, cells), _summary(rows)])


def _aligned(columns: Sequence[str], cells: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(c[i]) for c in [columns, *cells]) for i in range(len(columns))]
    return [
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
        for line in [columns, *cells]
    ]


def _summary(rows: Sequence[ShardStatus]) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no shards"
    owners = len({row.owner for row in rows if row.state == OWNED})
    return f"{len(rows)} shard(s): {summary}; {owners} worker(s) own leases"


# --- changes between two reads (status --watch) ------------------------------------------------

# How a shard's checkpoint moved between two reads.
ADVANCED = "advanced"
UNCHANGED = "unchanged"
ENDED = "ended"
NEW_LEASE = "new lease"
MOVED_BACK = "moved back"
# The lag the owner reported, compared between two reads.
RISING = "rising"
FALLING = "falling"
STEADY = "steady"
# A change in reported lag this small is noise: reports are taken at batch times, not read times.
DEFAULT_STEADY_MS = 1000


@dataclass(frozen=True, slots=True)
class ShardChange:
    """What changed for one shard between two reads of the lease table.

    Sequence numbers are not contiguous, so a records/s figure comes from the
    running count the holders write with each checkpoint (``records``: how
    many more since the last read; None where a read lacks the count).
    Besides: whether the checkpoint moved, how the owner's reported lag
    moved, and whether the owner changed.
    """

    shard_id: str
    progress: str
    lag_trend: str | None = None
    lag_change_ms: int | None = None
    previous_owner: str | None = None
    owner_changed: bool = False
    records: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "progress": self.progress,
            "lag_trend": self.lag_trend,
            "lag_change_ms": self.lag_change_ms,
            "owner_changed": self.owner_changed,
            "previous_owner": self.previous_owner,
            "records": self.records,
        }


def _progress(before: ShardStatus | None, after: ShardStatus) -> str:
    if before is None or before.checkpoint is None:
        return NEW_LEASE if after.checkpoint is not None else UNCHANGED
    old, new = before.checkpoint, after.checkpoint
    if new is None:
        return UNCHANGED  # the lease was removed: its row comes from the stream's listing
    if (old, before.checkpoint_sub_sequence) == (new, after.checkpoint_sub_sequence):
        return UNCHANGED
    if new == Sentinel.SHARD_END.value:
        return ENDED
    if old.isdigit() and new.isdigit():
        ahead = (int(new), after.checkpoint_sub_sequence) > (
            int(old),
            before.checkpoint_sub_sequence,
        )
        return ADVANCED if ahead else MOVED_BACK
    # From TRIM_HORIZON or LATEST to a sequence number; back to a sentinel is a reset.
    return ADVANCED if new.isdigit() else MOVED_BACK


def shard_changes(
    before: Sequence[ShardStatus],
    after: Sequence[ShardStatus],
    steady_ms: int = DEFAULT_STEADY_MS,
) -> list[ShardChange]:
    """One change per row of ``after``, judged against the same shard in ``before``.

    The owner reports its lag only with a checkpoint, so the lag trend is
    judged only when the checkpoint moved: an unchanged checkpoint carries
    the old report, which says nothing about now (trend ``None``). A lag
    change within ``steady_ms`` either way is ``steady``.
    """
    previous = {row.shard_id: row for row in before}
    changes = []
    for row in after:
        old = previous.get(row.shard_id)
        progress = _progress(old, row)
        trend: str | None = None
        delta: int | None = None
        lags = (old.millis_behind_latest if old else None, row.millis_behind_latest)
        if progress in (ADVANCED, MOVED_BACK) and lags[0] is not None and lags[1] is not None:
            delta = lags[1] - lags[0]
            trend = STEADY if abs(delta) <= steady_ms else RISING if delta > 0 else FALLING
        owner_changed = old is not None and old.owner != row.owner
        counts = (old.records_processed if old else None, row.records_processed)
        records = counts[1] - counts[0] if counts[0] is not None and counts[1] is not None else None
        changes.append(
            ShardChange(
                row.shard_id,
                progress,
                trend,
                delta,
                previous_owner=old.owner if old is not None else None,
                owner_changed=owner_changed,
                records=records if records is None or records >= 0 else None,
            )
        )
    return changes


def _trend_text(change: ShardChange) -> str:
    if change.lag_trend is None or change.lag_change_ms is None:
        return "-"
    if change.lag_trend == STEADY:
        return STEADY
    sign = "+" if change.lag_change_ms > 0 else "-"
    return f"{change.lag_trend} {sign}{human_lag(abs(change.lag_change_ms))}"


def _progress_text(change: ShardChange) -> str:
    if change.owner_changed:
        return f"{change.progress}; owner was {change.previous_owner or '-'}"
    return change.progress


WATCH_COLUMNS = (
    "SHARD",
    "OWNER",
    "CHECKPOINT",
    "PROGRESS",
    "REC/S",
    "LAG",
    "TREND",
    "STATE",
    "PARENTS",
)


def _rate_text(change: ShardChange | None, elapsed_s: float | None) -> str:
    if change is None or change.records is None or not elapsed_s:
        return "-"
    return f"{change.records / elapsed_s:.1f}"


def format_watch_table(
    rows: Sequence[ShardStatus],
    changes: Sequence[ShardChange] | None,
    elapsed_s: float | None,
) -> str:
    """:func:`format_table` with each shard's progress and lag trend since the last read.

    On the first read (``changes`` None) there is nothing to compare: ``-``.
    """
    by_shard = {change.shard_id: change for change in changes or ()}
    cells = []
    for row in rows:
        change = by_shard.get(row.shard_id)
        cells.append(
            (
                row.shard_id,
                row.owner or "-",
                abbreviate_checkpoint(row.checkpoint, row.checkpoint_sub_sequence),
                _progress_text(change) if change else "-",
                _rate_text(change, elapsed_s),
                human_lag(row.millis_behind_latest),
                _trend_text(change) if change else "-",
                row.state,
                ",".join(row.parents) or "-",
            )
        )
    lines = _aligned(WATCH_COLUMNS, cells)
    lines.append(_summary(rows))
    if changes is not None and elapsed_s is not None:
        advanced = sum(1 for change in changes if change.progress == ADVANCED)
        moved = sum(1 for change in changes if change.owner_changed)
        lines.append(
            f"in the last {elapsed_s:.1f} s: {advanced} checkpoint(s) advanced, "
            f"{moved} owner change(s)"
        )
    return "\n".join(lines)


# --- health -------------------------------------------------------------------------------------


def check_health(path: str, max_age_s: float, now: float | None = None) -> str | None:
    """None if the health file at ``path`` was written within ``max_age_s``; else why not."""
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except FileNotFoundError:
        return f"no health file at {path}: the worker has not started its coordinator"
    except (OSError, ValueError) as exc:
        return f"the health file {path} cannot be read: {exc}"
    written = document.get("time") if isinstance(document, dict) else None
    if not isinstance(written, int | float) or isinstance(written, bool):
        return f"the health file {path} has no numeric 'time': not a kinesis-eo health file"
    age = (time.time() if now is None else now) - written
    if age > max_age_s:
        return (
            f"the worker last reported {age:.0f} s ago (allowed: {max_age_s:g} s): "
            "its coordinator is stuck or gone"
        )
    unhealthy = document.get("unhealthy") or []
    if unhealthy:
        return "; ".join(
            f"shard {entry.get('shard')}: {entry.get('reason')}" for entry in unhealthy
        )
    return None

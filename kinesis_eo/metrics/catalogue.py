"""Every metric kinesis_eo records: its name, kind, unit and dimensions, in one place.

Runtimes record through these constants, never through string literals, so
that a back-end (EMF, Prometheus) can look up how to present each one and a
dashboard can be written against one list. Every metric carries the ``app``
dimension (the consumer group); :attr:`MetricSpec.dimensions` names the ones
it carries beyond that.

Units are CloudWatch unit names. Timings are *recorded* in seconds; each
back-end presents them in its own ecosystem's habit (EMF in milliseconds,
Prometheus in seconds).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "APP",
    "BYTES_READ",
    "CATALOGUE",
    "COMMIT_CONFLICTS",
    "COMMIT_LATENCY",
    "DEAD_LETTERED",
    "DUPLICATES_INBOUND",
    "DUPLICATES_REDELIVERED",
    "FENCED_COMMITS",
    "HANDLER_ERRORS",
    "HANDLER_LATENCY",
    "LEASES_HELD",
    "LEASES_RELEASED",
    "LEASES_STOLEN",
    "LEASES_TAKEN",
    "MILLIS_BEHIND_LATEST",
    "OUTAGE_PAUSES",
    "PAYLOAD_MISMATCHES",
    "REASON",
    "RECORDS_APPLIED",
    "RECORDS_READ",
    "RESUBSCRIPTIONS",
    "RETRIES",
    "SERVICE",
    "SHARD",
    "SHARDS_ENDED",
    "THROTTLES",
    "MetricKind",
    "MetricSpec",
    "spec_for",
]


class MetricKind(enum.Enum):
    """How a metric aggregates: counters add, gauges keep the last value, timings keep a shape."""

    COUNTER = "counter"
    GAUGE = "gauge"
    TIMING = "timing"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """What one metric means and how it is presented."""

    name: str
    kind: MetricKind
    unit: str
    description: str
    dimensions: tuple[str, ...] = ()
    """Dimensions beyond ``app`` that every recording of this metric carries."""


APP = "app"
SHARD = "shard"
REASON = "reason"
SERVICE = "service"

RECORDS_READ = "records_read"
BYTES_READ = "bytes_read"
RECORDS_APPLIED = "records_applied"
DUPLICATES_REDELIVERED = "duplicates_redelivered"
DUPLICATES_INBOUND = "duplicates_inbound"
PAYLOAD_MISMATCHES = "payload_mismatches"
DEAD_LETTERED = "dead_lettered"
FENCED_COMMITS = "fenced_commits"
COMMIT_CONFLICTS = "commit_conflicts"
HANDLER_ERRORS = "handler_errors"
OUTAGE_PAUSES = "outage_pauses"
THROTTLES = "throttles"
RETRIES = "retries"
HANDLER_LATENCY = "handler_latency"
COMMIT_LATENCY = "commit_latency"
MILLIS_BEHIND_LATEST = "millis_behind_latest"
LEASES_HELD = "leases_held"
LEASES_TAKEN = "leases_taken"
LEASES_STOLEN = "leases_stolen"
LEASES_RELEASED = "leases_released"
SHARDS_ENDED = "shards_ended"
RESUBSCRIPTIONS = "resubscriptions"

_C, _G, _T = MetricKind.COUNTER, MetricKind.GAUGE, MetricKind.TIMING
_PER_SHARD = (SHARD,)

_SPECS = (
    MetricSpec(RECORDS_READ, _C, "Count", "records read from the stream", _PER_SHARD),
    MetricSpec(BYTES_READ, _C, "Bytes", "payload bytes read from the stream", _PER_SHARD),
    MetricSpec(RECORDS_APPLIED, _C, "Count", "records whose effect committed", _PER_SHARD),
    MetricSpec(
        DUPLICATES_REDELIVERED,
        _C,
        "Count",
        "outbound duplicates: a record position that was already committed, read again",
        _PER_SHARD,
    ),
    MetricSpec(
        DUPLICATES_INBOUND,
        _C,
        "Count",
        "inbound duplicates: an event id already committed, under another position",
        _PER_SHARD,
    ),
    MetricSpec(
        PAYLOAD_MISMATCHES,
        _C,
        "Count",
        "a committed key seen again with a different payload (dead-lettered, never applied)",
        _PER_SHARD,
    ),
    MetricSpec(
        DEAD_LETTERED,
        _C,
        "Count",
        "records dead-lettered with their payload, by reason",
        (SHARD, REASON),
    ),
    MetricSpec(
        FENCED_COMMITS,
        _C,
        "Count",
        "commits refused because the lease moved to another worker",
        _PER_SHARD,
    ),
    MetricSpec(
        COMMIT_CONFLICTS,
        _C,
        "Count",
        "ledger marks a commit found already written (someone else committed first)",
        _PER_SHARD,
    ),
    MetricSpec(
        HANDLER_ERRORS, _C, "Count", "handler calls that raised the record's own error", _PER_SHARD
    ),
    MetricSpec(
        OUTAGE_PAUSES,
        _C,
        "Count",
        "times a shard paused for an outage (nothing dead-lettered)",
        _PER_SHARD,
    ),
    MetricSpec(THROTTLES, _C, "Count", "AWS calls throttled, by service", (SERVICE,)),
    MetricSpec(RETRIES, _C, "Count", "AWS calls retried, by service", (SERVICE,)),
    MetricSpec(
        HANDLER_LATENCY,
        _T,
        "Seconds",
        "time of one call of the user's handler (a record, or a batch for a batch handler)",
        _PER_SHARD,
    ),
    MetricSpec(
        COMMIT_LATENCY,
        _T,
        "Seconds",
        "time of one ledger commit of a batch (its writes and marks)",
        _PER_SHARD,
    ),
    MetricSpec(
        MILLIS_BEHIND_LATEST,
        _G,
        "Milliseconds",
        "how far the last read was behind the tip of its shard",
        _PER_SHARD,
    ),
    MetricSpec(
        LEASES_HELD,
        _G,
        "Count",
        "leases this worker holds (summed over workers, the group's leases)",
    ),
    MetricSpec(LEASES_TAKEN, _C, "Count", "leases taken: free, expired or stolen"),
    MetricSpec(
        LEASES_STOLEN,
        _C,
        "Count",
        "leases taken from a worker that was still renewing them (balancing); also in leases_taken",
    ),
    MetricSpec(LEASES_RELEASED, _C, "Count", "leases given up (shutdown, rebalancing)"),
    MetricSpec(SHARDS_ENDED, _C, "Count", "shards read to their end after a reshard"),
    MetricSpec(
        RESUBSCRIPTIONS,
        _C,
        "Count",
        "enhanced fan-out: new subscriptions to a shard, by reason (renewed: the 5-minute "
        "lifetime or the server's end; dropped: a broken connection; in_use: another "
        "subscription held the shard)",
        (SHARD, REASON),
    ),
)

CATALOGUE: Mapping[str, MetricSpec] = MappingProxyType({spec.name: spec for spec in _SPECS})
"""Every metric kinesis_eo records, by name."""


def spec_for(name: str, kind: MetricKind) -> MetricSpec:
    """The catalogue's entry for ``name``, or a plain one for a metric the catalogue lacks."""
    spec = CATALOGUE.get(name)
    if spec is not None:
        return spec
    return MetricSpec(name, kind, "Seconds" if kind is MetricKind.TIMING else "None", name)

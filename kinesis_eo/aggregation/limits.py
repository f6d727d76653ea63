"""How much KPL aggregates may unpack into: per aggregate, per batch, and what a batch has used.

See :mod:`kinesis_eo.aggregation` for why aggregates are capped at all.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_LIMITS", "MIB", "AggregateLimits", "Caps", "DecodeBudget"]

MIB = 1_048_576


@dataclass(frozen=True, slots=True)
class AggregateLimits:
    """How many user records, and bytes of their data, KPL aggregates may unpack into.

    Why these defaults. The KPL never writes an aggregate above 1 MiB (its
    ``AggregationMaxSize`` tops out there, default 50 KiB), and 50,000 user
    records fill 1 MiB only when each holds about 14 bytes: a denser
    aggregate is not data anyone meant to send, while each user record costs
    some 250 bytes of Python objects, so the cap keeps one aggregate under
    about 12 MiB of them. The data of an aggregate's user records is at most
    the Kinesis record itself, which a stream allows up to 10 MiB. A batch is
    one GetRecords call, at most 10 MiB and 10,000 Kinesis records (what the
    KCL reads at most per call); two aggregates at the cap per batch bound its
    user records at 100,000 (about 25 MiB), its data at the call's 10 MiB.
    Together a batch stays under about 50 MiB, raw bytes included, where an
    unbounded 10 MiB read could take several hundred.
    """

    max_records_per_aggregate: int = 50_000
    max_bytes_per_aggregate: int = 10 * MIB
    max_records_per_batch: int = 100_000
    max_bytes_per_batch: int = 10 * MIB

    def __post_init__(self) -> None:
        for name in (
            "max_records_per_aggregate",
            "max_bytes_per_aggregate",
            "max_records_per_batch",
            "max_bytes_per_batch",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"AggregateLimits.{name} must be at least 1")
        # Otherwise a lone aggregate within its own cap could never fit any batch.
        if self.max_records_per_batch < self.max_records_per_aggregate:
            raise ValueError("max_records_per_batch cannot be below max_records_per_aggregate")
        if self.max_bytes_per_batch < self.max_bytes_per_aggregate:
            raise ValueError("max_bytes_per_batch cannot be below max_bytes_per_aggregate")


DEFAULT_LIMITS = AggregateLimits()


@dataclass(slots=True)
class DecodeBudget:
    """What one batch has used of its caps while its Kinesis records are decoded."""

    limits: AggregateLimits = DEFAULT_LIMITS
    records: int = 0
    bytes: int = 0

    def add(self, records: int, data_bytes: int) -> None:
        self.records += records
        self.bytes += data_bytes


@dataclass(frozen=True, slots=True)
class Caps:
    """The caps one aggregate is decoded under: its own, or less if the batch has less left."""

    records: int
    data_bytes: int
    records_are_batch: bool
    bytes_are_batch: bool

    @classmethod
    def of(cls, limits: AggregateLimits, budget: DecodeBudget | None) -> Caps:
        records, data_bytes = limits.max_records_per_aggregate, limits.max_bytes_per_aggregate
        if budget is None:
            return cls(records, data_bytes, False, False)
        records_left = budget.limits.max_records_per_batch - budget.records
        bytes_left = budget.limits.max_bytes_per_batch - budget.bytes
        return cls(
            min(records, records_left),
            min(data_bytes, bytes_left),
            records_left < records,
            bytes_left < data_bytes,
        )

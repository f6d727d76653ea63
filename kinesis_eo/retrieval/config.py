"""How a shard is polled: batch size, pacing, retries and aggregate caps."""

from __future__ import annotations

from dataclasses import dataclass, field

from kinesis_eo.aggregation import DEFAULT_LIMITS, AggregateLimits
from kinesis_eo.retrieval.shards import DEFAULT_PAGE_SIZE
from kinesis_eo.retry import RetryConfig

__all__ = ["MAX_RECORDS_PER_CALL", "ReaderConfig"]

MAX_RECORDS_PER_CALL = 10_000


@dataclass(frozen=True, slots=True)
class ReaderConfig:
    """How a shard is polled.

    AWS allows 5 GetRecords calls per second per shard, shared by every
    consumer of the shard; ``min_read_interval_s`` keeps one reader at or under
    that. After a read that came back empty at the tip of the shard the reader
    waits ``idle_interval_s`` instead, so an idle stream costs little.
    ``aggregate_limits`` caps what KPL aggregates unpack into, per aggregate
    and per batch (see :class:`~kinesis_eo.aggregation.AggregateLimits`): an
    aggregate over its own cap is delivered whole with ``deaggregation_error``
    (the sinks dead-letter it); one that does not fit what is left of a batch
    ends the batch and opens the next.
    """

    max_records: int = 1000
    min_read_interval_s: float = 0.2
    idle_interval_s: float = 1.0
    retry: RetryConfig = field(default_factory=RetryConfig)
    list_shards_page_size: int = DEFAULT_PAGE_SIZE
    aggregate_limits: AggregateLimits = DEFAULT_LIMITS

    def __post_init__(self) -> None:
        if not 1 <= self.max_records <= MAX_RECORDS_PER_CALL:
            raise ValueError(
                f"max_records must be within 1..{MAX_RECORDS_PER_CALL}, got {self.max_records!r}"
            )
        for name in ("min_read_interval_s", "idle_interval_s"):
            value = getattr(self, name)
            # NaN fails both comparisons: it would reach time.sleep as an error.
            if not 0 <= value < float("inf"):
                raise ValueError(f"{name} must be 0 or more seconds, got {value!r}")
        # ListShards takes MaxResults from 1 to 10,000.
        if not 1 <= self.list_shards_page_size <= 10_000:
            raise ValueError(
                f"list_shards_page_size must be within 1..10000, got {self.list_shards_page_size!r}"
            )

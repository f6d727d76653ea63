"""Kinesis records turned into user records: de-aggregated, unwrapped, after the floor.

The worker's reader and the Lambda adapter both decode through :func:`to_records`,
so that a ledger written by either agrees on every key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from kinesis_eo.aggregation import DecodeBudget, deaggregate
from kinesis_eo.envelope import unwrap_event
from kinesis_eo.records import HashKeyRange, Record
from kinesis_eo.retrieval.position import StartingPosition

__all__ = ["Decoded", "to_records"]


class Decoded(NamedTuple):
    """User records of a GetRecords response (or a Lambda event's records).

    ``dropped``: aggregated user records outside the hash range. ``unread``:
    the index of the first Kinesis record left undecoded because the batch's
    caps were reached (``len(raw_records)`` when all were decoded).
    """

    records: list[Record]
    dropped: int
    unread: int


def to_records(
    stream: str,
    shard_id: str,
    raw_records: list[Mapping[str, Any]],
    hash_range: HashKeyRange | None,
    floor: StartingPosition,
    budget: DecodeBudget | None = None,
) -> Decoded:
    """Kinesis records -> user records after the floor, within the caps of ``budget``."""
    records: list[Record] = []
    dropped = 0
    budget = budget or DecodeBudget()
    for index, raw in enumerate(raw_records):
        kinesis_record = Record(
            stream=stream,
            shard_id=shard_id,
            sequence_number=raw["SequenceNumber"],
            partition_key=raw["PartitionKey"],
            data=raw["Data"],
            arrival_time=raw.get("ApproximateArrivalTimestamp"),
            encryption_type=raw.get("EncryptionType"),
        )
        expanded = deaggregate(kinesis_record, hash_range, budget=budget)
        if expanded.batch_full:
            return Decoded(records, dropped, index)
        dropped += len(expanded.outside_hash_range)
        for record in expanded.records:
            if not floor.admits(record.position):
                continue
            event_id, namespace, payload = unwrap_event(record.data)
            records.append(
                record if event_id is None else record.with_event(event_id, namespace, payload)
            )
    return Decoded(records, dropped, len(raw_records))

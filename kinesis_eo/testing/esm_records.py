"""Kinesis records as a stream stores them, and the event a Kinesis event source mapping makes.

Part of :mod:`kinesis_eo.testing.lambda_esm`, which re-exports these names.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kinesis_eo.testing.esm_config import ACCOUNT, REGION

__all__ = ["StreamRecord", "kinesis_event", "read_stream", "stream_arn"]

_MAX_EMPTY_PAGES = 50


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """One Kinesis record as stored in a shard (before any KPL de-aggregation)."""

    shard_id: str
    sequence_number: str
    partition_key: str
    data: bytes
    arrival: datetime = field(default_factory=lambda: datetime.now(UTC))
    encryption_type: str | None = None


def stream_arn(stream: str, region: str = REGION, account: str = ACCOUNT) -> str:
    """The ARN the simulator puts in its events for ``stream``."""
    return f"arn:aws:kinesis:{region}:{account}:stream/{stream}"


def kinesis_event(
    records: Sequence[StreamRecord], arn: str, region: str = REGION
) -> dict[str, Any]:
    """The event a Kinesis ESM sends for ``records`` of the stream ``arn``."""
    entries = []
    for record in records:
        kinesis: dict[str, Any] = {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": record.partition_key,
            "sequenceNumber": record.sequence_number,
            "data": base64.b64encode(record.data).decode("ascii"),
            "approximateArrivalTimestamp": record.arrival.timestamp(),
        }
        if record.encryption_type is not None:
            kinesis["encryptionType"] = record.encryption_type
        entries.append(
            {
                "kinesis": kinesis,
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{record.shard_id}:{record.sequence_number}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": f"arn:aws:iam::{ACCOUNT}:role/lambda-role",
                "awsRegion": region,
                "eventSourceARN": arn,
            }
        )
    return {"Records": entries}


def read_stream(kinesis: Any, stream: str) -> list[StreamRecord]:
    """Every record of every shard of ``stream``, from the trim horizon, shard by shard."""
    records: list[StreamRecord] = []
    shards: list[dict[str, Any]] = []
    params: dict[str, Any] = {"StreamName": stream}
    while True:
        page = kinesis.list_shards(**params)
        shards += page["Shards"]
        token = page.get("NextToken")
        if not token:
            break
        params = {"NextToken": token}
    for shard in shards:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        empty_pages = 0
        while iterator:
            page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            if not page["Records"]:
                # An empty page is the end only at the tip; before it Kinesis may
                # return a few while it skips gaps.
                empty_pages += 1
                if not page.get("MillisBehindLatest") or empty_pages >= _MAX_EMPTY_PAGES:
                    break
                iterator = page.get("NextShardIterator")
                continue
            empty_pages = 0
            for raw in page["Records"]:
                arrival = raw.get("ApproximateArrivalTimestamp") or datetime.now(UTC)
                records.append(
                    StreamRecord(
                        shard["ShardId"],
                        raw["SequenceNumber"],
                        raw["PartitionKey"],
                        bytes(raw["Data"]),
                        arrival,
                        raw.get("EncryptionType"),
                    )
                )
            iterator = page.get("NextShardIterator")
    return records

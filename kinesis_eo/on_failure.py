"""The on-failure records of a Lambda event source mapping, and the records they name.

When a Kinesis event source mapping gives up on a batch (its retries are
exhausted or its records too old) it sends a record of it to its on-failure
destination. On an SQS queue that is a message whose body, as AWS documents it
for Kinesis, is::

    {"requestContext": {"requestId": "...", "functionArn": "arn:aws:lambda:...",
                        "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 4},
     "responseContext": {"statusCode": 200, "executedVersion": "$LATEST",
                         "functionError": "Unhandled"},
     "version": "1.0", "timestamp": "2023-12-10T22:06:23.446Z",
     "KinesisBatchInfo": {"shardId": "shardId-000000000000",
                          "startSequenceNumber": "4964...130", "endSequenceNumber": "4964...930",
                          "approximateArrivalOfFirstRecord": "2023-12-10T22:05:59.280Z",
                          "approximateArrivalOfLastRecord": "2023-12-10T22:06:19.196Z",
                          "batchSize": 3, "streamArn": "arn:aws:kinesis:...:stream/orders"}}

``condition`` is also ``RecordAgeExceeded``; through an SNS topic the same
document arrives as the ``Message`` of an SNS notification. It holds no
payload (:func:`on_failure_record` builds one, for tests and simulators):
:func:`fetch_batch_flow` reads the records again with
``GetShardIterator`` ``AT_SEQUENCE_NUMBER`` and ``GetRecords`` up to the end
sequence number, and de-aggregates them as the reader does (and as the Lambda
adapter does, so that their ledger keys are the ones the function used). That
works only while the stream holds them: once they are past its retention period,
or their shard is gone, they cannot be read again, and the flow says so.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Generator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kinesis_eo.errors import AwsCallError, ResourceNotFoundError
from kinesis_eo.flow import Call, Sleep
from kinesis_eo.records import Position, Record, parse_sequence_number
from kinesis_eo.retrieval.reader import StartingPosition, to_records
from kinesis_eo.retrieval.shards import StreamRef

__all__ = ["BatchInfo", "fetch_batch_flow", "on_failure_record", "parse_on_failure"]

MAX_GET_RECORDS = 10_000
# GetRecords allows 5 calls a second per shard, shared with the stream's consumers.
READ_INTERVAL_S = 0.2
# Empty reads in a row before a shard counts as read through (a sparse shard
# returns some before its next record; an idle one says MillisBehindLatest 0).
MAX_EMPTY_READS = 20


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """The ``KinesisBatchInfo`` of an on-failure record: where a discarded batch lay."""

    stream_arn: str
    shard_id: str
    start: str
    end: str
    batch_size: int = 0
    condition: str = ""

    @property
    def label(self) -> str:
        stream = StreamRef.of(self.stream_arn).label
        return f"on-failure batch {stream}/{self.shard_id}@{self.start}..{self.end}"


def parse_on_failure(body: str) -> BatchInfo:
    """The batch an on-failure record (the SQS message body, or an SNS notification) names."""
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and doc.get("Type") == "Notification":
            doc = json.loads(doc["Message"])
        info = doc["KinesisBatchInfo"]
        batch = BatchInfo(
            stream_arn=str(info["streamArn"]),
            shard_id=str(info["shardId"]),
            start=str(info["startSequenceNumber"]),
            end=str(info["endSequenceNumber"]),
            batch_size=int(info.get("batchSize") or 0),
            condition=str(doc.get("requestContext", {}).get("condition") or ""),
        )
        StreamRef.of(batch.stream_arn)
        if parse_sequence_number(batch.start) > parse_sequence_number(batch.end):
            raise ValueError("its start sequence number is past its end")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not an on-failure record of a Kinesis mapping: {exc}") from None
    return batch


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def on_failure_record(
    info: BatchInfo,
    *,
    function_arn: str,
    invoke_count: int,
    first_arrival: datetime,
    last_arrival: datetime,
    function_error: str | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """The document a Kinesis mapping sends its on-failure destination for ``info``'s batch.

    ``function_error`` is ``"Unhandled"`` when the last invocation raised;
    ``info.condition`` is ``RetryAttemptsExhausted`` or ``RecordAgeExceeded``.
    """
    response: dict[str, Any] = {"statusCode": 200, "executedVersion": "$LATEST"}
    if function_error is not None:
        response["functionError"] = function_error
    return {
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": function_arn,
            "condition": info.condition,
            "approximateInvokeCount": invoke_count,
        },
        "responseContext": response,
        "version": "1.0",
        "timestamp": _iso(at or datetime.now(UTC)),
        "KinesisBatchInfo": {
            "shardId": info.shard_id,
            "startSequenceNumber": info.start,
            "endSequenceNumber": info.end,
            "approximateArrivalOfFirstRecord": _iso(first_arrival),
            "approximateArrivalOfLastRecord": _iso(last_arrival),
            "batchSize": info.batch_size,
            "streamArn": info.stream_arn,
        },
    }


def fetch_batch_flow(info: BatchInfo) -> Generator[Any, Any, tuple[list[Record], str]]:
    """The user records from start to end sequence number, and a sentence if any are gone."""
    stream = StreamRef.of(info.stream_arn)
    resource = f"shard {info.shard_id} of {stream}"
    gone = (
        f"the records of {resource} from {info.start} to {info.end} are no longer in the "
        "stream (past its retention period, or the shard is gone) and cannot be redriven"
    )
    params = {
        **stream.params(),
        "ShardId": info.shard_id,
        "ShardIteratorType": "AT_SEQUENCE_NUMBER",
        "StartingSequenceNumber": info.start,
    }
    try:
        response = yield Call("get_shard_iterator", params, resource, "GetShardIterator", "kinesis")
    except ResourceNotFoundError:
        return [], gone
    except AwsCallError as exc:
        if exc.code == "InvalidArgumentException":
            return [], gone
        raise
    start, end = parse_sequence_number(info.start), parse_sequence_number(info.end)
    floor = StartingPosition.at(Position(info.start))
    limit = max(1, min(info.batch_size or 1000, MAX_GET_RECORDS))
    records: list[Record] = []
    first: int | None = None
    iterator, empty_reads = response.get("ShardIterator"), 0
    while iterator and empty_reads < MAX_EMPTY_READS:
        read = {"ShardIterator": iterator, "Limit": limit, **stream.params()}
        response = yield Call("get_records", read, resource, "GetRecords", "kinesis")
        raw = response.get("Records") or []
        numbers = [parse_sequence_number(r["SequenceNumber"]) for r in raw]
        first = numbers[0] if first is None and numbers else first
        in_range = [r for r, n in zip(raw, numbers, strict=True) if n <= end]
        # Lambda reports the stream by name and filters no hash range: keys must match its own.
        records += to_records(str(stream.name), info.shard_id, in_range, None, floor)[0]
        if len(in_range) < len(raw) or (numbers and numbers[-1] == end):
            break
        empty_reads = 0 if raw else empty_reads + 1
        if not raw and response.get("MillisBehindLatest") == 0:
            break
        iterator = response.get("NextShardIterator")
        yield Sleep(READ_INTERVAL_S)
    return records, (gone if first is None or first > start else "")

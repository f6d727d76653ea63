"""The DynamoDB transactional sink: effect, ledger mark and fencing check in one transaction.

The handler does not write: it returns the writes (put, update, delete,
condition check) its record calls for, and the sink commits them with the
ledger mark in ``TransactWriteItems``. A duplicate or a zombie writer makes a
condition fail and nothing is written. This is the strong path: no window
exists in which the effect is there and the mark is not.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from typing import Any

from boto3.dynamodb.types import TypeSerializer

from kinesis_eo.deadletter import DeadLetterReason
from kinesis_eo.errors import ConditionFailedError
from kinesis_eo.ledger import Entry, MarkStatus
from kinesis_eo.records import Record
from kinesis_eo.sinks.base import (
    Attempted,
    BatchReport,
    SinkBase,
)

__all__ = [
    "TransactItem",
    "TransactionalSink",
    "condition_check",
    "delete",
    "put",
    "update",
]

TransactItem = Mapping[str, Any]

_serializer = TypeSerializer()


def _attribute(value: Any) -> dict[str, Any]:
    # Strings and plain ints are most of what handlers write: skip the serializer's
    # walk through every type it knows (the same result, in a fraction of the time).
    kind = type(value)
    if kind is str:
        return {"S": value}
    if kind is int:
        return {"N": str(value)}
    return _serializer.serialize(value)  # type: ignore[no-any-return]


def _attributes(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _attribute(value) for name, value in values.items()}


def _expression(
    request: dict[str, Any],
    condition: str | None,
    names: Mapping[str, str] | None,
    values: Mapping[str, Any] | None,
) -> dict[str, Any]:
    if condition:
        request["ConditionExpression"] = condition
    if names:
        request["ExpressionAttributeNames"] = dict(names)
    if values:
        request["ExpressionAttributeValues"] = _attributes(values)
    return request


def put(
    table: str,
    item: Mapping[str, Any],
    *,
    condition: str | None = None,
    names: Mapping[str, str] | None = None,
    values: Mapping[str, Any] | None = None,
) -> TransactItem:
    """A ``Put`` of ``item`` (plain Python values) for a transactional sink handler to return."""
    request = {"TableName": table, "Item": _attributes(item)}
    return {"Put": _expression(request, condition, names, values)}


def update(
    table: str,
    key: Mapping[str, Any],
    expression: str,
    *,
    condition: str | None = None,
    names: Mapping[str, str] | None = None,
    values: Mapping[str, Any] | None = None,
) -> TransactItem:
    """An ``Update`` for a transactional handler to return; it commits with the record's mark."""
    request = {"TableName": table, "Key": _attributes(key), "UpdateExpression": expression}
    return {"Update": _expression(request, condition, names, values)}


def delete(
    table: str,
    key: Mapping[str, Any],
    *,
    condition: str | None = None,
    names: Mapping[str, str] | None = None,
    values: Mapping[str, Any] | None = None,
) -> TransactItem:
    """A ``Delete`` for a transactional handler to return; it commits with the record's mark."""
    request = {"TableName": table, "Key": _attributes(key)}
    return {"Delete": _expression(request, condition, names, values)}


def condition_check(
    table: str,
    key: Mapping[str, Any],
    condition: str,
    *,
    names: Mapping[str, str] | None = None,
    values: Mapping[str, Any] | None = None,
) -> TransactItem:
    """A ``ConditionCheck`` for a transactional handler to return: the transaction commits only if
    ``condition`` holds.
    """
    request = {"TableName": table, "Key": _attributes(key)}
    return {"ConditionCheck": _expression(request, condition, names, values)}


class TransactionalSink(SinkBase):
    """Commits each record's writes with its ledger mark, atomically.

    ``handler(record, ctx)`` returns the writes for one record (sync or async),
    or ``batch_handler(records, contexts)`` a list of writes per record. It
    may run more than once for a record (retries, replays); only one of its
    results is ever committed.
    """

    # The commit's conditions would catch what was done before without any read,
    # but then a restart runs the handler again for every record of each shard's
    # first replayed batch. One watermark read per shard and process (per-record
    # mode reads anyway) makes a replay as fast as reading: measured in bench/.
    commit_detects_duplicates = False

    def entry_for(
        self, record: Record, outcome: Attempted, report: BatchReport
    ) -> Generator[Any, Any, Entry | None]:
        if outcome.ok:
            return Entry(record, tuple(outcome.value or ()))
        # Screening may have skipped the ledger read: a replayed poison record is
        # already dead-lettered and marked, and must not be dead-lettered again.
        screened = yield from self.ledger.screen([record])
        if not screened.new:
            report.duplicates += screened.duplicates
            report.inbound_duplicates += screened.inbound
            report.mismatched += screened.mismatched
            return None
        return (yield from super().entry_for(record, outcome, report))

    def retry_rejected(
        self, report: BatchReport
    ) -> Callable[[Record, int, str], Generator[Any, Any, Entry | None]]:
        def retry(
            record: Record, attempt_number: int, reason: str
        ) -> Generator[Any, Any, Entry | None]:
            if attempt_number <= self.policy.max_attempts:
                outcome = yield from self.run_handler(record, attempt_number)
                report.took(outcome, outcome.attempts - attempt_number + 1)
                return (yield from self.entry_for(record, outcome, report))
            error = ConditionFailedError(f"the sink refused the record's writes: {reason}")
            yield from self.dead_letter(
                record, DeadLetterReason.PROCESSING_FAILED, error, attempt_number - 1, report
            )
            return Entry(record, status=MarkStatus.DEAD_LETTERED)

        return retry

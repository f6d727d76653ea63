"""Redriving the dead letters of a DynamoDB table."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from kinesis_eo.deadletter import (
    DeadLetter,
    DynamoDBDeadLetterConfig,
    read_dead_letters_flow,
    table_items,
)
from kinesis_eo.flow import Call
from kinesis_eo.redrive.applying import apply_flow, outcome_of
from kinesis_eo.redrive.options import RedriveOptions
from kinesis_eo.redrive.report import (
    Outcome,
    RedriveItem,
    RedriveReport,
    letter_detail,
    letter_label,
)

__all__ = ["delete_table_letter_flow", "table_letters_flow"]


def delete_table_letter_flow(table: str, letter: DeadLetter) -> Generator[Any, Any, None]:
    """Delete a letter's head item, then its part items (parts without a head are ignored)."""
    head = table_items(letter, DynamoDBDeadLetterConfig())[-1]
    params: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk AND begins_with(sk, :sk)",
        "ExpressionAttributeValues": {":pk": head["pk"], ":sk": head["sk"]},
        "ProjectionExpression": "pk, sk",
        "ConsistentRead": True,
    }
    keys: list[dict[str, Any]] = []
    while True:
        response = yield Call("query", params, f"table {table!r}", "Query", "dynamodb")
        keys += response.get("Items") or []
        if not response.get("LastEvaluatedKey"):
            break
        params = {**params, "ExclusiveStartKey": response["LastEvaluatedKey"]}
    keys.sort(key=lambda k: k["sk"] != head["sk"])
    for key in keys:
        params = {"TableName": table, "Key": {"pk": key["pk"], "sk": key["sk"]}}
        yield Call("delete_item", params, f"table {table!r}", "DeleteItem", "dynamodb")


def table_letters_flow(
    sink: Any, app: str, options: RedriveOptions, report: RedriveReport
) -> Generator[Any, Any, None]:
    """Apply the chosen letters of the table; delete those applied."""
    table = options.source.where
    letters = yield from read_dead_letters_flow(table, app)
    chosen = [letter for letter in letters if letter.reason in options.reasons]
    for letter in chosen[: options.max_items]:
        if options.dry_run:
            item = RedriveItem(letter_label(letter), Outcome.WOULD_REDRIVE, letter_detail(letter))
            report.items.append(item)
            continue
        applied = yield from apply_flow(sink, [letter.record])
        outcome = outcome_of(applied)
        if outcome is Outcome.FAILED_AGAIN:
            report.items.append(RedriveItem(letter_label(letter), outcome, applied.failed[0]))
            continue
        yield from delete_table_letter_flow(table, letter)
        report.items.append(RedriveItem(letter_label(letter), outcome, removed=True))

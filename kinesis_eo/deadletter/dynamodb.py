"""Dead letters to a DynamoDB table: one item per letter, sorted by position within its shard.

The partition key is the consumer group, stream and shard, the sort key the
record's position, so a resend overwrites. A payload over the item limit goes
in part items written before the head item, which is the letter's commit mark;
:func:`read_dead_letters` reads letters back whole and ignores parts without a
head.
"""

from __future__ import annotations

import json
import random
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from kinesis_eo.deadletter.base import (
    AsyncDeadLetterSender,
    DeadLetterSender,
    LetterBatches,
    TargetBase,
    send_letters_flow,
)
from kinesis_eo.deadletter.letter import (
    DOCUMENT_VERSION,
    MAX_ERROR_CHARS,
    DeadLetter,
    IncompleteDeadLetterError,
    iso_time,
    joins_to,
    letter_from_fields,
    payload_chunks,
    payload_digest,
)
from kinesis_eo.errors import InvalidRecordError
from kinesis_eo.flow import Call, run_async, run_sync
from kinesis_eo.retry import RetryConfig
from kinesis_eo.tables import create_table_flow

__all__ = [
    "AsyncDynamoDBDeadLetterTable",
    "DynamoDBDeadLetterConfig",
    "DynamoDBDeadLetterTable",
    "acreate_dead_letter_table",
    "aread_dead_letters",
    "create_dead_letter_table",
    "create_dead_letter_table_flow",
    "read_dead_letters",
    "read_dead_letters_flow",
    "table_items",
    "write_to_table_flow",
]

DYNAMODB_MAX_BATCH_ITEMS = 25


@dataclass(frozen=True, slots=True)
class DynamoDBDeadLetterConfig:
    """Size limits and retry policy for a DynamoDB dead-letter table.

    DynamoDB allows 400 KB per item, names included (AWS accepts 409,600
    bytes, moto 5.2 405,000); ``max_item_bytes`` stays under both.
    ``part_data_bytes`` is the payload per part item, fixed so that a resend
    cuts the payload at the same places. ``max_request_bytes`` bounds the JSON
    of one BatchWriteItem request (binary travels as base64): aiohttp, under
    aiobotocore, copies a larger body on the event loop and warns about it
    above 1 MiB. ``item_retry`` governs items a batch returned unprocessed;
    ``call_retry`` calls that failed as a whole.
    """

    max_item_bytes: int = 400_000
    part_data_bytes: int = 380_000
    max_request_bytes: int = 1_040_000
    item_retry: RetryConfig = field(default_factory=lambda: RetryConfig(max_attempts=10))
    call_retry: RetryConfig = field(default_factory=RetryConfig)

    def __post_init__(self) -> None:
        if not 1 <= self.part_data_bytes < self.max_item_bytes:
            raise ValueError("need 1 <= part_data_bytes < max_item_bytes")
        if self.max_request_bytes < 1:
            raise ValueError("max_request_bytes must be at least 1")


def _table_pk(letter: DeadLetter) -> str:
    return f"{letter.consumer_group}#{letter.record.stream}#{letter.record.shard_id}"


def _part_sk(head_sk: str, part: int) -> str:
    return f"{head_sk}#part-{part:04d}"


def _attribute_size(value: Mapping[str, Any]) -> int:
    ((kind, content),) = value.items()
    if kind == "S":
        return len(str(content).encode("utf-8", "surrogatepass"))
    if kind == "B":
        return len(content)
    if kind == "N":
        # DynamoDB stores about two digits a byte plus one; the text length bounds it.
        return len(str(content)) + 1
    return 1


def _item_size(item: Mapping[str, Mapping[str, Any]]) -> int:
    return sum(len(name.encode("utf-8")) + _attribute_size(v) for name, v in item.items())


def _wire_size(item: Mapping[str, Mapping[str, Any]]) -> int:
    """About how many bytes ``item`` takes in a BatchWriteItem request's JSON."""
    total = 40  # {"PutRequest":{"Item":{...}}} and separators
    for name, value in item.items():
        ((kind, content),) = value.items()
        if kind == "B":
            size = -(-len(content) // 3) * 4
        elif kind == "S":
            size = len(json.dumps(content))
        else:
            size = len(str(content)) + 2
        total += len(json.dumps(name)) + len(kind) + size + 10
    return total


def table_items(letter: DeadLetter, config: DynamoDBDeadLetterConfig) -> list[dict[str, Any]]:
    """The items for ``letter``: its part items (if any) first, its head item last.

    The head item (``sk`` = position key) holds every field; the payload is in
    its ``data`` when the item fits, else in ``parts`` part items whose ``sk``
    extends the head's with ``#part-0001``..., and the head holds the payload's
    ``data_bytes`` and ``data_sha256``.
    """
    record = letter.record
    pk = _table_pk(letter)
    sk = letter.position.key()
    head: dict[str, Any] = {
        "pk": {"S": pk},
        "sk": {"S": sk},
        "letter_id": {"S": letter.letter_id},
        "version": {"N": str(DOCUMENT_VERSION)},
        "consumer_group": {"S": letter.consumer_group},
        "stream": {"S": record.stream},
        "shard_id": {"S": record.shard_id},
        "sequence_number": {"S": record.sequence_number},
        "sub_sequence_number": {"N": str(record.sub_sequence_number)},
        "partition_key": {"S": record.partition_key},
        "aggregated": {"BOOL": record.aggregated},
        "reason": {"S": letter.reason.value},
        "error": {"S": letter.error},
        "attempts": {"N": str(letter.attempts)},
        "failed_at": {"S": letter.failed_at.isoformat()},
    }
    optional = {
        "explicit_hash_key": record.explicit_hash_key,
        "event_id": record.event_id,
        "event_namespace": record.event_namespace,
        "arrival_time": iso_time(record.arrival_time),
        "deaggregation_error": record.deaggregation_error,
        "encryption_type": record.encryption_type,
    }
    head.update({name: {"S": value} for name, value in optional.items() if value is not None})
    inline = {**head, "parts": {"N": "0"}, "data": {"B": record.data}}
    if _item_size(inline) <= config.max_item_bytes:
        return [inline]
    data = record.data
    chunks = payload_chunks(data, config.part_data_bytes)
    parts = len(chunks)
    head.update(
        parts={"N": str(parts)},
        data_bytes={"N": str(len(data))},
        data_sha256={"S": payload_digest(data)},
    )
    items: list[dict[str, Any]] = []
    for index, chunk in enumerate(chunks):
        items.append(
            {
                "pk": {"S": pk},
                "sk": {"S": _part_sk(sk, index + 1)},
                "letter_id": {"S": letter.letter_id},
                "consumer_group": {"S": letter.consumer_group},
                "part": {"N": str(index + 1)},
                "parts": {"N": str(parts)},
                "data": {"B": chunk},
            }
        )
    items.append(head)
    for item in items:
        if _item_size(item) > config.max_item_bytes:
            raise InvalidRecordError(
                f"the dead letter for {letter.describe()} cannot be written to DynamoDB: an "
                f"item of it takes {_item_size(item)} bytes without the payload, over "
                f"max_item_bytes ({config.max_item_bytes}); the error text is "
                f"{len(letter.error)} characters (DeadLetter.from_exception cuts it to "
                f"{MAX_ERROR_CHARS})"
            )
    return items


class _TableBatches(LetterBatches[dict[str, Any]]):
    noun = "item"
    stored = "written to"

    def __init__(self, table_name: str, config: DynamoDBDeadLetterConfig) -> None:
        self.table_name = table_name
        self.config = config
        self.resource = f"table {table_name!r}"
        self.max_batch_entries = DYNAMODB_MAX_BATCH_ITEMS
        self.max_batch_bytes = config.max_request_bytes
        self.entry_retry = config.item_retry

    def phases(self, letters: Sequence[DeadLetter]) -> list[list[dict[str, Any]]]:
        # BatchWriteItem refuses two writes to one key in a call: the last copy wins.
        by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for letter in letters:
            by_key[(_table_pk(letter), letter.position.key())] = table_items(letter, self.config)
        parts = [item for items in by_key.values() for item in items[:-1]]
        heads = [items[-1] for items in by_key.values()]
        return [parts, heads]

    def size(self, entry: dict[str, Any]) -> int:
        return _wire_size(entry)

    def call(self, entries: Sequence[dict[str, Any]]) -> Call:
        requests = [{"PutRequest": {"Item": item}} for item in entries]
        params = {"RequestItems": {self.table_name: requests}}
        return Call("batch_write_item", params, self.resource, "BatchWriteItem", "dynamodb")

    def unsent(
        self, entries: Sequence[dict[str, Any]], response: Mapping[str, Any]
    ) -> tuple[list[dict[str, Any]], dict[str, str]]:
        unprocessed = (response.get("UnprocessedItems") or {}).get(self.table_name) or []
        pending: list[dict[str, Any]] = [r["PutRequest"]["Item"] for r in unprocessed]
        failures = {f"{i['pk']['S']} {i['sk']['S']}": "unprocessed" for i in pending}
        return pending, failures


def write_to_table_flow(
    letters: Sequence[DeadLetter],
    table_name: str,
    config: DynamoDBDeadLetterConfig,
    rng: random.Random | None = None,
) -> Generator[Any, Any, int]:
    """Write every letter to the table; returns the number of BatchWriteItem calls.

    Why BatchWriteItem and not TransactWriteItems: the head item is written
    only after every part item of every letter in the call is stored, so it
    acts as the commit mark (the reader ignores parts without a head), which
    gives the atomic appearance a transaction would at half the write cost,
    for any number of parts (a transaction stops at 100 items and 4 MB), and
    with up to 25 items of several letters per call. A crash between the two
    phases leaves parts without a head, which the resend overwrites.
    Every key is a function of the letter, so a resend overwrites, never adds.
    """
    return send_letters_flow(_TableBatches(table_name, config), letters, rng)


class _TableTarget(TargetBase[DynamoDBDeadLetterConfig]):
    def __init__(
        self,
        client: Any,
        table_name: str,
        config: DynamoDBDeadLetterConfig | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        if not table_name:
            raise ValueError("a table name is needed")
        super().__init__(client, config or DynamoDBDeadLetterConfig(), rng)
        self.table_name = table_name

    def _batches(self) -> _TableBatches:
        return _TableBatches(self.table_name, self.config)


class DynamoDBDeadLetterTable(DeadLetterSender[DynamoDBDeadLetterConfig], _TableTarget):
    """Dead letters to a DynamoDB table (see :func:`create_dead_letter_table`), boto3 client."""


class AsyncDynamoDBDeadLetterTable(AsyncDeadLetterSender[DynamoDBDeadLetterConfig], _TableTarget):
    """Dead letters to a DynamoDB table, with an aiobotocore (or aioboto3) client."""


# --- reading the table and creating it --------------------------------------------------------


def _plain(item: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    plain: dict[str, Any] = {}
    for name, value in item.items():
        ((kind, content),) = value.items()
        plain[name] = int(content) if kind == "N" else content
    return plain


def _letters_from_items(items: Sequence[Mapping[str, Any]], table_name: str) -> list[DeadLetter]:
    heads: list[dict[str, Any]] = []
    chunks: dict[tuple[str, str], bytes] = {}
    for raw in items:
        item = _plain(raw)
        if "part" in item:
            chunks[(item["pk"], item["sk"])] = bytes(item["data"])
        else:
            heads.append(item)
    heads.sort(key=lambda h: (h["pk"], h["sk"]))
    letters = []
    for head in heads:
        parts = int(head.get("parts", 0))
        if parts == 0:
            data = bytes(head["data"])
        else:
            keys = [(head["pk"], _part_sk(head["sk"], n)) for n in range(1, parts + 1)]
            missing = [n for n, key in enumerate(keys, 1) if key not in chunks]
            if missing:
                raise IncompleteDeadLetterError(
                    f"dead letter {head['pk']} {head['sk']} in table {table_name!r} lacks "
                    f"parts {missing} of {parts}",
                    missing={str(head.get("letter_id", head["sk"])): missing},
                )
            data = b"".join(chunks[key] for key in keys)
            if not joins_to(data, head.get("data_bytes"), head.get("data_sha256")):
                raise InvalidRecordError(
                    f"dead letter {head['pk']} {head['sk']} in table {table_name!r}: its "
                    f"parts do not join to the payload it was written with"
                )
        letters.append(letter_from_fields(head, data))
    return letters


def read_dead_letters_flow(
    table_name: str, consumer_group: str | None = None
) -> Generator[Any, Any, list[DeadLetter]]:
    """Every letter in the table (of one consumer group), by group, stream, shard, position.

    A Scan: a dead-letter table is small and read by people and re-drive
    tools, and a group's letters span one partition key per shard.
    """
    resource = f"table {table_name!r}"
    params: dict[str, Any] = {"TableName": table_name, "ConsistentRead": True}
    if consumer_group is not None:
        params["FilterExpression"] = "consumer_group = :group"
        params["ExpressionAttributeValues"] = {":group": {"S": consumer_group}}
    items: list[Mapping[str, Any]] = []
    while True:
        response = yield Call("scan", params, resource, "Scan", "dynamodb")
        items.extend(response.get("Items") or [])
        last = response.get("LastEvaluatedKey")
        if not last:
            break
        params = {**params, "ExclusiveStartKey": last}
    return _letters_from_items(items, table_name)


def read_dead_letters(
    client: Any,
    table_name: str,
    consumer_group: str | None = None,
    *,
    retry: RetryConfig | None = None,
) -> list[DeadLetter]:
    """The dead letters in a table, payloads whole, with a boto3 client."""
    flow = read_dead_letters_flow(table_name, consumer_group)
    return cast(list[DeadLetter], run_sync(flow, client, retry or RetryConfig()))


async def aread_dead_letters(
    client: Any,
    table_name: str,
    consumer_group: str | None = None,
    *,
    retry: RetryConfig | None = None,
) -> list[DeadLetter]:
    """:func:`read_dead_letters` with an aiobotocore client."""
    flow = read_dead_letters_flow(table_name, consumer_group)
    return cast(list[DeadLetter], await run_async(flow, client, retry or RetryConfig()))


def create_dead_letter_table_flow(
    table_name: str, *, wait_s: float = 300.0, poll_s: float = 2.0
) -> Generator[Any, Any, None]:
    """Create the table (on-demand billing) unless it exists, then wait until it is ACTIVE."""
    return create_table_flow(
        table_name, [("pk", "HASH"), ("sk", "RANGE")], wait_s=wait_s, poll_s=poll_s
    )


def create_dead_letter_table(client: Any, table_name: str, *, wait_s: float = 300.0) -> None:
    """Create a dead-letter table with a boto3 client; harmless if it exists."""
    run_sync(create_dead_letter_table_flow(table_name, wait_s=wait_s), client, RetryConfig())


async def acreate_dead_letter_table(client: Any, table_name: str, *, wait_s: float = 300.0) -> None:
    """:func:`create_dead_letter_table` with an aiobotocore client."""
    await run_async(create_dead_letter_table_flow(table_name, wait_s=wait_s), client, RetryConfig())

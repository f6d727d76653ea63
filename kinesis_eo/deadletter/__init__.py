"""Dead-letter targets: where a poison record goes, whole, before the shard moves on.

A record that keeps failing (or cannot be decoded, or collides with another
payload under the same event id, or has a quarantined claim) is written to a
dead-letter target with its full payload, the error and its position, and only
after the target confirmed the write is the record marked done. A record that
cannot be dead-lettered is an error that stops the shard; it is never dropped.

Every letter has a stable id (:attr:`DeadLetter.letter_id`) derived from the
consumer group and the record's position, so that sending the same letter again
after a crash overwrites (DynamoDB), is deduplicated (SQS FIFO) or is
recognised as a copy by the reader (:func:`reassemble` on a standard queue).

Targets, each a sync and an async class over one send flow (:mod:`kinesis_eo.flow`,
:mod:`kinesis_eo.deadletter.base`):

- :class:`SqsDeadLetterQueue` / :class:`AsyncSqsDeadLetterQueue`: one JSON
  message per letter, or ordered parts when the payload does not fit one
  message; :func:`reassemble` puts them back together.
- :class:`DynamoDBDeadLetterTable` / :class:`AsyncDynamoDBDeadLetterTable`:
  one item per letter sorted by position within its shard, with part items for
  payloads over the item limit; :func:`read_dead_letters` reads them back.
- :mod:`kinesis_eo.testing.fakes` holds in-memory targets for tests.

The letter and its document are in :mod:`~kinesis_eo.deadletter.letter`.
"""

from __future__ import annotations

from kinesis_eo.deadletter.base import (
    AsyncDeadLetterTarget,
    DeadLetterSendError,
    DeadLetterTarget,
)
from kinesis_eo.deadletter.dynamodb import (
    AsyncDynamoDBDeadLetterTable,
    DynamoDBDeadLetterConfig,
    DynamoDBDeadLetterTable,
    acreate_dead_letter_table,
    aread_dead_letters,
    create_dead_letter_table,
    create_dead_letter_table_flow,
    read_dead_letters,
    read_dead_letters_flow,
    table_items,
    write_to_table_flow,
)
from kinesis_eo.deadletter.letter import (
    DOCUMENT_VERSION,
    MAX_ERROR_CHARS,
    DeadLetter,
    DeadLetterAssembler,
    DeadLetterReason,
    IncompleteDeadLetterError,
    describe_error,
    reassemble,
)
from kinesis_eo.deadletter.sqs import (
    AsyncSqsDeadLetterQueue,
    SqsDeadLetterConfig,
    SqsDeadLetterQueue,
    SqsMessage,
    send_to_sqs_flow,
    sqs_messages,
)

__all__ = [
    "DOCUMENT_VERSION",
    "MAX_ERROR_CHARS",
    "AsyncDeadLetterTarget",
    "AsyncDynamoDBDeadLetterTable",
    "AsyncSqsDeadLetterQueue",
    "DeadLetter",
    "DeadLetterAssembler",
    "DeadLetterReason",
    "DeadLetterSendError",
    "DeadLetterTarget",
    "DynamoDBDeadLetterConfig",
    "DynamoDBDeadLetterTable",
    "IncompleteDeadLetterError",
    "SqsDeadLetterConfig",
    "SqsDeadLetterQueue",
    "SqsMessage",
    "acreate_dead_letter_table",
    "aread_dead_letters",
    "create_dead_letter_table",
    "create_dead_letter_table_flow",
    "describe_error",
    "read_dead_letters",
    "read_dead_letters_flow",
    "reassemble",
    "send_to_sqs_flow",
    "sqs_messages",
    "table_items",
    "write_to_table_flow",
]

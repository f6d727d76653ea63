"""Redrive: apply records that were set aside again, through the exactly-once machinery.

Three sources, each named ``KIND:WHERE`` (:meth:`RedriveSource.parse`):

- ``sqs:QUEUE_URL``: dead letters that :class:`~kinesis_eo.deadletter.SqsDeadLetterQueue`
  sent. The whole queue (up to ``max_items`` letters) is received before anything
  is applied, because a large letter comes in parts that may arrive in any order;
  :class:`~kinesis_eo.deadletter.DeadLetterAssembler` joins them and recognises copies.
- ``dynamodb:TABLE``: dead letters that :class:`~kinesis_eo.deadletter.DynamoDBDeadLetterTable`
  wrote, read whole (part items joined) by :func:`~kinesis_eo.deadletter.read_dead_letters_flow`.
- ``on-failure:QUEUE_URL``: what a Lambda event source mapping sends to its SQS
  on-failure destination when it gives up on a batch: no payload, only where
  the batch lay (:mod:`kinesis_eo.on_failure` documents the shape). The records
  are read again from the stream, while it still holds them, and applied.

The ledger, and why redriving is exactly once:

- A dead letter's record already holds a ``DEAD_LETTERED`` mark (per-record
  mode) or lies below its shard's watermark, so the consumer's own ledger would
  call it a duplicate. Letters are therefore applied under their own scope: a
  per-record ledger in the same table under the consumer group ``APP-redrive``
  (:func:`redrive_group`), keyed as the consumer keys records (the event id, else
  the position). Redriving a letter twice, or two copies of it, applies it once.
  The handler still gets the idempotency key of ``APP``, so a target that
  deduplicates by it recognises what the failed attempts may have left there.
- A letter whose handler fails again is left in its queue or table, as it was,
  and no mark is written, so that it can be redriven once the handler is fixed.
  (Dead-lettering it again would mark it done in ``APP-redrive`` and no later
  redrive could apply it.)
- On-failure records were never marked by the consumer, and some records of the
  range may have been applied before the mapping gave up, or may still be
  delivered by it: they are applied through ``APP``'s own per-record ledger,
  which knows both and lets only one of any two deliveries through. A watermark
  ledger cannot say which records below it were applied, so that source needs
  ``mode="per-record"``. A record of the range that fails again is dead-lettered
  with its payload when a dead-letter target is configured, else its message stays.
- A letter, or an on-failure message, is removed from its source only after the
  effects and marks of its records are committed; a crash in between leaves it,
  and the next redrive finds it already applied and removes it. The redrive marks
  live as long as the ledger's TTL (8 days): redrive what such a crash leaves
  behind within that time.
"""

from kinesis_eo.redrive.driver import build_redrive_sink, redrive, redrive_flow
from kinesis_eo.redrive.options import (
    REDRIVE_SUFFIX,
    RedriveOptions,
    RedriveSource,
    SourceKind,
    redrive_group,
)
from kinesis_eo.redrive.report import Outcome, RedriveItem, RedriveReport

__all__ = [
    "REDRIVE_SUFFIX",
    "Outcome",
    "RedriveItem",
    "RedriveOptions",
    "RedriveReport",
    "RedriveSource",
    "SourceKind",
    "build_redrive_sink",
    "redrive",
    "redrive_flow",
    "redrive_group",
]

"""The idempotent-key sink: effects in an external system that deduplicates by key.

S3 objects with deterministic keys, SQS FIFO deduplication ids, HTTP APIs
that honour ``Idempotency-Key``: the handler gets a stable key per record,
is called at least once, and the ledger is marked after it returned. A crash
between the call and the mark repeats the call with the same key, which the
external system absorbs.
"""

from __future__ import annotations

from kinesis_eo.sinks.base import SinkBase

__all__ = [
    "IdempotentKeySink",
]


class IdempotentKeySink(SinkBase):
    """Calls ``handler(record, ctx)`` or ``batch_handler(records, contexts)``, then marks.

    Everything is :class:`SinkBase`'s: the handler's success is the mark, its
    failure the dead letter.
    """

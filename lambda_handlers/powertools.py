"""Keeping Powertools' ``BatchProcessor`` and adding the ledger: a record handler for it.

A function written with Powertools for AWS Lambda::

    processor = BatchProcessor(event_type=EventType.KinesisDataStreams)

    def handler(event, context):
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )

keeps that shape and gets exactly-once effects by making its record handler
:func:`powertools_record_handler` of a :class:`~lambda_handlers.KinesisHandler`:
each record goes through the handler's ledger, sink and dead-letter target;
a record the handler defers (it failed, and has deliveries left) raises
:class:`RecordDeferredError`, which Powertools reports in ``batchItemFailures``.
Records after it that Powertools goes on with are marked done, and come back
as duplicates when the mapping delivers from the failed one again.

Each record is committed alone, so a watermark ledger writes once per record
rather than once per batch; :class:`~lambda_handlers.KinesisHandler` as the
entry point itself does the batch in one write. Powertools is not imported here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kinesis_eo.errors import KinesisEOError

if TYPE_CHECKING:
    from lambda_handlers.handler import KinesisHandler

__all__ = ["RecordDeferredError", "powertools_record_handler"]


class RecordDeferredError(KinesisEOError):
    """A record failed and is left for the mapping's next delivery (not dead-lettered yet)."""


def powertools_record_handler(handler: KinesisHandler) -> Callable[..., None]:
    """A ``record_handler`` for Powertools' ``BatchProcessor`` that applies through ``handler``.

    It takes Powertools' ``KinesisStreamRecord`` (or the record's dict from the
    event) and the ``lambda_context`` Powertools hands to record handlers that
    ask for it, so that the handler stops before the function's deadline.
    """

    def record_handler(record: Any, lambda_context: Any = None) -> None:
        raw = getattr(record, "raw_event", record)
        response = handler({"Records": [raw]}, lambda_context)
        if response.get("batchItemFailures"):
            raise RecordDeferredError(
                f"{raw.get('eventID')} failed and is left for the next delivery"
            )

    return record_handler

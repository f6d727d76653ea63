"""Metrics of the Lambda handler: recorded per invocation, published once at its end.

The handler records the catalogue's metrics per shard into a back-end
(``metrics=build_metrics("emf", ...)``: EMF lines on stdout, which Lambda
turns into CloudWatch metrics), or hands them to the user's Powertools
``Metrics`` object (``powertools_metrics=``), whose document then carries
them, so that one invocation does not write two documents.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from kinesis_eo.errors import ConfigurationError
from kinesis_eo.ledger import Ledger
from kinesis_eo.metrics import EmfBackend, Metrics, Recorder
from kinesis_eo.metrics.catalogue import APP
from kinesis_eo.metrics.emf import PowertoolsMetrics
from kinesis_eo.metrics.hooks import attach_call_metrics
from kinesis_eo.metrics.run import RunMetrics
from kinesis_eo.records import Record
from kinesis_eo.sinks import BatchReport
from lambda_handlers.events import ShardDelivery

__all__ = ["InvocationMetrics", "lambda_metrics"]

log = logging.getLogger(__name__)

# Unused when values go to Powertools (its object's namespace applies), but a back-end needs one.
_POWERTOOLS_NAMESPACE = "KinesisEO"


def lambda_metrics(
    ledger: Ledger, metrics: Metrics | None, powertools_metrics: PowertoolsMetrics | None
) -> Metrics | None:
    """The back-end a handler records into: ``metrics``, or, with only Powertools given, an
    EMF recorder whose values go to Powertools at the end of each invocation."""
    if powertools_metrics is None:
        return metrics
    if metrics is None:
        return EmfBackend(
            Recorder({APP: ledger.config.consumer_group}), namespace=_POWERTOOLS_NAMESPACE
        )
    if not callable(getattr(metrics, "into_powertools", None)):
        raise ConfigurationError(
            "powertools_metrics needs an EMF metrics back-end to hand its values over, "
            f"not {type(metrics).__name__}: pass metrics=build_metrics('emf', ...) or leave "
            "metrics out"
        )
    return metrics


class InvocationMetrics:
    """A handler's recording: ``record`` (totals over this execution environment's
    invocations, and the back-end), published at the end of every invocation."""

    def __init__(
        self,
        ledger: Ledger,
        dynamodb: Any,
        metrics: Metrics | None,
        powertools_metrics: PowertoolsMetrics | None,
    ) -> None:
        self.record = RunMetrics(lambda_metrics(ledger, metrics, powertools_metrics))
        self.powertools_metrics = powertools_metrics
        if self.record.enabled:
            attach_call_metrics(dynamodb, self.record.metrics)

    def invocation(
        self,
        deliveries: Sequence[ShardDelivery],
        lanes: Sequence[Sequence[Record]],
        reports: Sequence[BatchReport],
    ) -> None:
        """What one invocation read and did, per shard."""
        for delivery in deliveries:
            # The event does not say how far behind the stream's tip the batch is.
            self.record.read(delivery.shard_id, delivery.records, None)
        for lane, report in zip(lanes, reports, strict=True):
            shard = lane[0].shard_id
            self.record.processed(shard, report)
            if report.outage is not None:
                # The rest of the lane goes back to the event source mapping.
                self.record.outage_pause(shard)

    def publish(self) -> None:
        """Once per invocation, at its end: into Powertools' document, or as EMF lines."""
        if self.powertools_metrics is None:
            self.record.flush()
            return
        into_powertools: Any = getattr(self.record.metrics, "into_powertools")  # noqa: B009
        try:
            into_powertools(self.powertools_metrics)
        except Exception:
            log.exception("handing metrics to Powertools failed; the invocation goes on")

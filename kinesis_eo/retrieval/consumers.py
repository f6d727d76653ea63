"""Enhanced fan-out consumers: registered on a stream, named, waited on until ACTIVE.

A subscription (:mod:`kinesis_eo.retrieval.subscription`) reads through a
registered *stream consumer*. :func:`ensure_consumer_flow` finds it by name or
registers it, and is safe when many workers start at once: a register that
fails with ``ResourceInUseException`` means another worker registered the same
name first, so the name is described again. AWS allows 5 registrations per
second per account (a ``LimitExceededException`` is backed off and retried) and
20 consumers per stream (that ``LimitExceededException`` is a configuration
error: no retry can mend it).

The flows run under the sync and asyncio drivers alike; :func:`ensure_consumer`
and friends are their boto3 front, :func:`aensure_consumer` the aiobotocore one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kinesis_eo.errors import (
    AwsCallError,
    ConfigurationError,
    ResourceNotFoundError,
    ThrottledError,
)
from kinesis_eo.flow import Call, Sleep, run_async, run_sync
from kinesis_eo.retrieval.shards import StreamRef
from kinesis_eo.retry import RetryConfig, backoff_delay

__all__ = [
    "CONSUMERS_PER_STREAM",
    "REGISTER_RETRY",
    "ConsumerInfo",
    "aensure_consumer",
    "consumer_arn_flow",
    "deregister_consumer",
    "deregister_consumer_flow",
    "ensure_consumer",
    "ensure_consumer_flow",
    "is_consumer_arn",
    "list_consumers",
    "list_consumers_flow",
    "stream_arn_flow",
]

# RegisterStreamConsumer allows 5 calls per second per account: several workers starting
# together are throttled, and wait with jitter growing to a few seconds.
REGISTER_RETRY = RetryConfig(max_attempts=10, initial_backoff_s=0.2, max_backoff_s=5.0)
# Consumers per stream (50 with On-demand Advantage, where the count check comes later).
CONSUMERS_PER_STREAM = 20


@dataclass(frozen=True, slots=True)
class ConsumerInfo:
    """A registered stream consumer as DescribeStreamConsumer / ListStreamConsumers give it."""

    name: str
    arn: str
    status: str
    created: datetime | None = None

    @classmethod
    def from_aws(cls, item: dict[str, Any]) -> ConsumerInfo:
        """A consumer as DescribeStreamConsumer or ListStreamConsumers describes it."""
        return cls(
            name=item["ConsumerName"],
            arn=item["ConsumerARN"],
            status=item["ConsumerStatus"],
            created=item.get("ConsumerCreationTimestamp"),
        )


def is_consumer_arn(consumer: str) -> bool:
    """Whether ``consumer`` is a consumer ARN (``arn:...:stream/S/consumer/N:T``), not a name."""
    return consumer.startswith("arn:") and "/consumer/" in consumer


def _kinesis(method: str, params: dict[str, Any], resource: str, action: str) -> Call:
    return Call(method, params, resource, action, "kinesis")


def stream_arn_flow(stream: StreamRef) -> Generator[Any, Any, str]:
    """The ARN of ``stream`` (consumers are registered on ARNs, never on names)."""
    if stream.arn:
        return stream.arn
    response = yield _kinesis(
        "describe_stream_summary", stream.params(), str(stream), "DescribeStreamSummary"
    )
    arn: str = response["StreamDescriptionSummary"]["StreamARN"]
    return arn


def _describe(
    stream_arn: str, name: str, resource: str
) -> Generator[Any, Any, ConsumerInfo | None]:
    try:
        response = yield _kinesis(
            "describe_stream_consumer",
            {"StreamARN": stream_arn, "ConsumerName": name},
            resource,
            "DescribeStreamConsumer",
        )
    except ResourceNotFoundError:
        return None
    return ConsumerInfo.from_aws(response["ConsumerDescription"])


def _register(
    stream: StreamRef, stream_arn: str, name: str, resource: str
) -> Generator[Any, Any, bool]:
    """Register ``name``; False if another worker did it first."""
    for attempt in range(1, REGISTER_RETRY.max_attempts + 1):
        try:
            yield Call(
                "register_stream_consumer",
                {"StreamARN": stream_arn, "ConsumerName": name},
                resource,
                "RegisterStreamConsumer",
                "kinesis",
                retry=False,
            )
            return True
        except AwsCallError as exc:
            if exc.code == "ResourceInUseException":
                return False
            raise
        except ThrottledError as exc:
            # Both limits answer LimitExceededException: the count tells them apart.
            count = len((yield from list_consumers_flow(stream)))
            if count >= CONSUMERS_PER_STREAM:
                raise ConfigurationError(
                    f"{stream} has {count} enhanced fan-out consumers, as many as AWS allows, "
                    f"so consumer '{name}' cannot be registered: deregister one "
                    "(kinesis-eo efo deregister) or read by polling"
                ) from exc
            if attempt == REGISTER_RETRY.max_attempts:
                raise
            yield Sleep(backoff_delay(attempt, REGISTER_RETRY))
    raise AssertionError("the loop returns or raises")  # pragma: no cover


def ensure_consumer_flow(
    stream: StreamRef,
    name: str,
    *,
    timeout_s: float = 120.0,
    poll_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
) -> Generator[Any, Any, str]:
    """The ARN of consumer ``name`` on ``stream``, registered if absent, once it is ACTIVE."""
    stream_arn = yield from stream_arn_flow(stream)
    resource = f"consumer '{name}' of {stream}"
    deadline = clock() + timeout_s
    info = yield from _describe(stream_arn, name, resource)
    while info is None:
        yield from _register(stream, stream_arn, name, resource)
        info = yield from _describe(stream_arn, name, resource)
    while info.status != "ACTIVE":
        if info.status == "DELETING":
            raise ConfigurationError(
                f"{resource} is being deregistered; start again once it is gone"
            )
        if clock() >= deadline:
            raise ConfigurationError(
                f"{resource} did not become ACTIVE within {timeout_s:g} s (still {info.status})"
            )
        yield Sleep(poll_s)
        described = yield from _describe(stream_arn, name, resource)
        if described is None:
            raise ConfigurationError(f"{resource} was deregistered while it was being created")
        info = described
    return info.arn


def consumer_arn_flow(stream: StreamRef, consumer: str) -> Generator[Any, Any, str]:
    """The ARN of ``consumer``: an ARN as given, a name ensured (registered, ACTIVE)."""
    if is_consumer_arn(consumer):
        return consumer
    return (yield from ensure_consumer_flow(stream, consumer))


def deregister_consumer_flow(stream: StreamRef, name: str) -> Generator[Any, Any, bool]:
    """Deregister consumer ``name``; False if there was none."""
    stream_arn = yield from stream_arn_flow(stream)
    try:
        yield _kinesis(
            "deregister_stream_consumer",
            {"StreamARN": stream_arn, "ConsumerName": name},
            f"consumer '{name}' of {stream}",
            "DeregisterStreamConsumer",
        )
    except ResourceNotFoundError:
        return False
    return True


def list_consumers_flow(stream: StreamRef) -> Generator[Any, Any, list[ConsumerInfo]]:
    """Every consumer registered on ``stream``."""
    stream_arn = yield from stream_arn_flow(stream)
    consumers: list[ConsumerInfo] = []
    params: dict[str, Any] = {"StreamARN": stream_arn}
    while True:
        response = yield _kinesis(
            "list_stream_consumers", params, str(stream), "ListStreamConsumers"
        )
        consumers += [ConsumerInfo.from_aws(item) for item in response.get("Consumers", [])]
        token = response.get("NextToken")
        if not token:
            return consumers
        params = {"StreamARN": stream_arn, "NextToken": token}


def ensure_consumer(
    client: Any, stream: str | StreamRef, name: str, *, timeout_s: float = 120.0
) -> str:
    """:func:`ensure_consumer_flow` with a boto3 Kinesis client: the consumer's ARN."""
    flow = ensure_consumer_flow(StreamRef.of(stream), name, timeout_s=timeout_s)
    arn: str = run_sync(flow, client, RetryConfig())
    return arn


async def aensure_consumer(
    client: Any, stream: str | StreamRef, name: str, *, timeout_s: float = 120.0
) -> str:
    """:func:`ensure_consumer_flow` with an aiobotocore Kinesis client: the consumer's ARN."""
    flow = ensure_consumer_flow(StreamRef.of(stream), name, timeout_s=timeout_s)
    arn: str = await run_async(flow, client, RetryConfig())
    return arn


def deregister_consumer(client: Any, stream: str | StreamRef, name: str) -> bool:
    """Deregister consumer ``name`` (boto3); False if there was none."""
    done: bool = run_sync(
        deregister_consumer_flow(StreamRef.of(stream), name), client, RetryConfig()
    )
    return done


def list_consumers(client: Any, stream: str | StreamRef) -> list[ConsumerInfo]:
    """Every consumer registered on ``stream`` (boto3)."""
    found: list[ConsumerInfo] = run_sync(
        list_consumers_flow(StreamRef.of(stream)), client, RetryConfig()
    )
    return found

"""Registering enhanced fan-out consumers, on kinesis-mock (moto has no stream consumers' limits).

kinesis-mock answers a second RegisterStreamConsumer of one name with
ResourceInUseException and refuses a 21st consumer with LimitExceededException,
as AWS does.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.config import Config

from kinesis_eo.errors import ConfigurationError
from kinesis_eo.retrieval.consumers import (
    deregister_consumer,
    ensure_consumer,
    is_consumer_arn,
    list_consumers,
)
from kinesis_eo.testing.backends import KinesisMock
from tests.streams import new_stream

pytestmark = pytest.mark.kinesis_mock


def test_workers_starting_together_register_one_consumer_and_share_its_arn(
    kinesis_mock: Any,
) -> None:
    stream = new_stream(kinesis_mock.client(), 1)
    clients = [kinesis_mock.client() for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        arns = list(pool.map(lambda c: ensure_consumer(c, stream, "app"), clients))
    assert len(set(arns)) == 1
    assert is_consumer_arn(arns[0])
    (consumer,) = list_consumers(clients[0], stream)
    assert (consumer.name, consumer.arn, consumer.status) == ("app", arns[0], "ACTIVE")
    # Ensuring again finds it; deregistering removes it, once.
    assert ensure_consumer(clients[0], stream, "app") == arns[0]
    assert deregister_consumer(clients[0], stream, "app")
    assert not deregister_consumer(clients[0], stream, "app")


def test_a_stream_full_of_consumers_is_a_configuration_error_naming_the_stream(
    kinesis_mock: Any,
) -> None:
    # botocore would retry the refusal itself for seconds: one attempt shows ours.
    client = kinesis_mock.client(config=Config(proxies={}, retries={"total_max_attempts": 1}))
    stream = new_stream(client, 1)
    for i in range(20):
        ensure_consumer(client, stream, f"c{i:02d}")
    with pytest.raises(ConfigurationError, match=f"stream '{stream}' has 20 enhanced fan-out"):
        ensure_consumer(client, stream, "one-too-many")
    assert len(list_consumers(client, stream)) == 20


def test_a_consumer_that_stays_creating_fails_with_its_name_after_the_timeout() -> None:
    with KinesisMock(durations={"REGISTER_STREAM_CONSUMER_DURATION": "5s"}) as slow:
        client = slow.client()
        stream = new_stream(client, 1)
        with pytest.raises(ConfigurationError, match=r"consumer 'late' .* did not become ACTIVE"):
            ensure_consumer(client, stream, "late", timeout_s=1.0)

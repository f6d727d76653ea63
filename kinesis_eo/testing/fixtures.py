"""The pytest plugin's fixtures: in-process moto, a stream, the toolkit's tables, the ESM.

Registered by :mod:`kinesis_eo.testing.pytest_plugin` where moto is
importable (``pip install 'kinesis-eo[testing]'``). Each test gets a fresh
in-process moto (``mock_aws``) with fake credentials in the environment, so
clients your handler makes itself with ``boto3.client(...)`` land there too.
Nothing heavy is imported until a fixture is used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kinesis_eo.testing.resources import DeadLetterQueue, KinesisStream, SinkTable, Table

__all__ = [
    "REGION",
    "MotoAws",
    "checkpoint_table",
    "dead_letter_queue",
    "dead_letter_table",
    "event_source_mapping",
    "kinesis_eo_aws",
    "kinesis_stream",
    "lease_table",
    "ledger_table",
    "sink_table",
]

REGION = "us-east-1"
_FAKE_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}


class MotoAws:
    """The in-process moto of one test: boto3 clients on it, one per service."""

    def __init__(self) -> None:
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        """The boto3 client for ``service`` (made once per test)."""
        if service not in self._clients:
            import boto3

            self._clients[service] = boto3.client(service, region_name=REGION)
        return self._clients[service]

    @property
    def kinesis(self) -> Any:
        return self.client("kinesis")

    @property
    def dynamodb(self) -> Any:
        return self.client("dynamodb")

    @property
    def sqs(self) -> Any:
        return self.client("sqs")


@pytest.fixture
def kinesis_eo_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoAws]:
    """In-process moto with fake credentials; every other fixture of the plugin runs on it."""
    for name, value in _FAKE_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB"):
        monkeypatch.delenv(name, raising=False)
    from moto import mock_aws

    from kinesis_eo.testing.backends import serialize_moto_requests

    # A handler may run lanes in threads; moto itself is not thread-safe.
    serialize_moto_requests()
    with mock_aws():
        yield MotoAws()


@pytest.fixture
def kinesis_stream(kinesis_eo_aws: MotoAws) -> KinesisStream:
    """The stream ``kinesis-eo-test`` with 2 shards."""
    from kinesis_eo.testing.resources import make_stream

    return make_stream(kinesis_eo_aws.kinesis, "kinesis-eo-test", shards=2)


@pytest.fixture
def ledger_table(kinesis_eo_aws: MotoAws) -> Table:
    """The ledger table ``ledger`` (:class:`~kinesis_eo.ledger.DynamoDBLedgerStore`)."""
    from kinesis_eo.ledger import create_ledger_table

    create_ledger_table(kinesis_eo_aws.dynamodb, "ledger")
    return Table("ledger", kinesis_eo_aws.dynamodb)


@pytest.fixture
def lease_table(kinesis_eo_aws: MotoAws) -> Table:
    """The lease table ``leases`` (the KCL's schema), for a worker."""
    from kinesis_eo.leases import create_lease_table

    create_lease_table(kinesis_eo_aws.dynamodb, "leases")
    return Table("leases", kinesis_eo_aws.dynamodb)


@pytest.fixture
def checkpoint_table(kinesis_eo_aws: MotoAws) -> Table:
    """The checkpoint table ``checkpoints``, for a :class:`~kinesis_eo.Consumer`."""
    from kinesis_eo.checkpoint import create_checkpoint_table

    create_checkpoint_table(kinesis_eo_aws.dynamodb, "checkpoints")
    return Table("checkpoints", kinesis_eo_aws.dynamodb)


@pytest.fixture
def sink_table(kinesis_eo_aws: MotoAws) -> SinkTable:
    """The table ``effects``, keyed by the string ``id``: ``applied(event_id)`` reads it."""
    from kinesis_eo.testing.effects import create_effects_table

    create_effects_table(kinesis_eo_aws.dynamodb, "effects")
    return SinkTable("effects", kinesis_eo_aws.dynamodb)


@pytest.fixture
def dead_letter_table(kinesis_eo_aws: MotoAws) -> Table:
    """The dead-letter table ``dead-letters`` (:class:`~kinesis_eo.DynamoDBDeadLetterTable`)."""
    from kinesis_eo.deadletter import create_dead_letter_table

    create_dead_letter_table(kinesis_eo_aws.dynamodb, "dead-letters")
    return Table("dead-letters", kinesis_eo_aws.dynamodb)


@pytest.fixture
def dead_letter_queue(kinesis_eo_aws: MotoAws) -> DeadLetterQueue:
    """The SQS queue ``dead-letters``, for :class:`~kinesis_eo.deadletter.SqsDeadLetterQueue`."""
    from kinesis_eo.testing.resources import make_dead_letter_queue

    return make_dead_letter_queue(kinesis_eo_aws.sqs, "dead-letters")


@pytest.fixture
def event_source_mapping(kinesis_stream: KinesisStream) -> Callable[..., Any]:
    """``event_source_mapping(handler, config=None)``: an ESM over what the stream holds now.

    Returns :class:`~kinesis_eo.testing.lambda_esm.EventSourceMapping`; call
    ``.run()`` to deliver every record to ``handler(event, context)``.
    """
    from kinesis_eo.testing.lambda_esm import EsmConfig, EventSourceMapping

    def make(handler: Callable[[dict[str, Any], Any], Any], config: EsmConfig | None = None) -> Any:
        return EventSourceMapping(
            handler,
            kinesis_stream.records(),
            stream=kinesis_stream.name,
            config=config,
            region=kinesis_stream.region,
        )

    return make

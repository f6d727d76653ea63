"""aioboto3: the oldest versions the project claims, and aioboto3's resource API beside it.

scripts/test runs every test marked ``asyncio_clients`` a second time, in an environment of
its own with the ``aioboto3`` extra pinned to ``scripts/oldest-versions.txt`` and
``KINESIS_EO_ASYNC_CLIENTS=aioboto3``. The tests that need aioboto3 skip elsewhere; the check
that those pins are the lower bounds of ``pyproject.toml`` runs everywhere.
"""

from __future__ import annotations

import os
import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from kinesis_eo.checkpoint import MemoryCheckpointStore
from kinesis_eo.consumer import AsyncConsumer, ConsumerConfig
from kinesis_eo.ledger import (
    DynamoDBLedgerStore,
    Ledger,
    LedgerConfig,
    LedgerMode,
    create_ledger_table,
)
from kinesis_eo.records import Record
from kinesis_eo.retrieval import ReaderConfig
from kinesis_eo.retry import RetryConfig
from kinesis_eo.sinks import EffectContext, TransactionalSink, update
from kinesis_eo.testing.backends import MotoServer
from kinesis_eo.testing.effects import create_effects_table
from tests.conftest import ASYNC_CLIENTS_ENV, AsyncClientFactory
from tests.helpers import produce
from tests.streams import make_stream

ROOT = Path(__file__).resolve().parent.parent
QUICK = RetryConfig(max_attempts=4, initial_backoff_s=0.001, max_backoff_s=0.01)
CONFIG = ConsumerConfig(
    reader=ReaderConfig(max_records=40, min_read_interval_s=0.0, idle_interval_s=0.0),
    retry=QUICK,
    stop_when_caught_up=True,
)


def oldest_pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "scripts" / "oldest-versions.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, pinned = line.partition("==")
            pins[name.strip()] = pinned.strip()
    return pins


def claimed_lower_bounds() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    bounds: dict[str, str] = {}
    for text in [*project["dependencies"], *project["optional-dependencies"]["async"]]:
        requirement = Requirement(text)
        (lower,) = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        bounds[requirement.name] = lower
    return bounds


def test_the_oldest_version_pins_are_the_lower_bounds_pyproject_claims() -> None:
    pins, bounds = oldest_pins(), claimed_lower_bounds()
    assert set(bounds) == {"boto3", "tenacity", "aiobotocore"}
    assert {name: pins.get(name) for name in bounds} == bounds
    # boto3 X.Y.Z requires botocore X.Y.Z or newer: pinning both tests the oldest pair.
    assert pins["botocore"] == pins["boto3"]


@pytest.fixture
def aioboto3_session(async_client: AsyncClientFactory) -> Any:
    """The aioboto3 session behind ``async_client``; skips outside the aioboto3 run."""
    if os.environ.get(ASYNC_CLIENTS_ENV) != "aioboto3":
        pytest.skip(f"runs in scripts/test's aioboto3 environment ({ASYNC_CLIENTS_ENV}=aioboto3)")
    import aioboto3

    session = getattr(async_client, "__self__", None)
    assert isinstance(session, aioboto3.Session)
    return session


def test_the_aioboto3_run_has_the_oldest_versions_installed(aioboto3_session: Any) -> None:
    installed = {name: version(name) for name in oldest_pins()}
    assert installed == oldest_pins()


async def effect(record: Record, ctx: EffectContext) -> list[Any]:
    return [update("effects", {"id": record.event_id}, "ADD applied :one", values={":one": 1})]


@pytest.mark.asyncio
async def test_an_aioboto3_session_consumes_each_effect_once_beside_its_resource_api(
    moto_server_reset: MotoServer, aioboto3_session: Any
) -> None:
    sync_kinesis = moto_server_reset.client("kinesis")
    sync_dynamodb = moto_server_reset.client("dynamodb")
    make_stream(sync_kinesis, "orders", 2)
    create_ledger_table(sync_dynamodb, "ledger")
    create_effects_table(sync_dynamodb, "effects")
    ids = produce(sync_kinesis, "orders", 30, ids="o-{i}", data="order-{i}", keys=4)
    kwargs = moto_server_reset.client_kwargs()

    def consumer(kinesis: Any, dynamodb: Any) -> AsyncConsumer:
        config = LedgerConfig("orders", LedgerMode.PER_RECORD)
        ledger = Ledger(DynamoDBLedgerStore("ledger", QUICK), config)
        sink = TransactionalSink(ledger, effect)
        return AsyncConsumer(kinesis, dynamodb, "orders", sink, MemoryCheckpointStore(), CONFIG)

    # The toolkit takes clients from the same session; the resource stays with the code that
    # reads the effects. Not resource.meta.client: the resource makes it turn every attribute
    # value into a typed one, so the toolkit's typed values would be wrapped a second time.
    async with (
        aioboto3_session.client("kinesis", **kwargs) as kinesis,
        aioboto3_session.client("dynamodb", **kwargs) as dynamodb,
        aioboto3_session.resource("dynamodb", **kwargs) as resource,
    ):
        first = await consumer(kinesis, dynamodb).run()
        replay = await consumer(kinesis, dynamodb).run()
        table = await resource.Table("effects")
        items = (await table.scan())["Items"]

    assert {item["id"]: int(item["applied"]) for item in items} == dict.fromkeys(ids, 1)
    assert (first.applied, replay.applied, replay.duplicates) == (30, 0, 30)

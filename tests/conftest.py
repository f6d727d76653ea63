"""Shared fixtures: fake AWS credentials and the in-process moto back-end.

The HTTP back-ends (moto server, kinesis-mock) are added below by their own section.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import boto3
import pytest
import pytest_asyncio
from moto import mock_aws

from kinesis_eo.testing.backends import serialize_moto_requests

REGION = "us-east-1"


@pytest.fixture(autouse=True)
def _fake_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests never reach AWS: fixed fake credentials, no profile or IMDS lookups.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def moto_aws(_fake_aws_environment: None) -> Iterator[None]:
    # Worker tests call moto from several threads; moto itself is not thread-safe.
    serialize_moto_requests()
    with mock_aws():
        yield


@pytest.fixture
def kinesis(moto_aws: None) -> Any:
    """A boto3 Kinesis client on in-process moto."""
    return boto3.client("kinesis", region_name=REGION)


@pytest.fixture
def dynamodb(moto_aws: None) -> Any:
    """A boto3 DynamoDB client on in-process moto."""
    return boto3.client("dynamodb", region_name=REGION)


# --- HTTP back-ends: moto server and kinesis-mock ------------------------------------------
#
# Session-scoped: kinesis-mock takes about a second to start, and both keep
# state only in memory. They pass fixed fake credentials to every client they
# make, because session fixtures start before the function-scoped
# environment fixture above has run.

from kinesis_eo.testing.backends import EfoBridge, KinesisMock, MotoServer  # noqa: E402


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """moto's HTTP server on 127.0.0.1, shared by the session (see ``moto_server_reset``).

    It shares its data with in-process ``mock_aws``, which resets it on start and stop.
    """
    with MotoServer() as server:
        yield server


@pytest.fixture
def moto_server_reset(moto_server: MotoServer) -> MotoServer:
    """The moto server, emptied before this test."""
    moto_server.reset()
    return moto_server


# The asyncio tests run twice in scripts/test: with aiobotocore's own session (the `async`
# extra, newest botocore) and, in a second environment, with aioboto3's (the `aioboto3` extra,
# botocore 1.40). Both hand out aiobotocore clients, made by different code.
ASYNC_CLIENTS_ENV = "KINESIS_EO_ASYNC_CLIENTS"
ASYNC_CLIENT_PACKAGES = ("aiobotocore", "aioboto3")

AsyncClientFactory = Callable[..., AbstractAsyncContextManager[Any]]


def async_client_package() -> str:
    """Which package makes the asyncio clients: $KINESIS_EO_ASYNC_CLIENTS, else aiobotocore."""
    package = os.environ.get(ASYNC_CLIENTS_ENV) or "aiobotocore"
    if package not in ASYNC_CLIENT_PACKAGES:
        raise pytest.UsageError(
            f"${ASYNC_CLIENTS_ENV} is {package!r}; expected one of {ASYNC_CLIENT_PACKAGES}"
        )
    return package


@pytest.fixture
def async_client() -> AsyncClientFactory:
    """``async_client(service, **kwargs)``: an asyncio client as an async context manager.

    Made by ``aioboto3.Session().client`` when ``$KINESIS_EO_ASYNC_CLIENTS`` is ``aioboto3``
    (a missing aioboto3 is then an error, not a skip), else by aiobotocore's ``create_client``.
    """
    if async_client_package() == "aioboto3":
        import aioboto3

        return aioboto3.Session().client
    from aiobotocore.session import get_session

    return get_session().create_client


@pytest_asyncio.fixture
async def async_clients(
    moto_server_reset: MotoServer, async_client: AsyncClientFactory
) -> AsyncIterator[tuple[Any, Any]]:
    """Asyncio Kinesis and DynamoDB clients on the moto server, emptied before this test."""
    kwargs = moto_server_reset.client_kwargs()
    async with (
        async_client("kinesis", **kwargs) as kinesis,
        async_client("dynamodb", **kwargs) as dynamodb,
    ):
        yield kinesis, dynamodb


@pytest.fixture(scope="session")
def kinesis_mock() -> Iterator[KinesisMock]:
    """kinesis-mock on 127.0.0.1 with instant state changes, shared by the session.

    Without ``node_modules`` this fails with the instruction to run ``npm ci``:
    a skip would let a green suite hide that resharding was never tested.
    """
    with KinesisMock() as mock:
        yield mock


@pytest.fixture(scope="session")
def efo_bridge(kinesis_mock: KinesisMock) -> Iterator[EfoBridge]:
    """kinesis-mock through the proxy that adds the initial-response event botocore needs
    to read a SubscribeToShard stream (kinesis-mock omits it; nothing else is changed)."""
    with EfoBridge(kinesis_mock.plain_port) as bridge:
        yield bridge


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # So that `-m "not kinesis_mock"` leaves out every test that starts the emulator, and
    # `-m asyncio_clients` picks every test that makes asyncio clients (the aioboto3 run).
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "kinesis_mock" in fixtures:
            item.add_marker(pytest.mark.kinesis_mock)
        if "async_client" in fixtures:
            item.add_marker(pytest.mark.asyncio_clients)

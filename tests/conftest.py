"""Shared fixtures: fake AWS credentials and the in-process moto back-end.

The HTTP back-ends (moto server, kinesis-mock) are added below by their own section.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

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

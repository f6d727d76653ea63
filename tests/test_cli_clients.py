"""The clients ``kinesis-eo run`` makes: cheaper to drive, sent where boto3's own would go."""

from __future__ import annotations

import argparse
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from kinesis_eo.cli import _aws_clients

ACCOUNT_TABLE = "arn:aws:dynamodb:us-east-1:111122223333:table/orders"
OTHER_ACCOUNT_TABLE = "arn:aws:dynamodb:us-east-1:444455556666:table/ledger"


class _Raw:
    def stream(self, **_: Any) -> Any:
        yield b"{}"


def _sent_to(client: Any) -> list[str]:
    urls: list[str] = []

    def answer(request: Any, **_: Any) -> AWSResponse:
        urls.append(request.url)
        return AWSResponse(request.url, 200, {}, _Raw())

    client.meta.events.register("before-send", answer)
    return urls


def _update(table: str, key: str) -> dict[str, Any]:
    return {
        "Update": {
            "TableName": table,
            "Key": {"id": {"S": key}},
            "UpdateExpression": "SET n = :n",
            "ExpressionAttributeValues": {":n": {"N": "1"}},
        }
    }


@pytest.mark.parametrize(
    "tables",
    [
        [ACCOUNT_TABLE, OTHER_ACCOUNT_TABLE, "plain"],
        [OTHER_ACCOUNT_TABLE, ACCOUNT_TABLE],
        ["plain", ACCOUNT_TABLE],
    ],
)
def test_a_transaction_goes_to_the_endpoint_boto3_picks_from_its_first_tables_account(
    monkeypatch: pytest.MonkeyPatch, tables: list[str]
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_ACCOUNT_ID", "777788889999")
    args = argparse.Namespace(region="us-east-1", endpoint_url=None)
    (ours,) = _aws_clients(args, "dynamodb")
    stock = boto3.session.Session(region_name="us-east-1").client("dynamodb")
    ours_sent, stock_sent = _sent_to(ours), _sent_to(stock)
    items = [_update(table, str(i)) for i, table in enumerate(tables)]

    ours.transact_write_items(TransactItems=items)
    stock.transact_write_items(TransactItems=items)
    ours.transact_get_items(
        TransactItems=[{"Get": {"TableName": t, "Key": {"id": {"S": "1"}}}} for t in tables]
    )
    stock.transact_get_items(
        TransactItems=[{"Get": {"TableName": t, "Key": {"id": {"S": "1"}}}} for t in tables]
    )

    assert ours_sent == stock_sent
    # DynamoDB's rules route by the first table's account when it is an ARN.
    first_account = tables[0].split(":")[4] if tables[0].startswith("arn:") else "777788889999"
    assert ours_sent[0] == f"https://{first_account}.ddb.us-east-1.amazonaws.com/"


def test_the_clients_resolve_a_transactions_endpoint_from_its_first_item_only() -> None:
    args = argparse.Namespace(region="us-east-1", endpoint_url=None)
    (ours,) = _aws_clients(args, "dynamodb")
    model = ours.meta.service_model
    paths = {
        name: model.operation_model(name).operation_context_parameters["ResourceArnList"]["path"]
        for name in ("TransactWriteItems", "TransactGetItems")
    }
    assert all(path.startswith("TransactItems[:1]") for path in paths.values())
    # Clients made elsewhere are left as botocore made them.
    stock = boto3.session.Session(region_name="us-east-1").client("dynamodb")
    write = stock.meta.service_model.operation_model("TransactWriteItems")
    assert write.operation_context_parameters["ResourceArnList"]["path"].startswith(
        "TransactItems[*]"
    )

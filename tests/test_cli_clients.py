"""The clients ``kinesis-eo run`` makes: cheaper to drive, sent where boto3's own would go."""

from __future__ import annotations

import argparse
import json
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config

from kinesis_eo.cli import _aws_clients

ACCOUNT_TABLE = "arn:aws:dynamodb:us-east-1:111122223333:table/orders"
OTHER_ACCOUNT_TABLE = "arn:aws:dynamodb:us-east-1:444455556666:table/ledger"


class _Raw:
    def stream(self, **_: Any) -> Any:
        yield b"{}"


def _sent_to(client: Any, bodies: list[bytes] | None = None) -> list[str]:
    urls: list[str] = []

    def answer(request: Any, **_: Any) -> AWSResponse:
        urls.append(request.url)
        if bodies is not None:
            bodies.append(request.body)
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


def test_a_transaction_is_sent_with_the_body_and_headers_boto3s_serializer_makes() -> None:
    args = argparse.Namespace(region="us-east-1", endpoint_url=None)
    (ours,) = _aws_clients(args, "dynamodb")
    stock = boto3.session.Session(region_name="us-east-1").client(
        "dynamodb", config=Config(parameter_validation=False)
    )
    ours_bodies: list[bytes] = []
    stock_bodies: list[bytes] = []
    _sent_to(ours, ours_bodies)
    _sent_to(stock, stock_bodies)
    plain = [_update("orders", "1"), _update("ledger", "2")]
    plain[0]["Update"]["ExpressionAttributeValues"][":p"] = {"S": 'é "quoted"'}
    # Bytes are base64 on the wire: that request takes botocore's serializer.
    binary = [{"Put": {"TableName": "orders", "Item": {"id": {"S": "3"}, "b": {"B": b"\x00\xff"}}}}]

    walked: list[str] = []
    walk = ours._serializer._serialize_type_list
    ours._serializer._serialize_type_list = lambda *a: walked.append("list") or walk(*a)

    ours.transact_write_items(TransactItems=plain, ClientRequestToken="token-1")
    # The plain request was not walked item by item; the one with bytes was.
    assert walked == []
    ours.transact_write_items(TransactItems=binary, ClientRequestToken="token-2")
    assert walked
    stock.transact_write_items(TransactItems=plain, ClientRequestToken="token-1")
    stock.transact_write_items(TransactItems=binary, ClientRequestToken="token-2")

    assert [json.loads(b) for b in ours_bodies] == [json.loads(b) for b in stock_bodies]
    assert json.loads(ours_bodies[1])["TransactItems"][0]["Put"]["Item"]["b"] == {"B": "AP8="}


def test_the_user_agent_is_built_once_and_sent_as_botocore_builds_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from botocore.useragent import UserAgentString

    builds: list[str] = []
    build = UserAgentString.to_string

    def counted(self: Any) -> str:
        header: str = build(self)
        builds.append(header)
        return header

    monkeypatch.setattr(UserAgentString, "to_string", counted)
    args = argparse.Namespace(region="us-east-1", endpoint_url=None)
    (ours,) = _aws_clients(args, "dynamodb")
    sent: list[tuple[str, str]] = []

    def answer(request: Any, **_: Any) -> AWSResponse:
        expected = build(ours._user_agent_creator)  # as botocore builds it, for this request
        sent.append((request.headers["User-Agent"].decode(), expected))
        return AWSResponse(request.url, 200, {}, _Raw())

    ours.meta.events.register("before-send", answer)
    for key in ("1", "2", "3"):
        ours.update_item(
            TableName="orders",
            Key={"id": {"S": key}},
            UpdateExpression="SET n = :n",
            ExpressionAttributeValues={":n": {"N": "1"}},
        )

    # Other libraries' hooks may append to the header after botocore built it (Powertools
    # adds "PT/..." once imported in the process): what botocore built comes first, whole.
    assert all(header.split(" PT/")[0] == expected for header, expected in sent), sent
    assert "Botocore/" in sent[0][0]
    # botocore builds it twice per request, with the features known at each step: built
    # for the first request's two steps only, not six times.
    assert len(builds) == 2


def test_kinesis_eo_run_collects_cycles_less_often_while_it_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gc

    from kinesis_eo import cli, runner
    from kinesis_eo.cli import run as run_command

    saved = gc.get_threshold()
    seen: list[tuple[int, int, int]] = []
    monkeypatch.setattr(run_command, "_aws_clients", lambda args, *services: [None] * 2)
    monkeypatch.setattr(runner, "run", lambda options, *clients: seen.append(gc.get_threshold()))
    try:
        code = cli.main(
            [
                *("run", "--stream", "orders", "--app", "billing"),
                *("--handler", "tests.handlers:count_effect", "--log-level", "WARNING"),
            ]
        )
    finally:
        gc.set_threshold(*saved)

    assert code == 0
    assert seen == [(run_command.GC_FIRST_GENERATION_THRESHOLD, saved[1], saved[2])]
    assert saved[0] < run_command.GC_FIRST_GENERATION_THRESHOLD

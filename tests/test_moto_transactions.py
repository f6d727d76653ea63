"""Undo-log ``TransactWriteItems`` behaves exactly like stock moto, without copying tables.

Every scenario runs twice, each time on a fresh ``mock_aws``: once on stock moto,
once with the patch. The outcome (response, or error class and the whole error
body with its cancellation reasons) and everything left behind (scans, item
counts, a global secondary index, stream records and moto's internal item
layout) must be identical. Each scenario also pins what stock moto does, so a
broken set-up cannot make both runs agree on the wrong thing.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import boto3
import moto
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import DynamoDBBackend, dynamodb_backends
from moto.dynamodb.models.dynamo_type import Item
from moto.dynamodb.models.table import StreamShard, Table

from kinesis_eo.harness import moto_transactions
from kinesis_eo.harness.moto_transactions import (
    install,
    installed,
    undo_log_transactions,
    uninstall,
)
from kinesis_eo.testing.backends import MotoServer

REGION = "us-east-1"
ACCOUNTS = "accounts"  # hash key pk (S); stream NEW_AND_OLD_IMAGES
ORDERS = "orders"  # hash pk (S) + range sk (N); GSI by_status; stream KEYS_ONLY
ACCOUNTS_ARN = f"arn:aws:dynamodb:{REGION}:{DEFAULT_ACCOUNT_ID}:table/{ACCOUNTS}"
SEEDED_ACCOUNTS = 120

Json = dict[str, Any]


@pytest.fixture(autouse=True)
def _stock_moto_around_each_test() -> Iterator[None]:
    # The patch is process-wide: a leak would silently change what every
    # later test in the session runs against.
    assert not installed(), "an earlier test left the undo-log transactions installed"
    yield
    uninstall()


# --- request builders ----------------------------------------------------------------------


def s(value: str) -> Json:
    return {"S": value}


def n(value: int | str) -> Json:
    return {"N": str(value)}


def account(i: int | str) -> Json:
    return {"pk": s(f"acct-{i}")}


def order(pk: str, sk: int | str) -> Json:
    return {"pk": s(pk), "sk": n(sk)}


def _op(kind: str, table: str, body: Json, condition: str | None, extra: Json) -> Json:
    op: Json = {"TableName": table, **body}
    if condition is not None:
        op["ConditionExpression"] = condition
    op.update(extra)
    return {kind: op}


def put(table: str, item: Json, condition: str | None = None, **extra: Any) -> Json:
    return _op("Put", table, {"Item": item}, condition, extra)


def update(
    table: str, key: Json, expression: str, condition: str | None = None, **extra: Any
) -> Json:
    return _op("Update", table, {"Key": key, "UpdateExpression": expression}, condition, extra)


def delete(table: str, key: Json, condition: str | None = None, **extra: Any) -> Json:
    return _op("Delete", table, {"Key": key}, condition, extra)


def check(table: str, key: Json, condition: str, **extra: Any) -> Json:
    return _op("ConditionCheck", table, {"Key": key}, condition, extra)


def bump(i: int) -> Json:
    return update(ACCOUNTS, account(i), "ADD balance :d", ExpressionAttributeValues={":d": n(1)})


EXISTS = "attribute_exists(pk)"
ABSENT = "attribute_not_exists(pk)"
ALL_OLD = {"ReturnValuesOnConditionCheckFailure": "ALL_OLD"}
FAILS = check(ACCOUNTS, account(0), "balance > :big", ExpressionAttributeValues={":big": n(10**9)})


NESTED_UPDATE = update(
    ACCOUNTS,
    account(8),
    "ADD tags :t SET profile.city = :c, profile.langs = list_append(profile.langs, :l)",
    ExpressionAttributeValues={":t": {"SS": ["more"]}, ":c": s("Bergen"), ":l": {"L": [s("en")]}},
)


# --- world: tables, seed data and everything observable about them -------------------------


def create_world(client: Any) -> None:
    client.create_table(
        TableName=ACCOUNTS,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    client.create_table(
        TableName=ORDERS,
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "N"},
            {"AttributeName": "status", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by_status",
                "KeySchema": [
                    {"AttributeName": "status", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"},
    )
    accounts = [
        {
            **account(i),
            "balance": n(100 + i),
            "note": s(f"note {i}"),
            "extra": s("x"),
            "tags": {"SS": ["seed"]},
            "profile": {"M": {"city": s("Oslo"), "langs": {"L": [s("no")]}}},
        }
        for i in range(SEEDED_ACCOUNTS)
    ]
    orders = [
        {**order(f"order-{i}", sk), "status": s("open" if (i + sk) % 2 else "done"), "qty": n(sk)}
        for i in range(5)
        for sk in (1, 2, 3)
    ]
    for table, items in ((ACCOUNTS, accounts), (ORDERS, orders)):
        for start in range(0, len(items), 25):
            client.batch_write_item(
                RequestItems={
                    table: [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
                }
            )


def _sorted(items: list[Json]) -> list[Json]:
    return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))


def _scan(client: Any, **kwargs: Any) -> list[Json]:
    items: list[Json] = []
    for page in client.get_paginator("scan").paginate(**kwargs):
        items.extend(page["Items"])
    return items


def _stream_records(client: Any, streams: Any, table: str) -> list[Json]:
    arn = client.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records = streams.get_records(ShardIterator=iterator, Limit=1000)["Records"]
    return [_without_random_fields(record) for record in records]


def _without_random_fields(record: Json) -> Json:
    record = copy.deepcopy(record)
    record.pop("eventID")
    record["dynamodb"].pop("ApproximateCreationDateTime")
    # moto measures the record's JSON, timestamp included, so its length varies.
    record["dynamodb"].pop("SizeBytes")
    return record


def _internal_layout(table: Table) -> Json:
    # Reads never show empty range buckets (moto's defaultdict makes them on
    # lookups); compare them too, to prove a rollback leaves exactly what
    # stock leaves.
    if table.range_key_attr is None:
        return {"hash_keys": sorted(repr(k) for k in table.items), "len": len(table)}
    return {
        "buckets": {
            repr(h): sorted(repr(r) for r in bucket)
            for h, bucket in sorted(table.items.items(), key=lambda kv: repr(kv[0]))
        },
        "len": len(table),
    }


def observe(client: Any, streams: Any) -> Json:
    """Everything a client (and moto's own item store) can see of the two tables."""
    backend = dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION]
    return {
        "accounts": _sorted(_scan(client, TableName=ACCOUNTS, ConsistentRead=True)),
        "orders": _sorted(_scan(client, TableName=ORDERS, ConsistentRead=True)),
        "counts": {
            t: client.describe_table(TableName=t)["Table"]["ItemCount"] for t in (ACCOUNTS, ORDERS)
        },
        # Index order is moto's own, so compare it unsorted.
        "by_status_scan": _scan(client, TableName=ORDERS, IndexName="by_status"),
        "by_status_open": client.query(
            TableName=ORDERS,
            IndexName="by_status",
            KeyConditionExpression="#s = :open",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":open": s("open")},
        )["Items"],
        "stream_accounts": _stream_records(client, streams, ACCOUNTS),
        "stream_orders": _stream_records(client, streams, ORDERS),
        "layout": {name: _internal_layout(t) for name, t in sorted(backend.tables.items())},
    }


def outcome_of(call: Callable[[], Json]) -> Json:
    try:
        response = call()
    except ClientError as error:
        body = {k: v for k, v in error.response.items() if k != "ResponseMetadata"}
        return {"raised": type(error).__name__, **body}
    return {"returned": {k: v for k, v in response.items() if k != "ResponseMetadata"}}


# --- scenarios -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    id: str
    items: list[Json]
    # "ok", or the error code stock moto gives; pins the scenario to what it claims to test
    expect: str


CANCELED = "TransactionCanceledException"
INVALID = "ValidationException"

SCENARIOS = [
    Scenario(
        "mix-of-all-four-across-two-tables",
        [
            put(ACCOUNTS, {**account("new"), "balance": n(1)}),
            update(
                ACCOUNTS,
                account(1),
                "SET note = :n",
                EXISTS,
                ExpressionAttributeValues={":n": s("changed")},
            ),
            delete(ORDERS, order("order-1", 2)),
            check(ORDERS, order("order-0", 1), EXISTS),
            update(
                ORDERS,
                order("order-2", 1),
                "SET #s = :s",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":s": s("shipped")},
            ),
        ],
        "ok",
    ),
    Scenario(
        "update-add-set-remove",
        [
            update(
                ACCOUNTS,
                account(2),
                "ADD balance :d, tags :t SET note = :n REMOVE extra",
                ExpressionAttributeValues={":d": n(-7), ":t": {"SS": ["new"]}, ":n": s("hi")},
            ),
            update(
                ORDERS,
                order("order-3", 3),
                "ADD qty :d REMOVE #s",
                **{
                    "ExpressionAttributeNames": {"#s": "status"},
                    "ExpressionAttributeValues": {":d": n(5)},
                },
            ),
        ],
        "ok",
    ),
    Scenario(
        "update-on-missing-item-creates-it",
        [
            update(
                ACCOUNTS,
                account("ghost"),
                "SET balance = :z",
                ExpressionAttributeValues={":z": n(0)},
            ),
            update(
                ORDERS,
                order("order-9", 7),
                "ADD qty :one",
                ExpressionAttributeValues={":one": n(1)},
            ),
        ],
        "ok",
    ),
    Scenario(
        "put-if-absent-on-new-items",
        [
            put(ACCOUNTS, {**account("fresh"), "balance": n(5)}, ABSENT),
            put(ORDERS, {**order("order-new", 1), "status": s("open")}, ABSENT),
        ],
        "ok",
    ),
    Scenario(
        "put-if-absent-on-existing-item-cancels",
        [
            put(ACCOUNTS, {**account("fresh"), "balance": n(5)}, ABSENT),
            delete(ACCOUNTS, account(7)),
            put(ACCOUNTS, {**account(3), "balance": n(0)}, ABSENT),
        ],
        CANCELED,
    ),
    Scenario("condition-fails-at-index-0", [FAILS, bump(1), bump(2), bump(3)], CANCELED),
    Scenario(
        "condition-fails-at-index-2",
        [bump(1), delete(ORDERS, order("order-0", 1)), FAILS, bump(3), bump(4)],
        CANCELED,
    ),
    Scenario(
        "condition-fails-at-last-index-after-every-kind-of-write",
        [
            put(ACCOUNTS, {**account("new"), "balance": n(1)}),
            bump(1),
            delete(ACCOUNTS, account(4)),
            update(
                ORDERS, order("order-4", 2), "SET qty = :q", ExpressionAttributeValues={":q": n(99)}
            ),
            delete(ORDERS, order("order-4", 3)),
            put(ORDERS, {**order("order-4", 9), "status": s("open")}),
            FAILS,
        ],
        CANCELED,
    ),
    Scenario(
        "all-old-failures-on-existing-and-missing-items",
        [
            bump(1),
            put(ACCOUNTS, {**account(5), "balance": n(0)}, ABSENT, **ALL_OLD),
            bump(2),
            update(
                ACCOUNTS,
                account("nobody"),
                "SET balance = :z",
                EXISTS,
                **ALL_OLD,
                **{"ExpressionAttributeValues": {":z": n(0)}},
            ),
            delete(
                ORDERS,
                order("order-1", 1),
                "qty > :q",
                ExpressionAttributeValues={":q": n(50)},
                **ALL_OLD,
            ),
        ],
        CANCELED,
    ),
    Scenario(
        "failures-without-all-old-carry-no-item",
        [
            put(ACCOUNTS, {**account(5), "balance": n(0)}, ABSENT),
            bump(2),
            delete(
                ORDERS, order("order-1", 1), "qty > :q", ExpressionAttributeValues={":q": n(50)}
            ),
        ],
        CANCELED,
    ),
    Scenario(
        "failing-condition-check-with-all-old",
        [
            bump(1),
            check(
                ORDERS,
                order("order-2", 2),
                "qty = :q",
                **ALL_OLD,
                **{"ExpressionAttributeValues": {":q": n(-1)}},
            ),
        ],
        CANCELED,
    ),
    Scenario(
        "failing-condition-check-on-missing-item",
        [bump(1), check(ORDERS, order("order-77", 2), EXISTS, **ALL_OLD)],
        CANCELED,
    ),
    Scenario(
        "two-operations-on-one-item",
        [bump(1), put(ACCOUNTS, {**account(9), "balance": n(0)}), bump(9), bump(3)],
        INVALID,
    ),
    Scenario(
        "two-operations-on-one-range-item",
        [
            put(ORDERS, {**order("order-new", 1), "status": s("open")}),
            delete(ORDERS, order("order-0", 1)),
            check(ORDERS, order("order-0", 1), EXISTS),
        ],
        INVALID,
    ),
    Scenario(
        "same-item-spelled-two-ways-then-canceled",
        [
            put(ORDERS, {**order("order-0", "1"), "status": s("open"), "qty": n(1)}),
            update(
                ORDERS,
                order("order-0", "1.0"),
                "ADD qty :d",
                ExpressionAttributeValues={":d": n(10)},
            ),
            FAILS,
        ],
        CANCELED,
    ),
    Scenario(
        "update-type-error-after-writes",
        [
            bump(1),
            delete(ORDERS, order("order-0", 2)),
            update(ACCOUNTS, account(2), "ADD note :d", ExpressionAttributeValues={":d": n(1)}),
        ],
        INVALID,
    ),
    Scenario(
        "item-too-large-after-writes",
        [bump(1), put(ACCOUNTS, {**account("huge"), "blob": s("x" * 410_000)})],
        INVALID,
    ),
    Scenario(
        "wrong-key-type-after-writes",
        [bump(1), put(ACCOUNTS, {"pk": n(1), "balance": n(1)})],
        INVALID,
    ),
    Scenario(
        "range-key-missing-after-writes",
        [bump(1), delete(ORDERS, {"pk": s("order-0")})],
        INVALID,
    ),
    Scenario(
        "missing-table-cancels-with-its-own-reason",
        [bump(1), delete("no-such-table", account(1)), check("no-such-table", account(2), EXISTS)],
        CANCELED,
    ),
    Scenario(
        "empty-range-buckets-from-lookups-survive-success",
        [check(ORDERS, order("order-new", 1), ABSENT), put(ORDERS, order("order-new2", 1))],
        "ok",
    ),
    Scenario(
        "empty-range-buckets-from-lookups-removed-on-cancel",
        [
            check(ORDERS, order("order-new", 1), ABSENT),
            put(ORDERS, order("order-new2", 1)),
            put(ORDERS, order("order-new2", 2)),
            FAILS,
        ],
        CANCELED,
    ),
    Scenario("nested-and-set-updates", [NESTED_UPDATE], "ok"),
    Scenario("nested-and-set-updates-then-canceled", [NESTED_UPDATE, bump(1), FAILS], CANCELED),
    Scenario("hundred-items", [bump(i) for i in range(100)], "ok"),
    Scenario(
        "hundred-items-last-one-fails",
        [bump(i) for i in range(1, 100)] + [FAILS],
        CANCELED,
    ),
    Scenario("hundred-and-one-items", [bump(i) for i in range(101)], INVALID),
    # Stock moto is not atomic in the next two; the patch must not be either.
    Scenario(
        "two-operations-in-one-entry-keeps-earlier-writes",
        [
            bump(1),
            {**put(ACCOUNTS, account("a")), **delete(ACCOUNTS, account(2))},
            bump(3),
        ],
        INVALID,
    ),
    Scenario(
        "table-named-only-by-arn-is-not-rolled-back",
        [
            put(ACCOUNTS_ARN, {**account("by-arn"), "balance": n(1)}),
            check(
                ACCOUNTS_ARN,
                account(0),
                "balance > :big",
                ExpressionAttributeValues={":big": n(10**9)},
            ),
        ],
        CANCELED,
    ),
    Scenario(
        "table-named-by-arn-and-by-name-is-rolled-back",
        [
            put(ACCOUNTS_ARN, {**account("by-arn"), "balance": n(1)}),
            update(
                ACCOUNTS_ARN,
                account(6),
                "SET note = :n",
                ExpressionAttributeValues={":n": s("via arn")},
            ),
            bump(6),
            FAILS,
        ],
        CANCELED,
    ),
]


def run_scenario(scenario: Scenario, *, patched: bool) -> tuple[Json, Json]:
    patch: AbstractContextManager[None] = undo_log_transactions() if patched else nullcontext()
    with mock_aws(), patch:
        assert installed() is patched
        client = boto3.client("dynamodb", region_name=REGION)
        streams = boto3.client("dynamodbstreams", region_name=REGION)
        create_world(client)
        outcome = outcome_of(lambda: client.transact_write_items(TransactItems=scenario.items))
        return outcome, observe(client, streams)


def _code(outcome: Json) -> str:
    return "ok" if "returned" in outcome else str(outcome["Error"]["Code"])


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[sc.id for sc in SCENARIOS])
def test_same_outcome_and_state_as_stock_moto(scenario: Scenario) -> None:
    stock_outcome, stock_state = run_scenario(scenario, patched=False)
    assert _code(stock_outcome) == scenario.expect, stock_outcome
    patched_outcome, patched_state = run_scenario(scenario, patched=True)

    assert patched_outcome == stock_outcome
    for part in stock_state:
        assert patched_state[part] == stock_state[part], part
    assert not installed()


def test_cancellation_reasons_carry_all_old_items_in_order() -> None:
    # Spells out one outcome the equivalence compares, so a regression in both
    # stock and patch (the same wrong answer twice) still shows up.
    scenario = next(sc for sc in SCENARIOS if sc.id.startswith("all-old-failures"))
    outcome, _ = run_scenario(scenario, patched=True)
    assert outcome["raised"] == CANCELED
    assert [r["Code"] for r in outcome["CancellationReasons"]] == [
        "None",
        "ConditionalCheckFailed",
        "None",
        "ConditionalCheckFailed",
        "ConditionalCheckFailed",
    ]
    reasons = outcome["CancellationReasons"]
    assert reasons[1]["Item"]["pk"] == s("acct-5")
    assert "Item" not in reasons[3]  # the item did not exist
    assert reasons[4]["Item"]["qty"] == n(1)


# --- atomic rollback -----------------------------------------------------------------------


@pytest.fixture
def patched() -> Iterator[None]:
    install()
    try:
        yield
    finally:
        uninstall()


@pytest.fixture
def write_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of moto's per-item writes that completed, in order."""
    calls: list[str] = []
    for name in ("put_item", "update_item", "delete_item"):
        original = getattr(DynamoDBBackend, name)

        def spy(self: Any, *args: Any, _name: str = name, _orig: Any = original, **kw: Any) -> Any:
            result = _orig(self, *args, **kw)
            calls.append(_name)
            return result

        monkeypatch.setattr(DynamoDBBackend, name, spy)
    return calls


@pytest.mark.parametrize(
    "failing",
    [
        pytest.param(FAILS, id="condition-failure"),
        pytest.param(put(ACCOUNTS, {**account("huge"), "blob": s("x" * 410_000)}), id="too-large"),
        pytest.param(bump(1), id="same-item-twice"),
    ],
)
def test_canceled_transaction_leaves_tables_as_before(
    failing: Json, patched: None, write_calls: list[str]
) -> None:
    # `patched` before `write_calls`: install() verifies moto's own functions, not the spies.
    items = [
        bump(1),
        put(ACCOUNTS, {**account("new"), "balance": n(1)}),
        delete(ACCOUNTS, account(2)),
        update(
            ORDERS, order("order-0", 1), "SET qty = :q", ExpressionAttributeValues={":q": n(42)}
        ),
        put(ORDERS, order("order-new", 1)),
        delete(ORDERS, order("order-1", 1)),
        failing,
    ]
    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        streams = boto3.client("dynamodbstreams", region_name=REGION)
        create_world(client)
        before = observe(client, streams)
        write_calls.clear()
        with pytest.raises(ClientError):
            client.transact_write_items(TransactItems=items)
        # The earlier entries really were written in memory before the failure.
        assert write_calls == [
            "update_item",
            "put_item",
            "delete_item",
            "update_item",
            "put_item",
            "delete_item",
        ]
        assert observe(client, streams) == before


def test_stream_iterator_from_before_a_canceled_transaction_keeps_working() -> None:
    # The one intended difference from stock, which swaps in a copied table
    # and strands such iterators on the old one.
    with mock_aws(), undo_log_transactions():
        client = boto3.client("dynamodb", region_name=REGION)
        streams = boto3.client("dynamodbstreams", region_name=REGION)
        create_world(client)
        arn = client.describe_table(TableName=ACCOUNTS)["Table"]["LatestStreamArn"]
        shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]
        iterator = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="LATEST"
        )["ShardIterator"]
        with pytest.raises(ClientError):
            client.transact_write_items(TransactItems=[bump(1), FAILS])
        client.transact_write_items(TransactItems=[bump(2)])

        records = streams.get_records(ShardIterator=iterator)["Records"]
        assert [r["dynamodb"]["Keys"] for r in records] == [account(2)]


# --- cost: no table copies -----------------------------------------------------------------


@pytest.fixture
def deepcopies(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts of ``copy.deepcopy`` calls while enabled, nested ones included."""
    counts = {"tables": 0, "all": 0, "enabled": 0}
    real = copy.deepcopy

    def counting(x: Any, memo: Any = None, _nil: Any = None) -> Any:
        if counts["enabled"]:
            counts["all"] += 1
            counts["tables"] += isinstance(x, Table)
        return real(x, memo)

    # copy's own recursion looks deepcopy up in the module, so nested copies count too.
    monkeypatch.setattr(copy, "deepcopy", counting)
    return counts


def _cost_of_one_transaction(
    counts: dict[str, int], *, table_size: int, canceled: bool
) -> dict[str, int]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        client.create_table(
            TableName="big",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        backend = dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION]
        for i in range(table_size):
            backend.put_item("big", {"pk": s(f"k{i}"), "v": n(i), "pad": s("p" * 100)})
        items = [
            update("big", {"pk": s(f"k{i}")}, "ADD v :d", ExpressionAttributeValues={":d": n(1)})
            for i in range(100)
        ]
        if canceled:
            items[-1] = check(
                "big",
                {"pk": s("k99")},
                "v < :zero",
                **{"ExpressionAttributeValues": {":zero": n(0)}},
            )
        tables_kept, items_kept = len(Table.instances_tracked), len(Item.instances_tracked)
        counts.update(tables=0, all=0, enabled=1)
        try:
            client.transact_write_items(TransactItems=items)
        except ClientError:
            assert canceled
        counts["enabled"] = 0
        return {
            "table deepcopies": counts["tables"],
            "deepcopy calls": counts["all"],
            # moto keeps every model object it makes until reset: copies never go away.
            "tables kept": len(Table.instances_tracked) - tables_kept,
            "items kept": len(Item.instances_tracked) - items_kept,
        }


@pytest.mark.parametrize("canceled", [False, True], ids=["committed", "canceled"])
def test_transaction_cost_does_not_depend_on_table_size(
    deepcopies: dict[str, int], canceled: bool
) -> None:
    stock = _cost_of_one_transaction(deepcopies, table_size=100, canceled=canceled)
    # Shows the counters see what this module removes: a table copy per entry.
    assert stock["table deepcopies"] >= 100
    assert stock["tables kept"] >= 100

    with undo_log_transactions():
        small = _cost_of_one_transaction(deepcopies, table_size=100, canceled=canceled)
        large = _cost_of_one_transaction(deepcopies, table_size=2_000, canceled=canceled)
    assert small == large
    assert large["table deepcopies"] == large["tables kept"] == 0
    # moto's own update_item keeps one copy per updated item; the undo log adds none.
    assert large["items kept"] <= 100


# --- through moto's HTTP server in this process --------------------------------------------


def test_works_through_threaded_moto_server(
    moto_server_reset: MotoServer, patched: None, deepcopies: dict[str, int]
) -> None:
    client = moto_server_reset.client("dynamodb", region_name=REGION)
    create_world(client)
    before = _sorted(_scan(client, TableName=ACCOUNTS))
    deepcopies["enabled"] = 1

    with pytest.raises(ClientError) as canceled:
        client.transact_write_items(
            TransactItems=[
                bump(1),
                put(ACCOUNTS, {**account(2), "balance": n(0)}, ABSENT, **ALL_OLD),
            ]
        )
    client.transact_write_items(TransactItems=[bump(3)])

    deepcopies["enabled"] = 0
    assert deepcopies["tables"] == 0  # the server thread ran the patched code
    reasons = canceled.value.response["CancellationReasons"]
    assert [r["Code"] for r in reasons] == ["None", "ConditionalCheckFailed"]
    assert reasons[1]["Item"]["pk"] == s("acct-2")
    after = {item["pk"]["S"]: item for item in _scan(client, TableName=ACCOUNTS)}
    expected = {item["pk"]["S"]: item for item in before}
    expected["acct-3"] = {**expected["acct-3"], "balance": n(104)}
    assert after == expected


# --- the API -------------------------------------------------------------------------------


def test_install_is_idempotent_and_uninstall_restores_stock() -> None:
    stock = DynamoDBBackend.transact_write_items
    install()
    install()
    assert installed()
    assert DynamoDBBackend.transact_write_items is not stock
    uninstall()
    assert not installed()
    assert DynamoDBBackend.transact_write_items is stock
    uninstall()
    assert DynamoDBBackend.transact_write_items is stock


def test_context_manager_restores_the_previous_state() -> None:
    with undo_log_transactions():
        assert installed()
    assert not installed()

    install()
    with undo_log_transactions():
        assert installed()
    assert installed()


def test_install_refuses_a_moto_with_changed_internals(monkeypatch: pytest.MonkeyPatch) -> None:
    def transact_write_items(self: Any, transact_items: Any) -> None:
        raise AssertionError("never called")

    monkeypatch.setattr(DynamoDBBackend, "transact_write_items", transact_write_items)
    monkeypatch.delattr(StreamShard, "add")
    with pytest.raises(RuntimeError) as refused:
        install()
    message = str(refused.value)
    assert f"moto {moto.__version__}" in message
    assert "DynamoDBBackend.transact_write_items" in message
    assert "StreamShard.add (missing" in message
    assert not installed()
    assert DynamoDBBackend.transact_write_items is transact_write_items


def test_guard_digests_match_this_moto() -> None:
    # install() itself passing is the check; named so a failure says why.
    moto_transactions._check_moto()

"""Time moto's TransactWriteItems on a large table, stock and with the undo log.

    .venv/bin/python bench/moto_transactions.py [--items 4000] [--transactions 20]

Each run builds a fresh table of ``--items`` items in an in-process ``mock_aws``
and times ``--transactions`` successful transactions of 100 updates each,
through a boto3 client, as the demo and the harness call them. Stock moto
copies the table once per transaction entry, so expect its time (and memory)
to grow with ``--items``.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import boto3
from moto import mock_aws
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import dynamodb_backends
from moto.dynamodb.models.table import Table

from kinesis_eo.harness.moto_transactions import undo_log_transactions

REGION = "us-east-1"
TABLE = "bench"
ENTRIES = 100


def _transaction(round_: int, table_items: int) -> list[dict[str, Any]]:
    first = (round_ * ENTRIES) % max(table_items - ENTRIES, 1)
    return [
        {
            "Update": {
                "TableName": TABLE,
                "Key": {"pk": {"S": f"item-{first + i}"}},
                "UpdateExpression": "ADD n :one",
                "ConditionExpression": "attribute_exists(pk)",
                "ExpressionAttributeValues": {":one": {"N": "1"}},
            }
        }
        for i in range(ENTRIES)
    ]


def run(*, patched: bool, table_items: int, transactions: int) -> tuple[float, int]:
    """Milliseconds per transaction, and table objects moto still holds afterwards."""
    patch: AbstractContextManager[None] = undo_log_transactions() if patched else nullcontext()
    with mock_aws(), patch:
        client = boto3.client("dynamodb", region_name=REGION)
        client.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        # Straight into the backend: seeding through HTTP would dwarf the runs.
        backend = dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION]
        for i in range(table_items):
            backend.put_item(
                TABLE, {"pk": {"S": f"item-{i}"}, "n": {"N": "0"}, "pad": {"S": "p" * 200}}
            )
        client.transact_write_items(TransactItems=_transaction(0, table_items))  # warm-up
        started = time.perf_counter()
        for round_ in range(1, transactions + 1):
            client.transact_write_items(TransactItems=_transaction(round_, table_items))
        elapsed = time.perf_counter() - started
        # moto keeps every model object until reset; table copies included.
        tables_kept = len(Table.instances_tracked)  # type: ignore[attr-defined]
    return elapsed / transactions * 1000, tables_kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--items", type=int, default=4000, help="items in the table")
    parser.add_argument("--transactions", type=int, default=20, help="transactions timed")
    args = parser.parse_args()
    if args.items < ENTRIES:
        parser.error(f"--items must be at least {ENTRIES}")
    for name, value in {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        os.environ.setdefault(name, value)

    print(f"table: {args.items} items; {args.transactions} transactions of {ENTRIES} updates")
    results = {}
    # Undo log first: ru_maxrss only grows, so its figure is then its own.
    for name, patched in (("undo log", True), ("stock", False)):
        ms, tables_kept = run(
            patched=patched, table_items=args.items, transactions=args.transactions
        )
        max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"{name:8}: {ms:8.1f} ms per transaction; {tables_kept:5} table objects kept; "
            f"max RSS so far {max_rss_mb:,.0f} MB",
            flush=True,
        )
        results[name] = ms
    print(f"stock / undo log: {results['stock'] / results['undo log']:.1f}x")


if __name__ == "__main__":
    main()

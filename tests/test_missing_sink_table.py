"""A commit to a sink table that does not exist names the sink table, not the ledger table."""

from __future__ import annotations

from typing import Any

import pytest

from kinesis_eo.errors import ResourceNotFoundError
from kinesis_eo.flow import run_sync
from kinesis_eo.ledger import (
    DynamoDBLedgerStore,
    Entry,
    Ledger,
    LedgerConfig,
    LedgerMode,
    create_ledger_table,
)
from kinesis_eo.records import Record
from kinesis_eo.retry import RetryConfig
from kinesis_eo.sinks import update

QUICK = RetryConfig(max_attempts=2, initial_backoff_s=0.001, max_backoff_s=0.01)


@pytest.mark.parametrize("mode", [LedgerMode.WATERMARK, LedgerMode.PER_RECORD])
def test_a_missing_sink_table_is_named_as_the_sink_table(dynamodb: Any, mode: LedgerMode) -> None:
    create_ledger_table(dynamodb, "ledger")
    ledger = Ledger(DynamoDBLedgerStore("ledger", QUICK), LedgerConfig("app", mode))
    record = Record("orders", "shardId-000000000000", "1", "pk", b"data", event_id="e-1")
    writes = [update("no-such-effects", {"id": "e-1"}, "ADD applied :one", values={":one": 1})]

    with pytest.raises(ResourceNotFoundError) as raised:
        run_sync(ledger.commit([Entry(record, writes)]), dynamodb, QUICK)

    assert "the sink table 'no-such-effects' does not exist" in str(raised.value)
    assert "ledger table" not in str(raised.value)
    assert raised.value.resource == "sink table 'no-such-effects'"

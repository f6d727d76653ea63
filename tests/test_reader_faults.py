"""The reader under injected throttling, expired iterators and lost connections.

No emulator produces these, so they are injected on the client with
:class:`kinesis_eo.testing.faults.FaultInjector` in front of moto; the records
themselves are real, and the test checks that none is skipped or repeated.
"""

from __future__ import annotations

from typing import Any

import pytest

from kinesis_eo.errors import ThrottledError
from kinesis_eo.retrieval import ReaderConfig, ShardReader, StreamReader
from kinesis_eo.retry import RetryConfig
from kinesis_eo.testing.faults import FaultInjector, FaultKind, NthCall, Probability
from tests.streams import assert_in_shard_order_each_once, make_stream, put_numbered, read_until

QUICK_RETRY = RetryConfig(max_attempts=6, initial_backoff_s=0.001, max_backoff_s=0.01)
SMALL_READS = ReaderConfig(
    max_records=37, min_read_interval_s=0.0, idle_interval_s=0.01, retry=QUICK_RETRY
)


def test_expired_iterators_are_replaced_without_a_gap_or_a_duplicate(kinesis: Any) -> None:
    make_stream(kinesis, "expiry", 1)
    expected = put_numbered(kinesis, "expiry", 400)
    faults = FaultInjector(seed=1)
    faults.fail("GetRecords", "ExpiredIteratorException", schedule=NthCall(2, 3, 5, 8, 9))
    faults.attach(kinesis)
    reader = ShardReader(kinesis, "expiry", "shardId-000000000000", config=SMALL_READS)

    records = read_until(reader, 400)

    assert [r.data for r in records] == expected
    assert reader.cursor.iterators_expired == 5
    assert faults.injected[FaultKind.ERROR_RESPONSE] == 5


def test_throttled_reads_are_retried_without_a_gap_or_a_duplicate(kinesis: Any) -> None:
    make_stream(kinesis, "throttled", 4)
    expected = put_numbered(kinesis, "throttled", 2000)
    faults = FaultInjector(seed=7)
    faults.throttle("GetRecords", schedule=Probability(0.3))
    faults.throttle("GetShardIterator", schedule=Probability(0.3), code="LimitExceededException")
    faults.throttle("ListShards", schedule=NthCall(1), code="LimitExceededException")
    faults.fail("GetRecords", "ExpiredIteratorException", schedule=Probability(0.1))
    faults.disconnect("GetRecords", schedule=Probability(0.05))
    faults.disconnect("GetRecords", schedule=Probability(0.05), after_send=True)
    faults.attach(kinesis)

    records = read_until(StreamReader(kinesis, "throttled", config=SMALL_READS), 2000)

    assert len(records) == 2000
    assert_in_shard_order_each_once(records, expected)
    assert faults.injected[FaultKind.ERROR_RESPONSE] > 10
    assert faults.injected[FaultKind.CONNECTION_REFUSED] > 0
    assert faults.injected[FaultKind.CONNECTION_LOST] > 0


def test_throttling_that_outlasts_the_retry_budget_is_a_clear_retryable_error(
    kinesis: Any,
) -> None:
    make_stream(kinesis, "stuck", 1)
    put_numbered(kinesis, "stuck", 3)
    faults = FaultInjector(seed=3)
    faults.throttle("GetRecords")
    faults.attach(kinesis)
    reader = ShardReader(kinesis, "stuck", "shardId-000000000000", config=SMALL_READS)

    with pytest.raises(
        ThrottledError, match="GetRecords on shard 'shardId-000000000000'"
    ) as caught:
        next(iter(reader))

    assert caught.value.retryable
    assert faults.injected[FaultKind.ERROR_RESPONSE] == QUICK_RETRY.max_attempts

"""The shard reader on in-process moto: order, resumption, pacing, errors."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import boto3
import pytest

from kinesis_eo.aggregation import UserRecord, aggregate
from kinesis_eo.errors import ConfigurationError, ResourceNotFoundError
from kinesis_eo.retrieval import (
    ReaderConfig,
    ShardReader,
    StartingPosition,
    StreamReader,
    list_shards,
)
from tests.streams import (
    FAST,
    assert_in_shard_order_each_once,
    make_stream,
    put_numbered,
    read_until,
)


def test_stream_reader_reads_ten_thousand_records_over_four_shards_in_order_each_once(
    kinesis: Any,
) -> None:
    make_stream(kinesis, "orders", 4)
    expected = put_numbered(kinesis, "orders", 10_000)

    records = read_until(StreamReader(kinesis, "orders", config=FAST), len(expected))

    assert len(records) == 10_000
    assert len({r.shard_id for r in records}) == 4
    assert_in_shard_order_each_once(records, expected)


def test_moto_sequence_numbers_of_different_lengths_are_ordered_numerically(kinesis: Any) -> None:
    # moto numbers records 1, 2, ... per shard: "10" < "9" as text, so text order would fail here.
    make_stream(kinesis, "short", 1)
    expected = put_numbered(kinesis, "short", 25)

    records = read_until(ShardReader(kinesis, "short", "shardId-000000000000", config=FAST), 25)

    assert [r.data for r in records] == expected
    assert {len(r.sequence_number) for r in records} != {1}
    keys = [r.position.key() for r in records]
    assert keys == sorted(keys)


def test_resuming_after_a_checkpoint_gives_no_gap_and_no_duplicate(kinesis: Any) -> None:
    make_stream(kinesis, "resume", 1)
    expected = put_numbered(kinesis, "resume", 300)
    first = read_until(
        ShardReader(
            kinesis, "resume", "shardId-000000000000", config=ReaderConfig(max_records=120)
        ),
        120,
    )
    checkpoint = first[-1].position

    rest = read_until(
        ShardReader(
            kinesis,
            "resume",
            "shardId-000000000000",
            StartingPosition.after(checkpoint),
            config=FAST,
        ),
        300 - len(first),
    )

    assert [r.data for r in first + rest] == expected


def put_aggregates(client: Any, stream: str, groups: list[list[bytes]]) -> None:
    for group in groups:
        aggregated = aggregate([UserRecord(partition_key="pk", data=d) for d in group])
        client.put_record(
            StreamName=stream,
            Data=aggregated.data,
            PartitionKey=aggregated.partition_key,
            ExplicitHashKey=aggregated.explicit_hash_key,
        )


def test_resuming_inside_a_kpl_aggregate_continues_with_the_next_user_record(
    kinesis: Any,
) -> None:
    make_stream(kinesis, "kpl", 1)
    groups = [[f"g{g}-u{u}".encode() for u in range(10)] for g in range(3)]
    put_aggregates(kinesis, "kpl", groups)
    everything = [d for group in groups for d in group]
    all_records = read_until(ShardReader(kinesis, "kpl", "shardId-000000000000", config=FAST), 30)
    assert [r.data for r in all_records] == everything
    inside = all_records[14]  # the fifth user record of the second aggregate
    assert inside.aggregated
    assert inside.sub_sequence_number == 4

    after = read_until(
        ShardReader(
            kinesis, "kpl", "shardId-000000000000", StartingPosition.after(inside.position), FAST
        ),
        15,
    )
    at = read_until(
        ShardReader(
            kinesis, "kpl", "shardId-000000000000", StartingPosition.at(inside.position), FAST
        ),
        16,
    )

    assert [r.data for r in after] == everything[15:]
    assert [r.data for r in at] == everything[14:]


def test_latest_reads_only_what_arrives_after_the_start(kinesis: Any) -> None:
    make_stream(kinesis, "tip", 1)
    put_numbered(kinesis, "tip", 5)
    reader = iter(
        ShardReader(kinesis, "tip", "shardId-000000000000", StartingPosition.latest(), FAST)
    )
    first = next(reader)
    assert first.records == []
    later = put_numbered(kinesis, "tip", 3, start=100)

    assert [r.data for r in read_until(reader, 3)] == later


def test_at_timestamp_skips_records_that_arrived_before_it(kinesis: Any) -> None:
    make_stream(kinesis, "clock", 1)
    put_numbered(kinesis, "clock", 4)
    time.sleep(1.1)
    cut = datetime.now(UTC)
    time.sleep(0.1)
    later = put_numbered(kinesis, "clock", 4, start=50)

    records = read_until(
        ShardReader(
            kinesis, "clock", "shardId-000000000000", StartingPosition.at_timestamp(cut), FAST
        ),
        4,
    )

    assert [r.data for r in records] == later


class FakeTime:
    """A clock that only moves when the reader sleeps, so pacing is checked exactly."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def count_calls(client: Any, operation: str, now: FakeTime) -> list[float]:
    """Record the fake time of every call of ``operation`` made by ``client``."""
    stamps: list[float] = []
    client.meta.events.register(
        f"before-call.kinesis.{operation}", lambda **_: stamps.append(now.now)
    )
    return stamps


def test_reader_keeps_each_shard_under_five_reads_a_second(kinesis: Any) -> None:
    make_stream(kinesis, "paced", 1)
    put_numbered(kinesis, "paced", 50)
    fake = FakeTime()
    stamps = count_calls(kinesis, "GetRecords", fake)
    config = ReaderConfig(max_records=5, min_read_interval_s=0.2, idle_interval_s=1.0)

    reader = ShardReader(
        kinesis, "paced", "shardId-000000000000", config=config, clock=fake.clock, sleep=fake.sleep
    )
    read_until(reader, 50)

    gaps = [b - a for a, b in pairwise(stamps)]
    assert len(stamps) == 10
    assert all(gap >= 0.2 - 1e-9 for gap in gaps)


def test_a_busy_shards_reads_start_the_interval_apart_whatever_their_round_trip(
    kinesis: Any,
) -> None:
    make_stream(kinesis, "trips", 1)
    put_numbered(kinesis, "trips", 50)
    fake = FakeTime()
    stamps = count_calls(kinesis, "GetRecords", fake)
    # Every answer takes 50 ms to come back.
    kinesis.meta.events.register(
        "after-call.kinesis.GetRecords", lambda **_: setattr(fake, "now", fake.now + 0.05)
    )
    config = ReaderConfig(max_records=5, min_read_interval_s=0.2, idle_interval_s=1.0)

    reader = ShardReader(
        kinesis, "trips", "shardId-000000000000", config=config, clock=fake.clock, sleep=fake.sleep
    )
    read_until(reader, 50)

    # Five a second, the most Kinesis allows a shard: not one every 0.25 s.
    assert [round(b - a, 6) for a, b in pairwise(stamps)] == [0.2] * 9


def test_reader_backs_off_for_the_idle_interval_at_the_tip_of_the_shard(kinesis: Any) -> None:
    make_stream(kinesis, "idle", 1)
    fake = FakeTime()
    stamps = count_calls(kinesis, "GetRecords", fake)
    config = ReaderConfig(min_read_interval_s=0.2, idle_interval_s=1.5)
    batches = iter(
        ShardReader(
            kinesis,
            "idle",
            "shardId-000000000000",
            config=config,
            clock=fake.clock,
            sleep=fake.sleep,
        )
    )

    for _ in range(3):
        assert next(batches).records == []

    assert [b - a for a, b in pairwise(stamps)] == [1.5, 1.5]


def test_reader_exposes_millis_behind_latest(kinesis: Any) -> None:
    make_stream(kinesis, "lag", 1)
    put_numbered(kinesis, "lag", 3)
    reader = ShardReader(kinesis, "lag", "shardId-000000000000", config=FAST)

    batch = next(iter(reader))

    assert batch.millis_behind_latest is not None
    assert reader.millis_behind_latest == batch.millis_behind_latest


def test_reading_a_missing_stream_names_it_in_one_clear_error(kinesis: Any) -> None:
    with pytest.raises(ResourceNotFoundError, match="stream 'nope'") as caught:
        next(iter(ShardReader(kinesis, "nope", "shardId-000000000000")))
    assert "nope" in caught.value.resource


def test_listing_shards_of_a_missing_stream_is_a_clear_error(kinesis: Any) -> None:
    with pytest.raises(ResourceNotFoundError, match="stream 'ghost'"):
        list_shards(kinesis, "ghost")


def test_missing_credentials_give_a_configuration_error_naming_the_stream(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    client = boto3.session.Session().client("kinesis", region_name="us-east-1")

    with pytest.raises(
        ConfigurationError, match=r"credentials.*stream 'orders'|stream 'orders'.*credentials"
    ):
        list_shards(client, "orders")


def test_reader_by_stream_arn(kinesis: Any) -> None:
    make_stream(kinesis, "by-arn", 1)
    arn = kinesis.describe_stream_summary(StreamName="by-arn")["StreamDescriptionSummary"][
        "StreamARN"
    ]
    expected = put_numbered(kinesis, "by-arn", 7)

    records = read_until(ShardReader(kinesis, arn, "shardId-000000000000", config=FAST), 7)

    assert [r.data for r in records] == expected
    assert {r.stream for r in records} == {"by-arn"}

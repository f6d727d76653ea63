"""Which shards may be read: parents to their end before children, after splits and merges."""

from __future__ import annotations

import pytest

from kinesis_eo.records import MAX_HASH_KEY, HashKeyRange, Position
from kinesis_eo.retrieval import Shard, ShardGraph, StartingPosition, StreamRef

HALF = MAX_HASH_KEY // 2


def shard(
    shard_id: str,
    lo: int,
    hi: int,
    parent: str | None = None,
    adjacent: str | None = None,
    closed: bool = False,
) -> Shard:
    return Shard(
        shard_id=shard_id,
        hash_range=HashKeyRange(lo, hi),
        starting_sequence_number="1",
        parent_shard_id=parent,
        adjacent_parent_shard_id=adjacent,
        ending_sequence_number="9" if closed else None,
    )


# s0 was split into s2 and s3; s1 and s3 were later merged into s4.
LINEAGE = ShardGraph(
    [
        shard("s0", 0, HALF, closed=True),
        shard("s1", HALF + 1, MAX_HASH_KEY, closed=True),
        shard("s2", 0, HALF // 2, parent="s0"),
        shard("s3", HALF // 2 + 1, HALF, parent="s0", closed=True),
        shard("s4", HALF // 2 + 1, MAX_HASH_KEY, parent="s3", adjacent="s1"),
    ]
)


def ids(shards: list[Shard]) -> list[str]:
    return [s.shard_id for s in shards]


def test_only_shards_without_unfinished_parents_are_ready_at_first() -> None:
    assert ids(LINEAGE.ready(finished=set())) == ["s0", "s1"]


def test_split_children_become_ready_when_their_parent_is_finished() -> None:
    assert ids(LINEAGE.ready(finished={"s0"})) == ["s1", "s2", "s3"]


def test_a_merged_child_waits_for_both_parents() -> None:
    assert "s4" not in ids(LINEAGE.ready(finished={"s0", "s3"}))
    assert "s4" not in ids(LINEAGE.ready(finished={"s0", "s1"}))
    assert ids(LINEAGE.ready(finished={"s0", "s1", "s3"})) == ["s2", "s4"]


def test_parents_that_aged_out_of_retention_do_not_block_their_children() -> None:
    graph = ShardGraph([shard("s2", 0, HALF, parent="s0"), shard("s3", HALF + 1, MAX_HASH_KEY)])
    assert ids(graph.ready(finished=set())) == ["s2", "s3"]
    assert graph.parents_of("s2") == ()


def test_graph_knows_children_and_open_shards() -> None:
    assert LINEAGE.children_of("s0") == ("s2", "s3")
    assert LINEAGE.children_of("s1") == ("s4",)
    assert ids(LINEAGE.open_shards()) == ["s2", "s4"]


def test_stream_ref_accepts_a_name_or_an_arn() -> None:
    by_name = StreamRef.of("orders")
    by_arn = StreamRef.of("arn:aws:kinesis:us-east-1:123456789012:stream/orders")
    assert by_name.params() == {"StreamName": "orders"}
    assert by_arn.params() == {"StreamARN": "arn:aws:kinesis:us-east-1:123456789012:stream/orders"}
    assert by_arn.label == "orders"


def test_starting_positions_say_which_records_they_admit() -> None:
    checkpoint = Position("100", 3)
    after = StartingPosition.after(checkpoint)
    at = StartingPosition.at(checkpoint)

    assert not after.admits(Position("100", 3))
    assert after.admits(Position("100", 4))
    assert at.admits(Position("100", 3))
    assert not at.admits(Position("100", 2))
    assert after.iterator_params() == {
        "ShardIteratorType": "AT_SEQUENCE_NUMBER",
        "StartingSequenceNumber": "100",
    }
    assert StartingPosition.trim_horizon().iterator_params() == {
        "ShardIteratorType": "TRIM_HORIZON"
    }


def test_starting_position_refuses_inconsistent_arguments() -> None:
    from kinesis_eo.retrieval import StartKind

    with pytest.raises(ValueError, match="needs position"):
        StartingPosition(StartKind.AFTER_POSITION)
    with pytest.raises(ValueError, match="timestamp"):
        StartingPosition(StartKind.AT_TIMESTAMP)

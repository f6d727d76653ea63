"""Positions order numerically at any length and keep that order as DynamoDB text keys."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kinesis_eo.records import (
    MAX_HASH_KEY,
    SEQUENCE_KEY_WIDTH,
    HashKeyRange,
    Position,
    hash_key_of,
)

sequence_numbers = st.integers(min_value=0, max_value=10**129 - 1).map(str)
positions = st.builds(Position, sequence_numbers, st.integers(min_value=0, max_value=2**32))


def test_short_sequence_numbers_compare_as_numbers_not_text() -> None:
    assert Position("9") < Position("10")
    assert Position("10", 0) < Position("10", 1) < Position("11", 0)


def test_emulator_and_aws_length_sequence_numbers_compare_correctly() -> None:
    aws = Position("49680587388671323857699883345755880729002972924071641090")
    assert Position("2") < aws
    assert aws < Position("49680587388671323857699883345757089654822587553246347266")


@given(positions, positions)
def test_key_text_order_is_position_order(a: Position, b: Position) -> None:
    assert (a.key() < b.key()) == (a < b)
    assert (a.key() == b.key()) == (a == b)


@given(positions)
def test_key_is_fixed_width_and_round_trips(p: Position) -> None:
    key = p.key()
    assert len(key) == SEQUENCE_KEY_WIDTH + 1 + 20
    assert Position.from_key(key) == p


@pytest.mark.parametrize("bad", ["", "12a", "-1", "1" * 130, " 1"])
def test_malformed_sequence_numbers_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="sequence number"):
        Position(bad)


def test_hash_key_is_md5_of_the_partition_key_unless_explicit() -> None:
    # md5("a") = 0cc175b9c0f1b6a831c399e269772661
    assert hash_key_of("a") == 0x0CC175B9C0F1B6A831C399E269772661
    assert hash_key_of("a", "42") == 42
    assert hash_key_of("a") in HashKeyRange(0, MAX_HASH_KEY)
    assert 5 not in HashKeyRange(6, 9)

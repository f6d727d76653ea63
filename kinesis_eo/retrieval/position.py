"""Where reading a shard begins, and the floor below which records are dropped."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from kinesis_eo.records import Position

__all__ = ["StartKind", "StartingPosition"]


class StartKind(Enum):
    """Where a shard iterator starts: the trim horizon, the tip, a timestamp, or at or after a
    position.
    """

    TRIM_HORIZON = "TRIM_HORIZON"
    LATEST = "LATEST"
    AT_TIMESTAMP = "AT_TIMESTAMP"
    AT_POSITION = "AT_POSITION"
    AFTER_POSITION = "AFTER_POSITION"


@dataclass(frozen=True, slots=True)
class StartingPosition:
    """Where reading a shard begins; also the floor below which records are dropped."""

    kind: StartKind
    position: Position | None = None
    timestamp: datetime | None = None

    def __post_init__(self) -> None:
        needs_position = self.kind in (StartKind.AT_POSITION, StartKind.AFTER_POSITION)
        if needs_position != (self.position is not None):
            raise ValueError(
                f"{self.kind.value} {'needs' if needs_position else 'takes no'} position"
            )
        if (self.kind is StartKind.AT_TIMESTAMP) != (self.timestamp is not None):
            raise ValueError("AT_TIMESTAMP needs a timestamp, and only it takes one")

    @classmethod
    def trim_horizon(cls) -> StartingPosition:
        return cls(StartKind.TRIM_HORIZON)

    @classmethod
    def latest(cls) -> StartingPosition:
        return cls(StartKind.LATEST)

    @classmethod
    def at_timestamp(cls, timestamp: datetime) -> StartingPosition:
        return cls(StartKind.AT_TIMESTAMP, timestamp=timestamp)

    @classmethod
    def at(cls, position: Position) -> StartingPosition:
        """Start with the record at ``position`` (inclusive)."""
        return cls(StartKind.AT_POSITION, position=position)

    @classmethod
    def after(cls, position: Position) -> StartingPosition:
        """Start with the first record after ``position`` (a checkpoint)."""
        return cls(StartKind.AFTER_POSITION, position=position)

    def iterator_params(self) -> dict[str, Any]:
        if self.position is not None:
            return {
                "ShardIteratorType": "AT_SEQUENCE_NUMBER",
                "StartingSequenceNumber": self.position.sequence_number,
            }
        if self.timestamp is not None:
            return {"ShardIteratorType": "AT_TIMESTAMP", "Timestamp": self.timestamp}
        return {"ShardIteratorType": self.kind.value}

    def admits(self, position: Position) -> bool:
        if self.position is None:
            return True
        if self.kind is StartKind.AT_POSITION:
            return position >= self.position
        return position > self.position

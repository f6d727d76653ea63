"""Checkpoints: where each shard's consumer resumes, in the KCL lease-table schema.

An item per shard keyed by ``leaseKey`` (the shard id) with ``checkpoint``
(a sequence number, or ``SHARD_END`` once a closed shard is fully processed)
and ``checkpointSubSequenceNumber``, as the Java KCL writes them (the attribute
names are the lease table's, :mod:`kinesis_eo.leases.model`), so that a
consumer's checkpoint table can grow into a worker's lease table in place.

A checkpoint only saves re-reading: the ledger makes a replay harmless, so a
crash between the sink commit and the checkpoint costs time, never an effect.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from kinesis_eo.flow import Call
from kinesis_eo.leases.model import CHECKPOINT, LEASE_KEY, SUB_SEQUENCE, Sentinel
from kinesis_eo.records import Position
from kinesis_eo.retrieval import StartingPosition
from kinesis_eo.tables import create_table, create_table_flow

__all__ = [
    "SHARD_END",
    "Checkpoint",
    "CheckpointStore",
    "DynamoDBCheckpointStore",
    "MemoryCheckpointStore",
    "create_checkpoint_table",
]

SHARD_END = Sentinel.SHARD_END.value


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A shard's resume point: after ``position``, or nothing left (``shard_end``)."""

    position: Position | None = None
    shard_end: bool = False

    def __post_init__(self) -> None:
        if self.shard_end == (self.position is not None):
            raise ValueError("a checkpoint is either a position or SHARD_END")

    def starting_position(self) -> StartingPosition:
        if self.position is None:
            raise ValueError("a finished shard has no starting position")
        return StartingPosition.after(self.position)


class CheckpointStore(ABC):
    """Where the single-process consumer keeps each shard's checkpoint; ``load`` and ``save`` are
    flows.
    """

    @abstractmethod
    def load(self) -> Generator[Any, Any, dict[str, Checkpoint]]:
        """Every shard's checkpoint."""

    @abstractmethod
    def save(self, shard_id: str, checkpoint: Checkpoint) -> Generator[Any, Any, None]:
        """Record a shard's checkpoint."""


class MemoryCheckpointStore(CheckpointStore):
    """Checkpoints in a dict, for tests and one-off runs: lost when the process ends."""

    def __init__(self) -> None:
        self.checkpoints: dict[str, Checkpoint] = {}
        self._lock = threading.Lock()

    def load(self) -> Generator[Any, Any, dict[str, Checkpoint]]:
        with self._lock:
            return dict(self.checkpoints)
        yield  # a flow that makes no calls

    def save(self, shard_id: str, checkpoint: Checkpoint) -> Generator[Any, Any, None]:
        with self._lock:
            self.checkpoints[shard_id] = checkpoint
        return
        yield  # a flow that makes no calls


class DynamoDBCheckpointStore(CheckpointStore):
    """Checkpoints in a DynamoDB table of the KCL lease table's shape (``leaseKey``,
    ``checkpoint``), one item per shard.
    """

    def __init__(self, table_name: str) -> None:
        self.table_name = table_name
        self._resource = f"checkpoint table '{table_name}'"

    def load(self) -> Generator[Any, Any, dict[str, Checkpoint]]:
        checkpoints: dict[str, Checkpoint] = {}
        params: dict[str, Any] = {"TableName": self.table_name, "ConsistentRead": True}
        while True:
            response = yield Call("scan", params, self._resource, "Scan", "dynamodb")
            for item in response.get("Items", []):
                value = item.get(CHECKPOINT, {}).get("S")
                if value is None or (not value.isdigit() and value != SHARD_END):
                    continue  # TRIM_HORIZON/LATEST placeholders: nothing processed yet
                shard_id = item[LEASE_KEY]["S"]
                if value == SHARD_END:
                    checkpoints[shard_id] = Checkpoint(shard_end=True)
                else:
                    sub = int(item.get(SUB_SEQUENCE, {}).get("N", "0"))
                    checkpoints[shard_id] = Checkpoint(Position(value, sub))
            if "LastEvaluatedKey" not in response:
                return checkpoints
            params = {**params, "ExclusiveStartKey": response["LastEvaluatedKey"]}

    def save(self, shard_id: str, checkpoint: Checkpoint) -> Generator[Any, Any, None]:
        if checkpoint.position is None:
            value, sub = SHARD_END, 0
        else:
            position = checkpoint.position
            value, sub = position.sequence_number, position.sub_sequence_number
        yield Call(
            "update_item",
            {
                "TableName": self.table_name,
                "Key": {LEASE_KEY: {"S": shard_id}},
                "UpdateExpression": "SET #c = :c, #s = :s",
                "ExpressionAttributeNames": {"#c": CHECKPOINT, "#s": SUB_SEQUENCE},
                "ExpressionAttributeValues": {":c": {"S": value}, ":s": {"N": str(sub)}},
            },
            self._resource,
            "UpdateItem",
            "dynamodb",
        )


def create_checkpoint_table(client: Any, table_name: str) -> None:
    """Create a checkpoint table (KCL lease-table key schema, on-demand); harmless if it exists."""
    create_table(client, create_table_flow(table_name, [(LEASE_KEY, "HASH")]))

"""Shard discovery and the parent/child graph that orders reading across reshards.

A split closes one parent and opens two children; a merge closes two parents
(``ParentShardId`` and ``AdjacentParentShardId``) and opens one child. Records
of a key move from parent to child, so a child is read only once every parent
it has is processed to its end; parents that fell out of the retention window
(no longer listed) do not hold a child back.
"""

from __future__ import annotations

from collections.abc import Collection, Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kinesis_eo.flow import Call
from kinesis_eo.records import HashKeyRange

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "ChildShard",
    "Shard",
    "ShardGraph",
    "StreamRef",
    "list_shards_flow",
]

# ListShards accepts up to 10,000; one page covers all but the largest streams.
DEFAULT_PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class StreamRef:
    """A stream named by name or ARN; the ARN wins where AWS takes both."""

    name: str | None = None
    arn: str | None = None

    def __post_init__(self) -> None:
        if not (self.name or self.arn):
            raise ValueError("a stream needs a name or an ARN")

    @classmethod
    def of(cls, stream: str | StreamRef) -> StreamRef:
        if isinstance(stream, StreamRef):
            return stream
        if stream.startswith("arn:"):
            return cls(name=stream.rsplit("/", 1)[-1], arn=stream)
        return cls(name=stream)

    @property
    def label(self) -> str:
        return str(self.name or self.arn)

    def params(self) -> dict[str, str]:
        """The request parameters that name this stream."""
        return {"StreamARN": self.arn} if self.arn else {"StreamName": str(self.name)}

    def __str__(self) -> str:
        return f"stream '{self.label}'"


@dataclass(frozen=True, slots=True)
class Shard:
    """One shard as ``ListShards`` describes it: hash key range, parents, and its ending sequence
    number once closed.
    """

    shard_id: str
    hash_range: HashKeyRange
    starting_sequence_number: str
    parent_shard_id: str | None = None
    adjacent_parent_shard_id: str | None = None
    # Set once the shard is closed by a split or merge; None while it takes writes.
    ending_sequence_number: str | None = None

    @property
    def parent_ids(self) -> tuple[str, ...]:
        return tuple(p for p in (self.parent_shard_id, self.adjacent_parent_shard_id) if p)

    @property
    def is_open(self) -> bool:
        return self.ending_sequence_number is None

    @classmethod
    def from_aws(cls, value: Mapping[str, Any]) -> Shard:
        sequence_range = value["SequenceNumberRange"]
        return cls(
            shard_id=value["ShardId"],
            hash_range=HashKeyRange.from_aws(value["HashKeyRange"]),
            starting_sequence_number=sequence_range["StartingSequenceNumber"],
            parent_shard_id=value.get("ParentShardId"),
            adjacent_parent_shard_id=value.get("AdjacentParentShardId"),
            ending_sequence_number=sequence_range.get("EndingSequenceNumber"),
        )


@dataclass(frozen=True, slots=True)
class ChildShard:
    """A child named by GetRecords at the end of a closed shard."""

    shard_id: str
    parent_shard_ids: tuple[str, ...]
    hash_range: HashKeyRange

    @classmethod
    def from_aws(cls, value: Mapping[str, Any]) -> ChildShard:
        return cls(
            shard_id=value["ShardId"],
            parent_shard_ids=tuple(value.get("ParentShards", ())),
            hash_range=HashKeyRange.from_aws(value["HashKeyRange"]),
        )


class ShardGraph:
    """The shards of a stream with their lineage, and which of them may be read now."""

    def __init__(self, shards: Iterable[Shard]) -> None:
        self._shards: dict[str, Shard] = {s.shard_id: s for s in shards}
        children: dict[str, list[str]] = {}
        for shard in self._shards.values():
            for parent in shard.parent_ids:
                children.setdefault(parent, []).append(shard.shard_id)
        self._children = {k: tuple(sorted(v)) for k, v in children.items()}

    def __contains__(self, shard_id: object) -> bool:
        return shard_id in self._shards

    def __len__(self) -> int:
        return len(self._shards)

    def __getitem__(self, shard_id: str) -> Shard:
        return self._shards[shard_id]

    @property
    def shards(self) -> list[Shard]:
        return sorted(self._shards.values(), key=lambda s: s.shard_id)

    def parents_of(self, shard_id: str) -> tuple[str, ...]:
        """Parents still listed; older ones have aged out with their records."""
        return tuple(p for p in self._shards[shard_id].parent_ids if p in self._shards)

    def children_of(self, shard_id: str) -> tuple[str, ...]:
        return self._children.get(shard_id, ())

    def ready(self, finished: Collection[str]) -> list[Shard]:
        """Shards that are not finished and whose listed parents all are."""
        return [
            shard
            for shard in self.shards
            if shard.shard_id not in finished
            and all(parent in finished for parent in self.parents_of(shard.shard_id))
        ]

    def open_shards(self) -> list[Shard]:
        return [shard for shard in self.shards if shard.is_open]


def list_shards_flow(
    stream: StreamRef, page_size: int = DEFAULT_PAGE_SIZE
) -> Generator[Call, Any, ShardGraph]:
    """All shards of a stream, paging as AWS requires: later pages carry only NextToken."""
    shards: list[Shard] = []
    params: dict[str, Any] = {**stream.params(), "MaxResults": page_size}
    while True:
        response = yield Call("list_shards", params, str(stream), "ListShards", "kinesis")
        shards.extend(Shard.from_aws(s) for s in response.get("Shards", ()))
        token = response.get("NextToken")
        if not token:
            return ShardGraph(shards)
        # AWS rejects a request that names the stream beside a NextToken.
        params = {"NextToken": token, "MaxResults": page_size}

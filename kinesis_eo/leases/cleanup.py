"""Which leases of finished shards may go, and which listed shards need no lease again.

Without cleanup a lease table grows with every split and merge. As in the
Java KCL, the lease of a shard read to its end (``SHARD_END``) is deleted once
every child has a lease that is *under way*: checkpointed at a sequence number
or finished itself. A child still at ``TRIM_HORIZON`` or ``LATEST`` may not have
been read at all, so its parent stays: the parent's ``SHARD_END`` is what lets
the child be taken. The oldest go first: a lease whose parents still have
leases waits, so that a parent never outlives a child it needs to be judged by.

The stream keeps listing a parent for its retention period after its lease
is gone, so shard sync must not take "listed without a lease" for "new":
:func:`retired_shards` names the listed shards that are ancestors of a shard
under way, which were read (or fell out of reach) before it, and must not be
read again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from kinesis_eo.leases.model import Lease
from kinesis_eo.retrieval.shards import ShardGraph

__all__ = [
    "plan_cleanup",
    "retired_shards",
    "under_way",
]


def under_way(lease: Lease) -> bool:
    """Read past its start: checkpointed at a sequence number, or finished."""
    return lease.finished or lease.position is not None


def plan_cleanup(
    leases: Sequence[Lease],
    idle: Callable[[Lease], bool],
    graph: ShardGraph | None = None,
) -> list[Lease]:
    """The leases of finished shards that may be deleted now, as seen.

    A lease goes when its checkpoint is ``SHARD_END``; every child it recorded
    (or, having recorded none, every child ``graph`` lists) has a lease under
    way; none of its parents has a lease any more; and it is ``idle``: free,
    or its owner stopped renewing it. One round deletes one generation: had a
    child gone in the round its parent's delete failed, the parent, whose child
    then has no lease, would never go.
    """
    by_shard = {lease.shard_id: lease for lease in leases}

    def children_of(lease: Lease) -> Iterable[str]:
        if lease.children:
            return lease.children
        if graph is not None and lease.shard_id in graph:
            return graph.children_of(lease.shard_id)
        return ()

    def children_under_way(lease: Lease) -> bool:
        children = list(children_of(lease))
        return bool(children) and all(
            child in by_shard and under_way(by_shard[child]) for child in children
        )

    return [
        lease
        for lease in by_shard.values()
        if lease.finished
        and not any(parent in by_shard for parent in lease.parents)
        and children_under_way(lease)
        and idle(lease)
    ]


def retired_shards(graph: ShardGraph, leases: Iterable[Lease]) -> set[str]:
    """Listed shards without a lease that must not get one: ancestors of a shard under way.

    A descendant is only read once its ancestors are finished, so an ancestor
    of a lease under way was read to its end (its lease since cleaned up) or
    was out of reach when the descendant started. A new lease would read it
    again, after its descendant.
    """
    by_shard = {lease.shard_id: lease for lease in leases}
    parents: dict[str, set[str]] = {}
    for shard in graph.shards:
        parents.setdefault(shard.shard_id, set()).update(shard.parent_ids)
    for lease in by_shard.values():
        parents.setdefault(lease.shard_id, set()).update(lease.parents)
    ancestors: set[str] = set()
    # Iterative, not recursive: years of resharding make lineages deeper than the stack.
    pending = [lease.shard_id for lease in by_shard.values() if under_way(lease)]
    while pending:
        for parent in parents.get(pending.pop(), ()):
            if parent not in ancestors:
                ancestors.add(parent)
                pending.append(parent)
    return {shard.shard_id for shard in graph.shards if shard.shard_id in ancestors} - set(by_shard)

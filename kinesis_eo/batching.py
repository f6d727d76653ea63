"""Cutting a run of entries, in order, into batch calls within a count and a size limit.

PutRecords, SendMessageBatch and BatchWriteItem each take a bounded number of
entries and a bounded number of bytes per call; every sender of such batches
plans them here, so that all close a batch the same way: only when the next
entry does not fit in it.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["plan_batches"]


def plan_batches(sizes: Sequence[int], max_count: int, max_bytes: int) -> list[range]:
    """Index ranges over entries of these sizes, in order, each within both limits.

    A batch is closed only when the next entry would make it hold more than
    ``max_count`` entries or ``max_bytes`` bytes. An entry larger than
    ``max_bytes`` on its own goes alone in its batch: the caller decides
    whether such an entry may be sent at all.
    """
    batches: list[range] = []
    start = total = 0
    for index, size in enumerate(sizes):
        count = index - start
        if count and (count == max_count or total + size > max_bytes):
            batches.append(range(start, index))
            start, total = index, 0
        total += size
    if start < len(sizes):
        batches.append(range(start, len(sizes)))
    return batches

"""Leases: one worker per shard at a time, with a fencing token that reaches the sink."""

from kinesis_eo.leases.cleanup import plan_cleanup, retired_shards
from kinesis_eo.leases.manager import LeaseManager, Observations, plan_takes
from kinesis_eo.leases.model import Lease, LeaseConfig, LeaseLostError, Sentinel
from kinesis_eo.leases.store import (
    DynamoDBLeaseStore,
    LeaseConflictError,
    LeaseStore,
    MemoryLeaseStore,
    create_lease_table,
)

__all__ = [
    "DynamoDBLeaseStore",
    "Lease",
    "LeaseConfig",
    "LeaseConflictError",
    "LeaseLostError",
    "LeaseManager",
    "LeaseStore",
    "MemoryLeaseStore",
    "Observations",
    "Sentinel",
    "create_lease_table",
    "plan_cleanup",
    "plan_takes",
    "retired_shards",
]

"""Leases: one worker per shard at a time, with a fencing token that reaches the sink."""

from kinesis_eo.leases.assignment import Assignment, plan_assignment
from kinesis_eo.leases.balancing import Observations, plan_takes
from kinesis_eo.leases.cleanup import plan_cleanup, retired_shards
from kinesis_eo.leases.coordinator import Coordinator
from kinesis_eo.leases.dynamodb import DynamoDBLeaseStore, create_lease_table
from kinesis_eo.leases.manager import LeaseManager
from kinesis_eo.leases.model import Lease, LeaseConfig, LeaseLostError, Sentinel, WorkerReport
from kinesis_eo.leases.store import LeaseConflictError, LeaseStore, MemoryLeaseStore

__all__ = [
    "Assignment",
    "Coordinator",
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
    "WorkerReport",
    "create_lease_table",
    "plan_assignment",
    "plan_cleanup",
    "plan_takes",
    "retired_shards",
]

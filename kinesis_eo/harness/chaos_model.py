"""What a chaos run is asked to do (`ChaosConfig`) and what it found (`ChaosReport`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum

__all__ = ["Adapter", "ChaosConfig", "ChaosReport", "KinesisBackend", "ReadMode"]


class KinesisBackend(Enum):
    """The emulator that serves Kinesis in a chaos run (kinesis-mock is needed for resharding)."""

    MOTO = "moto"
    KINESIS_MOCK = "kinesis-mock"


class ReadMode(Enum):
    """How the workers read: GetRecords, or a subscription through an enhanced fan-out consumer."""

    POLLING = "polling"
    EFO = "efo"


class Adapter(Enum):
    """What consumes: worker processes sharing leases, or the Lambda handler under an ESM."""

    WORKER = "worker"
    LAMBDA = "lambda"


@dataclass(frozen=True)
class ChaosConfig:
    """The settings of one ``kinesis-eo chaos`` run: events, workers, shards, seed, back-ends and
    fault rates.
    """

    events: int = 2000
    workers: int = 3
    shards: int = 4
    seed: int = 1
    kinesis: KinesisBackend = KinesisBackend.MOTO
    adapter: Adapter = Adapter.WORKER
    # EFO: every worker subscribes through the consumer EFO_CONSUMER (kinesis-mock only:
    # moto has no SubscribeToShard), registered the way `kinesis-eo run --efo` registers it.
    read: ReadMode = ReadMode.POLLING
    # Reading by subscription: mean seconds between cuts of every open subscription's
    # connection (the bridge aborts them, as a network fault would); 0: none.
    sever_every_s: float = 4.0
    failover_s: float = 3.0
    # Production is spread over this long, so that faults land while it runs.
    produce_s: float = 20.0
    # Mean seconds between SIGKILLs of a random worker, and between zombies.
    kill_every_s: float = 5.0
    zombie_every_s: float = 12.0
    # Every n-th event is poison (its handler always fails): it must be dead-lettered.
    poison_every: int = 500
    # Share of PutRecords entries stored but reported failed: the producer sends them again.
    producer_duplicate_rate: float = 0.02
    throttle_probability: float = 0.02
    disconnect_probability: float = 0.005
    crash_after_commit_probability: float = 0.01
    # Per handler call: the worker SIGSTOPs itself with a commit in hand; the
    # harness lets it sleep past its lease and wakes it: a zombie.
    pause_in_handler_probability: float = 0.0005
    # Split one shard, then merge two, while events are produced (kinesis-mock only).
    reshard: bool = True
    # Share of events whose handler result DynamoDB refuses: each must be dead-lettered
    # as INVALID_WRITE, never applied (see kinesis_eo.harness.chaos_faults).
    invalid_write_rate: float = 0.0
    # A window this long, starting at a seeded time while events are produced, in
    # which the sink is down: the shards pause, and nothing may be dead-lettered for it.
    sink_outage_s: float = 0.0
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.events < 1 or self.workers < 1 or self.shards < 1:
            raise ValueError("events, workers and shards must be positive")
        if not 0.0 <= self.invalid_write_rate < 1.0:
            raise ValueError("invalid_write_rate is a share of the events, from 0 to below 1")
        if not 0.0 <= self.sink_outage_s < float("inf"):
            raise ValueError("sink_outage_s is 0 or more seconds")
        if not 0.0 <= self.sever_every_s < float("inf"):
            raise ValueError("sever_every_s is 0 or more seconds")
        if self.read is ReadMode.EFO and self.kinesis is not KinesisBackend.KINESIS_MOCK:
            raise ValueError(
                "reading by subscription needs kinesis-mock: moto has no SubscribeToShard"
            )
        if self.read is ReadMode.EFO and self.adapter is not Adapter.WORKER:
            raise ValueError("reading by subscription is the workers': the simulated mapping polls")


@dataclass
class ChaosReport:
    """What a chaos run found: per produced event applied once, twice, missing or dead-lettered, and
    the faults injected.
    """

    produced: int = 0
    effects: int = 0
    missing: int = 0
    duplicated: int = 0
    dead_lettered: int = 0
    poison: int = 0
    kills: int = 0
    zombies: int = 0
    zombies_fenced: int = 0
    reshards: int = 0
    throttles_injected: int = 0
    connection_faults_injected: int = 0
    producer_duplicates: int = 0
    # Distinct events given a write DynamoDB refuses; those of them with an
    # INVALID_WRITE letter; those of them applied all the same (must be 0).
    invalid_writes_injected: int = 0
    invalid_writes_dead_lettered: int = 0
    invalid_writes_applied: int = 0
    # How long the sink was down, the pauses it caused, and the events
    # dead-lettered for it (must be 0: an outage dead-letters nothing).
    outage_s: float = 0.0
    outage_pauses: int = 0
    outage_dead_lettered: int = 0
    wall_s: float = 0.0
    emulator: str = ""
    # How the workers read, and the calls that show it: GetRecords when polling,
    # SubscribeToShard (and no GetRecords) when reading by subscription.
    read: str = ReadMode.POLLING.value
    get_records_calls: int = 0
    subscribe_calls: int = 0
    # Subscriptions whose connection the harness cut (reading by subscription only).
    subscriptions_severed: int = 0
    seed: int = 0
    workers: int = 0
    missing_ids: list[str] = field(default_factory=list)
    duplicated_ids: list[str] = field(default_factory=list)
    invalid_writes_missing_ids: list[str] = field(default_factory=list)
    outage_dead_lettered_ids: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.missing == 0
            and self.duplicated == 0
            and self.invalid_writes_dead_lettered == self.invalid_writes_injected
            and self.invalid_writes_applied == 0
            and self.outage_dead_lettered == 0
        )

    def failure(self) -> str:
        """What went wrong, in one line ("" when ok)."""
        problems = [
            f"{self.missing} effects lost" if self.missing else "",
            f"{self.duplicated} applied twice" if self.duplicated else "",
            (
                f"{self.invalid_writes_injected - self.invalid_writes_dead_lettered} invalid "
                "writes not dead-lettered"
            )
            if self.invalid_writes_dead_lettered != self.invalid_writes_injected
            else "",
            f"{self.invalid_writes_applied} invalid writes applied"
            if self.invalid_writes_applied
            else "",
            f"{self.outage_dead_lettered} dead-lettered for the outage"
            if self.outage_dead_lettered
            else "",
        ]
        return ", ".join(p for p in problems if p)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "ok": self.ok}, indent=2, sort_keys=True)

"""The scale scenario for real: worker processes on moto, records flowing, one killed, one added.

    python bench/scale.py --moto --shards 200 --workers 8 --report scale-moto.json

Built from the chaos harness's pieces (:mod:`kinesis_eo.harness.chaos`): moto
over HTTP with undo-log transactions, the stream and tables, the producer, and
:class:`~kinesis_eo.harness.chaos_fleet.Fleet`, whose workers are built by
``runner.build_worker`` as ``kinesis-eo run`` builds them, here with every fault
off. The producer sends at a steady rate across all shards for the whole run;
the workers apply a non-idempotent effect per event (``ADD applied 1``). The
harness scans the lease table (consistent reads) every ``probe_every_s`` and
reads the same :class:`bench.scale.Probe` the simulation does. Each worker bills
its own lease-table requests in DynamoDB units (:mod:`kinesis_eo.harness.capacity`)
and writes the totals to its stats file.

Scenario: cold start (all owned, then balanced), a steady window, a SIGKILL of a
worker that is not the coordinator, a worker added, production stopped, every
effect applied, a graceful shutdown, then the effects table says whether each
produced event was applied exactly once (exit 1 if not).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.scale import (
    BALANCED,
    LeaseView,
    Probe,
    TableView,
    _flaps,
    _periods,
    at_most,
    recovery_targets,
)
from bench.scale import run as simulate
from kinesis_eo.deadletter import read_dead_letters
from kinesis_eo.harness.chaos import Production, backends, create_resources
from kinesis_eo.harness.chaos_fleet import Fleet
from kinesis_eo.harness.chaos_model import ChaosConfig
from kinesis_eo.harness.chaos_worker import WorkerSpec
from kinesis_eo.harness.scenario import Names, applied_counts, client, numbered_events, verify
from kinesis_eo.leases import LeaseConfig
from kinesis_eo.leases.dynamodb import lease_from_item
from kinesis_eo.leases.model import COORDINATOR_KEY, LEASE_KEY, OWNER, is_entity_key

__all__ = ["MotoScenario", "main", "run"]


@dataclass(frozen=True)
class MotoScenario:
    """One real run's sizes and timings; waits are in failover periods."""

    shards: int
    workers: int
    failover_s: float = 20.0
    seed: int = 7
    # Records per second produced across all shards, for the whole run.
    rate_per_s: float = 10.0
    probe_every_s: float = 2.0
    # After balance, before the steady window (as the simulation does).
    settle_periods: float = 2.0
    steady_periods: float = 6.0
    # The longest any one wait may take before the run reports it as never reached.
    wait_periods: float = 15.0
    # After production stops: the longest wait for every effect.
    drain_s: float = 300.0
    # GetRecords interval of a shard with nothing new, and checkpoint interval: 200 shards
    # poll and checkpoint on one emulator, which serves one request at a time.
    idle_interval_s: float = 10.0
    checkpoint_interval_s: float = 10.0
    # Production is planned for this long at most; the run stops it sooner.
    max_produce_s: float = 1800.0


class _Run:
    """The emulators, the fleet and the probe of one run, and the waits between its steps."""

    def __init__(self, scenario: MotoScenario, stack: contextlib.ExitStack, say: Any) -> None:
        self.scenario = scenario
        self.say = say
        self.config = ChaosConfig(
            events=int(scenario.rate_per_s * scenario.max_produce_s),
            workers=scenario.workers,
            shards=scenario.shards,
            seed=scenario.seed,
            failover_s=scenario.failover_s,
            produce_s=scenario.max_produce_s,
            kill_every_s=0.0,
            zombie_every_s=0.0,
            poison_every=0,
            producer_duplicate_rate=0.0,
            throttle_probability=0.0,
            disconnect_probability=0.0,
            crash_after_commit_probability=0.0,
            pause_in_handler_probability=0.0,
            reshard=False,
            sever_every_s=0.0,
        )
        moto, kinesis_endpoint, self.emulator, _ = backends(self.config, stack, moto_process=True)
        self.kinesis = client("kinesis", kinesis_endpoint)
        self.dynamodb = client("dynamodb", moto.endpoint_url)
        self.names = Names.fresh("scale", "scale")
        create_resources(self.config, self.kinesis, self.dynamodb, self.names)
        self.plan = numbered_events(self.config.events, scenario.seed, 0)
        self.production = Production(self.config, kinesis_endpoint, self.names.stream)
        self.directory = Path(tempfile.mkdtemp(prefix="kinesis-eo-scale-"))
        self.base = WorkerSpec(
            worker_id="",
            stream=self.names.stream,
            kinesis_endpoint=kinesis_endpoint,
            dynamodb_endpoint=moto.endpoint_url,
            lease_table=self.names.leases,
            ledger_table=self.names.ledger,
            effects_table=self.names.effects,
            dead_letter_table=self.names.dead_letters,
            consumer_group=self.names.group,
            stats_file="",
            seed=scenario.seed,
            failover_s=scenario.failover_s,
            throttle_probability=0.0,
            disconnect_probability=0.0,
            meter_lease_table=True,
            idle_interval_s=scenario.idle_interval_s,
            checkpoint_interval_s=scenario.checkpoint_interval_s,
        )
        self.started = time.monotonic()
        self.probe = Probe(self.scan, self.clock, fresh=False, expected=scenario.shards)
        self.items: dict[str, dict[str, Any]] = {}
        self.coordinator: str | None = None
        self.fleet: Fleet | None = None
        self.produced_per_s = 0.0

    def clock(self) -> float:
        return time.monotonic() - self.started

    def start(self) -> Fleet:
        self.production.start(self.plan.events)
        self.started = time.monotonic()
        self.fleet = Fleet(self.base, self.scenario.workers, self.directory, random.Random(0))
        return self.fleet

    def live(self) -> dict[str, int]:
        """Worker id -> slot of every worker process still running."""
        assert self.fleet is not None
        return {
            f"worker-{slot}.{self.fleet.incarnations[slot]}": slot
            for slot, process in self.fleet.processes.items()
            if process.poll() is None
        }

    def scan(self) -> TableView:
        """The lease table, read consistently, as the probe's view."""
        items: list[dict[str, Any]] = []
        params: dict[str, Any] = {"TableName": self.names.leases, "ConsistentRead": True}
        while True:
            page = self.dynamodb.scan(**params)
            items += page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                break
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        self.items = {item[LEASE_KEY]["S"]: item for item in items}
        coordinator = self.items.get(COORDINATOR_KEY, {}).get(OWNER)
        self.coordinator = coordinator["S"] if coordinator else None
        leases = [lease_from_item(i) for k, i in self.items.items() if not is_entity_key(k)]
        known = [x.throughput for x in leases if x.throughput is not None]
        # Not measured yet: the mean of those that are, as the coordinator assumes.
        unknown = statistics.fmean(known) if known else 1.0
        return TableView(
            {
                x.shard_id: LeaseView(
                    x.owner, x.token, unknown if x.throughput is None else x.throughput
                )
                for x in sorted(leases, key=lambda lease: lease.shard_id)
            },
            frozenset(self.live()),
        )

    def wait(self, done: Callable[[], bool], periods: float | None = None) -> float | None:
        """Seconds until ``done`` holds (asked after each probe), or None within the limit."""
        limit = (periods or self.scenario.wait_periods) * self.scenario.failover_s
        start = time.monotonic()
        while time.monotonic() - start < limit:
            tick = time.monotonic()
            self.probe()
            self.production.check()
            if done():
                return time.monotonic() - start
            time.sleep(max(0.0, self.scenario.probe_every_s - (time.monotonic() - tick)))
        return None

    def meters(self) -> dict[str, dict[str, float]]:
        """Each worker's lease-table totals, from its stats file."""
        assert self.fleet is not None
        totals: dict[str, dict[str, float]] = {}
        for path in self.fleet.stats_files:
            with contextlib.suppress(OSError, ValueError):
                stats = json.loads(path.read_text(encoding="utf-8"))
                totals[stats["worker"]] = stats.get("lease_table", {})
        return totals


def _unit_rates(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], span: float
) -> dict[str, dict[str, float]]:
    rates: dict[str, dict[str, float]] = {}
    for worker, totals in after.items():
        start = before.get(worker, {})
        rates[worker] = {
            kind: round((totals.get(kind, 0.0) - start.get(kind, 0.0)) / span, 3)
            for kind in ("read_units", "write_units")
        }
    return rates


def _steady(run: _Run, report: dict[str, Any], round_s: float) -> None:
    """The steady window: units per second, balance, moves and flaps."""
    scenario = run.scenario
    run.wait(lambda: False, scenario.settle_periods)
    before, moves_before, start = run.meters(), len(run.probe.moves), time.monotonic()
    run.wait(lambda: False, scenario.steady_periods)
    span = time.monotonic() - start
    rates = _unit_rates(before, run.meters(), span)
    live = run.live()
    rates = {w: r for w, r in rates.items() if w in live}
    others = sorted(r["read_units"] for w, r in rates.items() if w != run.coordinator)
    report["read_units_per_s"] = round(sum(r["read_units"] for r in rates.values()), 2)
    report["write_units_per_s"] = round(sum(r["write_units"] for r in rates.values()), 2)
    report["read_units_per_s_per_worker_median"] = others[len(others) // 2] if others else None
    report["read_units_per_s_coordinator"] = (
        rates[run.coordinator]["read_units"] if run.coordinator in rates else None
    )
    report["units_per_s_per_worker"] = rates
    ratio_tp, ratio_count = run.probe.ratios()
    report["max_min_throughput_ratio"] = round(ratio_tp, 3)
    report["max_min_count_ratio"] = round(ratio_count, 3)
    steady_moves = run.probe.moves[moves_before:]
    report["steady_moves"] = len(steady_moves)
    report["flaps"] = _flaps(steady_moves, 10 * round_s)
    report["steady_window_s"] = round(span, 1)
    count = run.probe.loads()[1]
    report["leases_per_worker"] = dict(sorted(count.items()))


def _lease_items(run: _Run, shards: Sequence[str]) -> dict[str, Any]:
    """The lease items of ``shards`` as the last scan read them (for a run that went wrong)."""
    return {s: run.items.get(s) for s in shards}


def _kill(run: _Run, report: dict[str, Any], failover_s: float) -> None:
    """SIGKILL a worker that is not the coordinator; wait until its shards are owned again."""
    assert run.fleet is not None
    view = run.probe.view()
    live = run.live()
    victim = next(w for w in sorted(live) if w != run.coordinator)
    shards = [s for s, lease in view.leases.items() if lease.owner == victim]
    moves_before = len(run.probe.moves)
    run.probe.reset_gaps()
    run.say(f"killing {victim} ({len(shards)} leases; coordinator {run.coordinator})")
    run.fleet.kill(live[victim])
    owned = run.wait(lambda: run.probe.all_owned(shards))
    rebalanced = run.wait(run.probe.balanced) if owned is not None else None
    gaps = [run.probe.max_no_owner.get(s, 0.0) for s in shards]
    death: dict[str, Any] = {
        "worker": victim,
        "leases": len(shards),
        "owned_again_periods": _periods(owned, failover_s),
        "rebalanced_periods": _periods(
            None if owned is None or rebalanced is None else owned + rebalanced, failover_s
        ),
        "max_no_owner_s": round(max(gaps, default=0.0), 2),
        "leases_moved": len(run.probe.moves) - moves_before,
    }
    if owned is None:
        unowned = [s for s in shards if not run.probe.all_owned([s])]
        death["never_owned_again"] = _lease_items(run, unowned)
    report["worker_death"] = death
    report["dead_worker_recovery_periods"] = death["owned_again_periods"]


def _join(run: _Run, report: dict[str, Any], failover_s: float) -> None:
    """Add a worker; wait until it holds leases and the fleet is balanced."""
    assert run.fleet is not None
    slot = max(run.fleet.processes) + 1
    moves_before = len(run.probe.moves)
    run.probe.reset_gaps()
    run.fleet.start(slot)
    joiner = f"worker-{slot}.0"
    run.say(f"added {joiner}")
    joined = run.wait(lambda: run.probe.balanced() and run.probe.loads()[1].get(joiner, 0) > 0)
    report["join"] = {
        "worker": joiner,
        "rebalance_periods": _periods(joined, failover_s),
        "leases_moved": len(run.probe.moves) - moves_before,
        "leases_taken_by_joiner": run.probe.loads()[1].get(joiner, 0),
        "max_no_owner_s": round(max(run.probe.max_no_owner.values(), default=0.0), 2),
    }


def _drain(run: _Run) -> tuple[list[str], float | None]:
    """Stop producing; wait until every produced event's effect is applied."""
    run.production.stop()
    run.production.check()
    produced = [str(e.event_id) for e in run.plan.events[: run.production.sent]]
    run.produced_per_s = len(produced) / max(run.clock(), 1e-9)
    run.say(f"produced {len(produced)} events; waiting for their effects")
    start = time.monotonic()
    while time.monotonic() - start < run.scenario.drain_s:
        applied = applied_counts(run.dynamodb, run.names.effects)
        if all(event_id in applied for event_id in produced):
            return produced, time.monotonic() - start
        time.sleep(2.0)
    return produced, None


def _exactly_once(run: _Run, produced: list[str]) -> dict[str, Any]:
    applied = applied_counts(run.dynamodb, run.names.effects)
    letters = read_dead_letters(run.dynamodb, run.names.dead_letters)
    verdict = verify(applied, letters, produced, {})
    wanted = set(produced)
    return {
        "produced": len(produced),
        "applied": sum(1 for event_id, n in applied.items() if n >= 1 and event_id in wanted),
        "missing": len(verdict.missing),
        "duplicated": len(verdict.duplicated),
        "dead_lettered": len(letters),
        "unexpected_effects": len(applied.keys() - wanted),
        "missing_ids": verdict.missing[:20],
        "duplicated_ids": verdict.duplicated[:20],
    }


def _compared(scenario: MotoScenario, report: dict[str, Any]) -> None:
    """The simulation at the same shards, workers and timings, run here, and its scan baseline."""
    if scenario.workers < 3:
        # Its scenario needs a worker to leave and another to die besides the coordinator.
        report["simulation"] = None
        return
    sim = simulate(
        scenario.shards,
        scenario.workers,
        scenario.seed,
        failover_s=scenario.failover_s,
        checkpoint_interval_s=scenario.checkpoint_interval_s,
    )
    keys = (
        "cold_start_owned_periods",
        "cold_start_balanced_periods",
        "dead_worker_recovery_periods",
        "read_units_per_s",
        "write_units_per_s",
        "read_units_per_s_per_worker_median",
        "read_units_per_s_coordinator",
        "max_min_throughput_ratio",
        "max_min_count_ratio",
        "steady_moves",
        "flaps",
        "read_units_per_s_scan_baseline",
        "write_units_per_s_scan_baseline",
    )
    report["simulation"] = {k: sim[k] for k in keys} | {
        "join": sim["join"],
        "worker_death": sim["worker_death"],
    }
    report["read_units_per_s_scan_baseline"] = sim["read_units_per_s_scan_baseline"]
    report["write_units_per_s_scan_baseline"] = sim["write_units_per_s_scan_baseline"]
    report["read_reduction_x"] = round(
        sim["read_units_per_s_scan_baseline"] / max(report.get("read_units_per_s", 0.0), 1e-9), 1
    )


def _targets(report: dict[str, Any], round_periods: float) -> dict[str, bool | None]:
    once = report["exactly_once"]
    return {
        "exactly once: 0 missing, 0 applied twice": once["missing"] == 0
        and once["duplicated"] == 0,
        "every produced event applied": once["applied"] == once["produced"],
        **recovery_targets(report, round_periods),
        "the added worker takes leases and the fleet balances": report["join"]["rebalance_periods"]
        is not None,
        f"max/min throughput ratio <= {BALANCED} at steady load": at_most(
            report["max_min_throughput_ratio"], BALANCED
        ),
        "no flaps at steady load": report["flaps"] == 0,
        "every shard owned at the end": bool(report["end"]["all_owned"]),
    }


def run(scenario: MotoScenario, say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the scenario on moto; the report (figures, the exactly-once verdict and targets)."""
    say = say or (lambda _: None)
    wall = time.monotonic()
    lease = LeaseConfig("scale", failover_s=scenario.failover_s)
    round_s = lease.take_interval
    failover_s = scenario.failover_s
    report: dict[str, Any] = {
        "mode": "moto",
        "shards": scenario.shards,
        "workers": scenario.workers,
        "seed": scenario.seed,
        "failover_s": failover_s,
        "round_s": round(round_s, 3),
        "records_per_s": scenario.rate_per_s,
        "checkpoint_interval_s": scenario.checkpoint_interval_s,
        "idle_interval_s": scenario.idle_interval_s,
    }
    with contextlib.ExitStack() as stack:
        run_ = _Run(scenario, stack, say)
        report["emulator"] = run_.emulator
        report["logs"] = str(run_.directory)
        fleet = run_.start()
        stack.callback(fleet.shut_down)
        say(f"{scenario.workers} workers started on {scenario.shards} shards")
        owned = run_.wait(run_.probe.all_owned)
        balanced = run_.wait(run_.probe.balanced) if owned is not None else None
        report["cold_start_owned_periods"] = _periods(owned, failover_s)
        report["cold_start_balanced_periods"] = _periods(
            None if balanced is None else run_.clock(), failover_s
        )
        say(f"cold start: owned after {owned} s, balanced after {balanced} s more")
        _steady(run_, report, round_s)
        _kill(run_, report, failover_s)
        _join(run_, report, failover_s)
        produced, drained = _drain(run_)
        run_.probe()
        report["end"] = {
            "all_owned": run_.probe.all_owned(),
            "max_min_throughput_ratio": round(run_.probe.ratios()[0], 3),
            "effects_applied_within_s": None if drained is None else round(drained, 1),
        }
        fleet.shut_down(timeout_s=60.0)
        report["exactly_once"] = _exactly_once(run_, produced)
        # What one emulator serving 200 shards kept up with; the target was records_per_s.
        report["produced_per_s"] = round(run_.produced_per_s, 2)
    once = report["exactly_once"]
    if once["missing"] == 0 and once["duplicated"] == 0 and report["end"]["all_owned"]:
        # The workers' logs and stats are kept only for a run that went wrong.
        shutil.rmtree(report["logs"], ignore_errors=True)
        report["logs"] = None
    _compared(scenario, report)
    report["targets"] = _targets(report, round_s / failover_s)
    report["wall_s"] = round(time.monotonic() - wall, 1)
    return report


def main(args: argparse.Namespace) -> int:
    """``bench/scale.py --moto``: run, print the figures and PASS/FAIL per target, write the
    report; 1 unless every produced event was applied exactly once."""
    scenario = MotoScenario(args.shards, args.workers, seed=args.seed, rate_per_s=args.rate)
    if args.failover is not None:
        scenario = dataclasses.replace(scenario, failover_s=args.failover)
    report = run(scenario, lambda line: print(f"# {line}", flush=True))
    print(json.dumps({k: v for k, v in report.items() if k != "targets"}, indent=2))
    for name, ok in report["targets"].items():
        print(f"{'SKIP' if ok is None else 'PASS' if ok else 'FAIL'}  {name}")
    if args.report:
        args.report.write_text(json.dumps(report, indent=2) + "\n")
    once = report["exactly_once"]
    return 0 if once["missing"] == 0 and once["duplicated"] == 0 else 1

"""bench/scale.py --moto at its smallest: worker processes on moto, one killed, one added."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.scale_moto import MotoScenario, run  # noqa: E402

KEYS = {
    "cold_start_owned_periods",
    "cold_start_balanced_periods",
    "dead_worker_recovery_periods",
    "read_units_per_s",
    "write_units_per_s",
    "read_units_per_s_scan_baseline",
    "max_min_throughput_ratio",
    "max_min_count_ratio",
    "flaps",
    "join",
    "worker_death",
    "exactly_once",
    "simulation",
    "targets",
    "wall_s",
}


def test_a_small_real_run_applies_every_event_once_through_a_kill_and_a_join() -> None:
    scenario = MotoScenario(
        12,
        3,
        failover_s=2.0,
        rate_per_s=40.0,
        probe_every_s=0.5,
        settle_periods=0.5,
        steady_periods=2.0,
        wait_periods=6.0,
        drain_s=60.0,
        idle_interval_s=0.2,
    )
    report = run(scenario)

    assert report.keys() >= KEYS
    once = report["exactly_once"]
    assert once["produced"] > 0
    assert once["applied"] == once["produced"]
    assert (once["missing"], once["duplicated"]) == (0, 0)
    assert report["targets"]["exactly once: 0 missing, 0 applied twice"] is True
    # The killed worker held leases, and they found new owners; the added one took some.
    assert report["worker_death"]["leases"] > 0
    assert report["dead_worker_recovery_periods"] is not None
    assert report["join"]["leases_taken_by_joiner"] > 0
    assert report["cold_start_owned_periods"] is not None
    assert report["end"]["all_owned"] is True
    # Units came from the workers' own meters: every worker of the steady window billed some.
    per_worker = report["units_per_s_per_worker"]
    assert len(per_worker) == 3
    assert all(units["read_units"] > 0 for units in per_worker.values())
    assert all(units["write_units"] > 0 for units in per_worker.values())
    assert report["read_units_per_s"] > 0
    assert report["write_units_per_s"] > 0
    # The simulation of the same shards and workers ran beside it, with its scan baseline.
    assert report["simulation"]["read_units_per_s"] > 0
    assert report["read_units_per_s_scan_baseline"] > 0
    assert isinstance(report["flaps"], int)

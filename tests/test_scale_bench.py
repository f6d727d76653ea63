"""bench/scale.py at its smallest: the report's shape and what must hold whatever the timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "scale.py"
KEYS = {
    "cold_start_owned_periods",
    "cold_start_balanced_periods",
    "dead_worker_recovery_periods",
    "read_units_per_s",
    "read_units_per_s_scan_baseline",
    "max_min_throughput_ratio",
    "max_min_count_ratio",
    "flaps",
    "join",
    "graceful_leave",
    "worker_death",
    "coordinator_death",
    "targets",
}


def test_a_small_scale_run_reports_every_figure_and_ends_with_every_shard_owned(
    tmp_path: Path,
) -> None:
    report_path = tmp_path / "scale.json"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--shards",
            "40",
            "--workers",
            "4",
            "--report",
            str(report_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(report_path.read_text())

    assert report.keys() >= KEYS
    assert report["end"]["all_owned"] is True
    assert report["cold_start_owned_periods"] is not None
    assert report["worker_death"]["owned_again_periods"] is not None
    assert report["coordinator_death"]["owned_again_periods"] is not None
    # Leases moved away from a worker that left, and each of them found a new owner.
    assert report["graceful_leave"]["leases_moved"] >= report["graceful_leave"]["leases"] > 0
    assert isinstance(report["flaps"], int)
    # Workers read only their own leases: far fewer items a round than the scanning protocol.
    assert (
        report["items_read_per_worker_per_round_median"]
        < report["items_read_per_worker_per_round_scan_baseline"] / 2
    )
    assert report["read_units_per_s"] > 0
    assert all(
        line.split()[0] in {"PASS", "FAIL", "SKIP"}
        for line in done.stdout.splitlines()[-len(report["targets"]) :]
    )

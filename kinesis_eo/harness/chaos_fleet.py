"""The chaos run's worker processes and the stream under them: kill, stop, wake, restart, reshard.

:class:`Fleet` runs :mod:`kinesis_eo.harness.chaos_worker` processes and reads
their stats files; :class:`Resharder` splits, then merges, the stream; and
:class:`SubscriptionCutter` cuts the workers' subscriptions, as a network would.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kinesis_eo.harness.chaos_worker import WorkerSpec
from kinesis_eo.retrieval import list_shards

__all__ = ["Fleet", "Resharder", "SubscriptionCutter"]


class Fleet:
    """The worker processes: start, kill, stop, continue, restart; and their stats files."""

    def __init__(self, base: WorkerSpec, count: int, directory: Path, rng: random.Random) -> None:
        self.base = base
        self.directory = directory
        self.rng = rng
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.incarnations: dict[int, int] = {}
        self.stopped: dict[int, float] = {}
        self.kills = 0
        self.stats_files: list[Path] = []
        self.logs: list[Path] = []
        for slot in range(count):
            self.start(slot)

    def start(self, slot: int) -> None:
        incarnation = self.incarnations.get(slot, -1) + 1
        self.incarnations[slot] = incarnation
        stats = self.directory / f"stats-{slot}-{incarnation}.json"
        log = self.directory / f"worker-{slot}-{incarnation}.log"
        self.stats_files.append(stats)
        self.logs.append(log)
        spec = WorkerSpec(
            **{
                **asdict(self.base),
                "worker_id": f"worker-{slot}.{incarnation}",
                "stats_file": str(stats),
                "seed": self.base.seed * 1000 + slot * 100 + incarnation,
            }
        )
        env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true", "NO_PROXY": "*"}
        with open(log, "wb") as output:
            self.processes[slot] = subprocess.Popen(
                [sys.executable, "-m", "kinesis_eo.harness.chaos_worker", spec.to_json()],
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def restart_dead(self) -> None:
        for slot, process in list(self.processes.items()):
            code = process.poll()
            if code is None:
                continue
            if code == -signal.SIGKILL:
                self.kills += 1
            self.start(slot)

    def kill_one(self) -> None:
        self.kill(self.rng.choice(sorted(self.processes)))

    def kill(self, slot: int) -> None:
        """SIGKILL the worker in ``slot`` and wait for it to die (not restarted here)."""
        process = self.processes[slot]
        if process.poll() is None:
            self.stopped.pop(slot, None)
            process.send_signal(signal.SIGKILL)
            process.wait()
        # restart_dead counts it and starts the next incarnation

    def stop_one(self, now: float, pause_s: float) -> bool:
        running = [
            s for s, p in self.processes.items() if p.poll() is None and s not in self.stopped
        ]
        if len(running) < 2:
            return False  # someone must be left to take the leases over
        slot = self.rng.choice(running)
        self.processes[slot].send_signal(signal.SIGSTOP)
        self.stopped[slot] = now + pause_s
        return True

    def notice_self_stopped(self, now: float, pause_s: float) -> int:
        """Workers that stopped themselves: schedule their SIGCONT; how many were new."""
        found = 0
        for slot, process in self.processes.items():
            if slot not in self.stopped and process.poll() is None and _is_stopped(process.pid):
                self.stopped[slot] = now + pause_s
                found += 1
        return found

    def continue_due(self, now: float) -> None:
        for slot, until in list(self.stopped.items()):
            if now >= until:
                with contextlib.suppress(ProcessLookupError):
                    self.processes[slot].send_signal(signal.SIGCONT)
                del self.stopped[slot]

    def shut_down(self, timeout_s: float = 30.0) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGCONT)
                    process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in self.processes.values():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def totals(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for path in self.stats_files:
            try:
                stats = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # killed before its first report
            for section in ("metrics", "injected", "calls"):
                for name, value in stats.get(section, {}).items():
                    totals[name] = totals.get(name, 0) + int(value)
        return totals


def _is_stopped(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "T"


class Resharder:
    """One split, then one merge of two adjacent shards, while production runs."""

    def __init__(self, kinesis: Any, stream: str) -> None:
        self.kinesis = kinesis
        self.stream = stream
        self.done = 0

    def _wait_active(self) -> None:
        for _ in range(600):
            summary = self.kinesis.describe_stream_summary(StreamName=self.stream)
            if summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
                return
            time.sleep(0.05)

    def step(self) -> None:
        open_shards = list_shards(self.kinesis, self.stream).open_shards()
        if self.done == 0:
            target = open_shards[0]
            middle = (target.hash_range.start + target.hash_range.end) // 2
            self.kinesis.split_shard(
                StreamName=self.stream, ShardToSplit=target.shard_id, NewStartingHashKey=str(middle)
            )
        else:
            ordered = sorted(open_shards, key=lambda s: s.hash_range.start)
            left, right = ordered[0], ordered[1]
            self.kinesis.merge_shards(
                StreamName=self.stream,
                ShardToMerge=left.shard_id,
                AdjacentShardToMerge=right.shard_id,
            )
        self._wait_active()
        self.done += 1


class SubscriptionCutter:
    """Cuts every open subscription through the bridge now and then, on a seeded schedule.

    Its generator is its own, so that the kill, zombie and outage schedules of a seed stay
    as they are with or without it.
    """

    def __init__(self, bridge: Any, every_s: float, seed: int, started: float) -> None:
        self.bridge = bridge
        self.every_s = every_s
        self.rng = random.Random(f"cut-{seed}")
        self.next_at = started + self._gap() if bridge is not None and every_s else None
        self.cut = 0

    def _gap(self) -> float:
        return self.rng.expovariate(1 / self.every_s)

    def step(self, now: float) -> None:
        if self.next_at is None or now < self.next_at:
            return
        self.cut += self.bridge.sever()
        self.next_at = now + self._gap()

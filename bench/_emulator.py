"""The benchmark's emulator: moto's HTTP server in a child process, so its CPU is not the client's.

:class:`Emulator` starts :class:`kinesis_eo.testing.backends.MotoServer` with
``process=True`` (undo-log ``TransactWriteItems`` unless ``stock``), hands out
its boto3 clients, and reads the child's CPU time (user + system, every thread)
and memory from ``/proc``, so that the bench can report them apart from its own.
"""

from __future__ import annotations

import os
from importlib import metadata
from typing import Any, Self

from kinesis_eo.testing.backends import MotoServer
from kinesis_eo.testing.backends.common import Background

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Emulator(Background):
    """A moto server in a child process; a context manager."""

    def __init__(self, *, stock: bool = False) -> None:
        self.server = MotoServer(process=True, undo_log_transactions=not stock)
        transactions = "stock" if stock else "undo-log"
        self.description = (
            f"moto {metadata.version('moto')} server, {transactions} TransactWriteItems"
        )

    def client(self, service: str) -> Any:
        return self.server.client(service)

    def _proc(self, name: str) -> str:
        with open(f"/proc/{self.server.pid}/{name}") as file:
            return file.read()

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the emulator process has used so far."""
        # The command name (field 2) is in parentheses and may hold spaces.
        fields = self._proc("stat").rsplit(")", 1)[1].split()
        utime, stime = int(fields[11]), int(fields[12])
        return (utime + stime) / _CLOCK_TICKS

    def rss_mb(self) -> float:
        for line in self._proc("status").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def start(self) -> Self:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

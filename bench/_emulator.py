"""The benchmark's emulator: moto's HTTP server in a child process, so its CPU is not the client's.

As a script (the bench starts it, nobody needs to)::

    python bench/_emulator.py [--stock]

it starts :class:`kinesis_eo.testing.backends.MotoServer` on a free 127.0.0.1
port, with the undo-log ``TransactWriteItems``
(:mod:`kinesis_eo.harness.moto_transactions`) installed unless ``--stock``,
prints ``PORT <n> <description>`` and serves until its standard input closes.

:class:`Emulator` is the parent's handle: it starts the child, makes boto3
clients for it, and reads the child's CPU time from ``/proc`` (user + system,
every thread), so that the bench can report emulator CPU apart from its own.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, Self

REGION = "us-east-1"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def serve(stock: bool) -> None:
    import moto

    from kinesis_eo.harness import moto_transactions
    from kinesis_eo.testing.backends import MotoServer

    description = f"moto {moto.__version__} server"
    if stock:
        description += ", stock TransactWriteItems"
    else:
        moto_transactions.install()
        description += ", undo-log TransactWriteItems"
    with MotoServer() as server:
        print(f"PORT {server.port} {description}", flush=True)
        sys.stdin.read()  # until the parent closes our stdin (or dies)


class Emulator:
    """A moto server in a child process; a context manager."""

    def __init__(self, *, stock: bool = False) -> None:
        self.stock = stock
        self.process: subprocess.Popen[str] | None = None
        self.port = 0
        self.description = ""

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        command = [sys.executable, str(Path(__file__).resolve())]
        if self.stock:
            command.append("--stock")
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        # The child prints its port once serving, or exits (an empty line).
        line = self.process.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"the emulator did not start (it said {line!r})")
        _, port, self.description = line.rstrip("\n").split(" ", 2)
        self.port = int(port)
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the emulator process has used so far."""
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/stat") as stat:
            # The command name (field 2) is in parentheses and may hold spaces.
            fields = stat.read().rsplit(")", 1)[1].split()
        utime, stime = int(fields[11]), int(fields[12])
        return (utime + stime) / _CLOCK_TICKS

    def rss_mb(self) -> float:
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def client(self, service: str) -> Any:
        import boto3.session
        import botocore.session
        from botocore.config import Config

        # A session of its own: a stray AWS_PROFILE must not matter; loopback needs no proxy.
        core = botocore.session.Session(session_vars={"profile": (None, None, None, None)})
        session = boto3.session.Session(botocore_session=core)
        return session.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            config=Config(proxies={}),
        )

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--stock", action="store_true", help="stock moto TransactWriteItems")
    serve(parser.parse_args().stock)

"""moto's HTTP server, in a thread of this process or in a child process."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any, Self

from kinesis_eo.errors import ConfigurationError
from kinesis_eo.testing.backends.common import (
    Background,
    ClientFactory,
    client_kwargs,
)

__all__ = [
    "MotoServer",
    "serialize_moto_requests",
]

_MOTO_LOCK = threading.RLock()


def serialize_moto_requests() -> None:
    """Let moto handle one request at a time, in process and behind its HTTP server.

    moto's backends are not thread-safe: workers in threads calling it at
    once crash it ("dictionary changed size during iteration" inside
    TransactWriteItems). One lock around each request makes it behave like a
    service that serialises internally. Idempotent.
    """
    from moto.core.botocore_stubber import BotocoreStubber
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    for cls in (BotocoreStubber, DomainDispatcherApplication):
        original = cls.__call__
        if getattr(original, "_kinesis_eo_serialized", False):
            continue

        def serialized(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            with _MOTO_LOCK:
                return _original(self, *args, **kwargs)

        serialized._kinesis_eo_serialized = True  # type: ignore[attr-defined]
        cls.__call__ = serialized  # type: ignore[method-assign]


class MotoServer(Background):
    """moto's HTTP server on a free (or the given) 127.0.0.1 port.

    By default it runs in a daemon thread of this process and shares its state
    with in-process ``mock_aws()``: a ``mock_aws`` that starts or stops resets
    this server's data too. With ``process=True`` it runs in a child process
    instead, whose CPU time is its own (a benchmark can tell the emulator's
    work from the client's) and whose state nothing in this process touches.
    ``undo_log_transactions`` serves TransactWriteItems with
    :mod:`kinesis_eo.harness.moto_transactions` (installed in this process
    while a threaded server runs, in the child's otherwise); it raises
    RuntimeError, naming the moto version, if that moto is not the verified one.
    :meth:`reset` empties every service.
    """

    def __init__(
        self, *, port: int = 0, process: bool = False, undo_log_transactions: bool = False
    ) -> None:
        self._requested_port = port
        self._in_process = process
        self._undo_log = undo_log_transactions
        self._uninstall_on_stop = False
        self._server: Any = None
        self._child: subprocess.Popen[str] | None = None
        self._port: int | None = None
        self._clients = ClientFactory()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("MotoServer is not started")
        return self._port

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The process that serves (the child with ``process=True``); None if not started."""
        if self._child is not None:
            return self._child.pid
        return os.getpid() if self._server is not None else None

    def client(self, service: str, **kwargs: Any) -> Any:
        """A boto3 client for ``service``; ``kwargs`` go to ``Session.client``."""
        return self._clients.create(service, self.endpoint_url, **kwargs)

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for any ``create_client``/``client`` call (aiobotocore too)."""
        return client_kwargs(self.endpoint_url)

    def reset(self) -> None:
        """Delete every resource in every service (moto's ``/moto-api/reset``)."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()

    def start(self) -> Self:
        if self._server is not None or self._child is not None:
            raise RuntimeError("MotoServer is already started")
        if self._in_process:
            self._start_child()
        else:
            self._start_thread()
        return self

    def _start_thread(self) -> None:
        from moto.server import ThreadedMotoServer

        if self._undo_log:
            from kinesis_eo.harness import moto_transactions

            # Only a patch this server installed is its to remove.
            self._uninstall_on_stop = not moto_transactions.installed()
            moto_transactions.install()
        serialize_moto_requests()

        # werkzeug logs every request at INFO, to stderr if logging is not set
        # up; keep that out of demos and benchmarks unless a level was chosen.
        werkzeug_logger = logging.getLogger("werkzeug")
        if werkzeug_logger.level == logging.NOTSET:
            werkzeug_logger.setLevel(logging.WARNING)
        server = ThreadedMotoServer(
            ip_address="127.0.0.1", port=self._requested_port, verbose=False
        )
        server.start()
        self._server = server
        _host, port = server.get_host_and_port()
        self._port = int(port)

    def _start_child(self) -> None:
        command = [
            sys.executable,
            "-c",
            _MOTO_CHILD,
            str(self._requested_port),
            "undo-log" if self._undo_log else "stock",
        ]
        # The child imports this package from where this process found it.
        package_root = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
        child = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": path},
        )
        self._child = child
        assert child.stdout is not None
        # The child prints its port once serving, or exits (an empty line).
        line = child.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise ConfigurationError(
                f"the moto server process did not start (it said {line.strip()!r}; "
                "its error, if any, is on standard error above)"
            )
        self._port = int(line.split()[1])

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()
        child, self._child = self._child, None
        if child is not None:
            _stop_child(child)
        if self._uninstall_on_stop:
            from kinesis_eo.harness import moto_transactions

            moto_transactions.uninstall()
            self._uninstall_on_stop = False
        self._port = None


# What a MotoServer(process=True) child runs: a threaded server, its port on
# standard output, then serving until the parent closes standard input (or dies).
_MOTO_CHILD = """
import sys
from kinesis_eo.testing.backends import MotoServer
port, transactions = int(sys.argv[1]), sys.argv[2]
with MotoServer(port=port, undo_log_transactions=transactions == "undo-log") as server:
    print(f"PORT {server.port}", flush=True)
    sys.stdin.read()
"""


def _stop_child(child: subprocess.Popen[str], timeout: float = 10.0) -> None:
    if child.stdin is not None:
        child.stdin.close()
    try:
        child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    if child.stdout is not None:
        child.stdout.close()

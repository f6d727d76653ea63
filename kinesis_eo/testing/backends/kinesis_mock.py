"""kinesis-mock (npm ``kinesis-local``) in a child process, forced onto 127.0.0.1."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Self

from kinesis_eo.errors import ConfigurationError
from kinesis_eo.testing.backends.common import (
    REGION,
    Background,
    ClientFactory,
    client_kwargs,
    free_port,
)

__all__ = [
    "FAST_DURATIONS",
    "KINESIS_MOCK_MAIN_ENV",
    "KinesisMock",
    "find_kinesis_mock",
    "find_node",
]

KINESIS_MOCK_MAIN_ENV = "KINESIS_MOCK_MAIN"
_KINESIS_MOCK_RELATIVE = Path("node_modules", "kinesis-local", "main.js")
# The shim lives beside this package, in kinesis_eo/testing/.
_LOOPBACK_SHIM = Path(__file__).parent.parent / "loopback.cjs"

# kinesis-mock's defaults imitate AWS (500 ms to create a stream, and so on);
# tests want state changes to be immediate. Every *_DURATION setting it knows.
FAST_DURATIONS: Mapping[str, str] = {
    "CREATE_STREAM_DURATION": "0ms",
    "DELETE_STREAM_DURATION": "0ms",
    "MERGE_SHARDS_DURATION": "0ms",
    "SPLIT_SHARD_DURATION": "0ms",
    "UPDATE_SHARD_COUNT_DURATION": "0ms",
    "REGISTER_STREAM_CONSUMER_DURATION": "0ms",
    "DEREGISTER_STREAM_CONSUMER_DURATION": "0ms",
    "START_STREAM_ENCRYPTION_DURATION": "0ms",
    "STOP_STREAM_ENCRYPTION_DURATION": "0ms",
    "UPDATE_STREAM_MODE_DURATION": "0ms",
}


def find_node() -> str:
    """The ``node`` executable, or a ConfigurationError that says what to install."""
    node = shutil.which("node")
    if node is None:
        raise ConfigurationError(
            "kinesis-mock needs Node.js (20 or later), and no `node` is on PATH: "
            "install Node.js, then run `npm ci` in the repository root"
        )
    return node


def find_kinesis_mock(search_from: Iterable[Path] | None = None) -> Path:
    """Locate ``node_modules/kinesis-local/main.js``.

    ``$KINESIS_MOCK_MAIN`` wins when set. Otherwise each directory in
    ``search_from`` (default: the current directory and this file's directory)
    and its parents are searched, so that the emulator is found from a test run
    anywhere in the tree and from an editable install alike.
    """
    explicit = os.environ.get(KINESIS_MOCK_MAIN_ENV)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigurationError(
                f"${KINESIS_MOCK_MAIN_ENV} is set to {explicit!r}, which is not a file"
            )
        find_node()
        return path.resolve()
    starts = list(search_from) if search_from is not None else [Path.cwd(), Path(__file__).parent]
    for start in starts:
        for directory in (start.resolve(), *start.resolve().parents):
            candidate = directory / _KINESIS_MOCK_RELATIVE
            if candidate.is_file():
                find_node()
                return candidate
    searched = ", ".join(str(s) for s in starts)
    raise ConfigurationError(
        f"kinesis-mock (npm package kinesis-local) is not installed: no {_KINESIS_MOCK_RELATIVE} "
        f"in {searched} or any parent. Run `npm ci` in the repository root "
        f"(or set ${KINESIS_MOCK_MAIN_ENV} to its main.js)"
    )


# A child in its own process group outlives an interpreter that exits without
# running context managers (an uncaught KeyboardInterrupt in a script, sys.exit
# from a thread): stop whatever is still running at exit.
_running: weakref.WeakSet[KinesisMock] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    for mock in list(_running):
        mock.stop()


class KinesisMock(Background):
    """kinesis-mock in a child process on free 127.0.0.1 ports.

    Use as a context manager (or call :meth:`start` and :meth:`stop`)::

        with KinesisMock() as mock:
            kinesis = mock.client()

    ``durations`` overrides entries of :data:`FAST_DURATIONS` (values such as
    ``"500ms"``); ``env`` adds or overrides any other kinesis-mock setting.
    The emulator's output goes to a temporary log file, deleted on stop unless
    ``keep_log``; :meth:`log_tail` reads it, and a failed start quotes it.
    """

    def __init__(
        self,
        *,
        durations: Mapping[str, str] | None = None,
        shard_limit: int = 1000,
        log_level: str = "WARN",
        env: Mapping[str, str] | None = None,
        main: Path | None = None,
        start_timeout: float = 60.0,
        stop_timeout: float = 10.0,
        keep_log: bool = False,
    ) -> None:
        self._settings: dict[str, str] = {
            **FAST_DURATIONS,
            **(durations or {}),
            "SHARD_LIMIT": str(shard_limit),
            "LOG_LEVEL": log_level,
            "AWS_REGION": REGION,
            # On SIGTERM its finalizers never finish and it waits out this
            # timeout (30 s by default) before exiting; it keeps no state worth
            # a graceful stop unless persistence is turned on through ``env``.
            "CATS_EFFECT_SHUTDOWN_HOOK_TIMEOUT": "0s",
            **(env or {}),
        }
        self._main = main
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._keep_log = keep_log
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None
        self._plain_port: int | None = None
        self._tls_port: int | None = None
        self._clients = ClientFactory()

    # --- addresses -------------------------------------------------------

    @property
    def plain_port(self) -> int:
        if self._plain_port is None:
            raise RuntimeError("KinesisMock is not started")
        return self._plain_port

    @property
    def tls_port(self) -> int:
        if self._tls_port is None:
            raise RuntimeError("KinesisMock is not started")
        return self._tls_port

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.plain_port}"

    @property
    def tls_endpoint_url(self) -> str:
        """HTTPS endpoint with a self-signed certificate: pass ``verify=False`` to clients."""
        return f"https://127.0.0.1:{self.tls_port}"

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def client(self, service: str = "kinesis", **kwargs: Any) -> Any:
        """A boto3 client on the plain endpoint; ``kwargs`` go to ``Session.client``."""
        return self._clients.create(service, self.endpoint_url, **kwargs)

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for any ``create_client``/``client`` call (aiobotocore too)."""
        return client_kwargs(self.endpoint_url)

    # --- life cycle ------------------------------------------------------

    def start(self) -> Self:
        if self._process is not None:
            raise RuntimeError("KinesisMock is already started")
        main = self._main.resolve() if self._main is not None else find_kinesis_mock()
        node = find_node()
        # The ports are picked here and bound by node a moment later; another
        # process (parallel test runs share this machine) can take one in
        # between, so a bind failure is retried on new ports.
        attempts = 3
        for _ in range(attempts - 1):
            try:
                self._start_once(node, main)
                return self
            except _PortTaken:
                continue
        try:
            self._start_once(node, main)
        except _PortTaken:
            raise ConfigurationError(
                f"kinesis-mock found its ports taken {attempts} times in a row"
            ) from None
        return self

    def _start_once(self, node: str, main: Path) -> None:
        self._plain_port, self._tls_port = free_port(), free_port()
        while self._tls_port == self._plain_port:
            self._tls_port = free_port()
        fd, log_name = tempfile.mkstemp(prefix="kinesis-mock-", suffix=".log")
        self._log_path = Path(log_name)
        env = {
            **os.environ,
            **self._settings,
            "KINESIS_MOCK_PLAIN_PORT": str(self._plain_port),
            "KINESIS_MOCK_TLS_PORT": str(self._tls_port),
        }
        try:
            # cwd matters: main.js reads its TLS key and certificate from ./server.json.
            self._process = subprocess.Popen(
                [node, "-r", str(_LOOPBACK_SHIM), str(main)],
                cwd=main.parent,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            os.close(fd)
        _running.add(self)
        try:
            self._wait_ready()
        except Exception as exc:
            tail = self.log_tail()
            self.stop(delete_log=False)
            if "EADDRINUSE" in tail or "Address already in use" in tail:
                self._discard_log()
                raise _PortTaken from exc
            raise ConfigurationError(
                f"kinesis-mock did not start: {exc}\n--- last lines of {self._log_path} ---\n{tail}"
            ) from exc
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        import botocore.config
        import botocore.exceptions

        assert self._process is not None
        probe = self.client(
            config=botocore.config.Config(
                retries={"total_max_attempts": 1}, connect_timeout=1, read_timeout=5
            )
        )
        deadline = time.monotonic() + self._start_timeout
        try:
            while True:
                code = self._process.poll()
                if code is not None:
                    raise RuntimeError(f"the process exited with status {code}")
                try:
                    probe.list_streams(Limit=1)
                    return
                except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"no answer to ListStreams on {self.endpoint_url} "
                        f"after {self._start_timeout:.0f} s"
                    )
                time.sleep(0.1)
        finally:
            probe.close()

    def stop(self, *, delete_log: bool | None = None) -> None:
        """Terminate the process group (SIGTERM, then SIGKILL after ``stop_timeout``)."""
        process, self._process = self._process, None
        _running.discard(self)
        if process is not None:
            _kill_group(process, self._stop_timeout)
        if delete_log if delete_log is not None else not self._keep_log:
            self._discard_log()

    def _discard_log(self) -> None:
        if self._log_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._log_path.unlink()
            self._log_path = None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the emulator's output ('' if there is no log)."""
        if self._log_path is None:
            return ""
        try:
            text = self._log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class _PortTaken(Exception):
    pass


def _kill_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            continue
    process.wait()

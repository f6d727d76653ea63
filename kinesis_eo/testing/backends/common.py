"""What both emulators share: the region, fake credentials, free ports, clients."""

from __future__ import annotations

import socket
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

__all__ = [
    "FAKE_CREDENTIALS",
    "REGION",
    "Background",
    "ClientFactory",
    "client_kwargs",
    "free_port",
]

REGION = "us-east-1"
FAKE_CREDENTIALS: Mapping[str, str] = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
    "aws_session_token": "testing",
}


class Background(ABC):
    """A server a test starts and stops: a context manager, started on entry, stopped on exit."""

    @abstractmethod
    def start(self) -> Self:
        """Start serving; return self."""

    @abstractmethod
    def stop(self) -> None:
        """Stop serving and free what it held."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (another process may take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ClientFactory:
    """boto3 clients with fake credentials, one botocore session per back-end.

    The session ignores ``AWS_PROFILE``: a profile that does not exist on this
    machine would otherwise make every client creation fail, even with explicit
    keys. Creation is serialised because botocore sessions are not thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._session: Any = None

    def create(self, service: str, endpoint_url: str, **kwargs: Any) -> Any:
        import boto3.session
        import botocore.session
        from botocore.config import Config

        options: dict[str, Any] = {"region_name": REGION, **FAKE_CREDENTIALS}
        options["endpoint_url"] = endpoint_url
        # The emulators are on loopback: an HTTP(S)_PROXY in the environment must not reroute them.
        options["config"] = Config(proxies={})
        options.update(kwargs)
        with self._lock:
            if self._session is None:
                core = botocore.session.Session(session_vars={"profile": (None, None, None, None)})
                self._session = boto3.session.Session(botocore_session=core)
            return self._session.client(service, **options)


def client_kwargs(endpoint_url: str) -> dict[str, Any]:
    """Keyword arguments for a boto3 or aiobotocore client of an emulator at ``endpoint_url``
    (region and fake credentials).
    """
    return {"endpoint_url": endpoint_url, "region_name": REGION, **FAKE_CREDENTIALS}

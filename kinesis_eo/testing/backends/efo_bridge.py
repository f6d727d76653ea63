"""A loopback proxy in front of kinesis-mock that adds the one event its SubscribeToShard omits.

AWS starts every SubscribeToShard event stream with an ``initial-response``
event, and botocore refuses a stream without one ("First event was not of type
initial-response"). kinesis-mock 0.6.2 serves SubscribeToShard with real
event-stream frames but starts with the first ``SubscribeToShardEvent``. This
proxy forwards every request and response byte for byte, and into each
successful SubscribeToShard response it inserts that single frame (``:event-type``
``initial-response``, ``:message-type`` ``event``, ``:content-type``
``application/json``, payload ``{}``) before the first byte of the body. It
changes nothing else: not the events, not their timing, not the errors.

It listens on 127.0.0.1 only, serves in a thread of its own, and closes the
emulator's side of a subscription as soon as the client closes its side, so
that kinesis-mock frees the shard for the next subscriber just as AWS would.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
import zlib
from typing import Any, Self

from kinesis_eo.testing.backends.common import Background, ClientFactory, client_kwargs

__all__ = ["EfoBridge", "event_frame", "initial_response_frame"]

_SUBSCRIBE_TARGET = b"kinesis_20131202.subscribetoshard"
_EVENT_STREAM = b"application/vnd.amazon.eventstream"


def event_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude and its CRC, string headers, payload, message CRC."""
    encoded = b""
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        # Header value type 7: a string with a 2-byte length.
        encoded += struct.pack("!B", len(raw_name)) + raw_name
        encoded += struct.pack("!BH", 7, len(raw_value)) + raw_value
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack("!II", total, len(encoded))
    prelude += struct.pack("!I", zlib.crc32(prelude))
    message = prelude + encoded + payload
    return message + struct.pack("!I", zlib.crc32(message))


def initial_response_frame() -> bytes:
    """The ``initial-response`` event AWS sends first on every SubscribeToShard stream."""
    return event_frame(
        {
            ":event-type": "initial-response",
            ":content-type": "application/json",
            ":message-type": "event",
        },
        b"{}",
    )


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip().lower()
    return None


async def _relay_body(
    head: bytes, upstream: asyncio.StreamReader, client: asyncio.StreamWriter
) -> bool:
    """Copy one message body as it arrives; False if the connection ends with it."""
    if _header(head, b"transfer-encoding") == b"chunked":
        while True:
            size_line = await upstream.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            client.write(size_line)
            if size == 0:
                while (line := await upstream.readuntil(b"\r\n")) != b"\r\n":
                    client.write(line)  # trailers, up to the empty line that ends them
                client.write(line)
                await client.drain()
                return True
            client.write(await upstream.readexactly(size + 2))
            await client.drain()
    length = _header(head, b"content-length")
    if length is not None:
        client.write(await upstream.readexactly(int(length)))
        await client.drain()
        return True
    client.write(await upstream.read())
    await client.drain()
    return False


class EfoBridge(Background):
    """The proxy, on a free 127.0.0.1 port, in front of ``upstream_port`` on 127.0.0.1.

    Use as a context manager; :meth:`client` hands out boto3 clients on it and
    :meth:`client_kwargs` the arguments for aiobotocore ones.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.subscriptions_bridged = 0
        self._open_streams: set[asyncio.StreamWriter] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._clients = ClientFactory()

    @property
    def endpoint_url(self) -> str:
        """Where clients reach kinesis-mock through the bridge."""
        return f"http://127.0.0.1:{self.port}"

    def client(self, service: str = "kinesis", **kwargs: Any) -> Any:
        """A boto3 client through the bridge."""
        return self._clients.create(service, self.endpoint_url, **kwargs)

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for an aiobotocore ``create_client`` through the bridge."""
        return client_kwargs(self.endpoint_url)

    # --- life cycle ----------------------------------------------------------------

    def start(self) -> Self:
        """Listen on a free 127.0.0.1 port, serving from a thread of its own."""
        started = threading.Event()
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._serve_connection, "127.0.0.1", 0)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="efo-bridge", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the EFO bridge did not start")
        return self

    def stop(self) -> None:
        """Close the listener and every connection through it."""
        loop, self._loop = self._loop, None
        if loop is None:
            return

        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(shut(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        loop.close()

    def sever(self) -> int:
        """Cut every open subscription's connection, as a network fault would; how many (tests)."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the EFO bridge is not started")

        async def cut() -> int:
            writers = list(self._open_streams)
            for writer in writers:
                writer.transport.abort()
            return len(writers)

        return asyncio.run_coroutine_threadsafe(cut(), loop).result(10)

    # --- one client connection -----------------------------------------------------

    async def _serve_connection(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        upstream_in, upstream_out = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            while await self._exchange(client_in, client_out, upstream_in, upstream_out):
                pass
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass  # either side hung up: both are closed below
        except asyncio.CancelledError:
            pass  # the bridge is stopping: end quietly rather than as a failed callback
        finally:
            for writer in (upstream_out, client_out):
                writer.close()
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.wait_closed()

    async def _exchange(
        self,
        client_in: asyncio.StreamReader,
        client_out: asyncio.StreamWriter,
        upstream_in: asyncio.StreamReader,
        upstream_out: asyncio.StreamWriter,
    ) -> bool:
        """Forward one request and its response; False when the connection is done."""
        try:
            request = await client_in.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        length = int(_header(request, b"content-length") or 0)
        body = await client_in.readexactly(length) if length else b""
        upstream_out.write(request + body)
        await upstream_out.drain()
        response = await upstream_in.readuntil(b"\r\n\r\n")
        client_out.write(response)
        subscribe = _header(request, b"x-amz-target") == _SUBSCRIBE_TARGET
        streaming = _header(response, b"content-type") == _EVENT_STREAM
        if subscribe and streaming and response.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
            self.subscriptions_bridged += 1
            client_out.write(_chunk(initial_response_frame()))
            return await self._relay_stream(response, client_in, client_out, upstream_in)
        return await _relay_body(response, upstream_in, client_out)

    async def _relay_stream(
        self,
        head: bytes,
        client_in: asyncio.StreamReader,
        client_out: asyncio.StreamWriter,
        upstream_in: asyncio.StreamReader,
    ) -> bool:
        """Relay a subscription until it ends or the client hangs up (then drop both sides)."""
        relay = asyncio.ensure_future(_relay_body(head, upstream_in, client_out))
        # The client sends nothing while its subscription is open: a read returns only at EOF.
        hang_up = asyncio.ensure_future(client_in.read(1))
        self._open_streams.add(client_out)
        try:
            done, _ = await asyncio.wait({relay, hang_up}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._open_streams.discard(client_out)
        if relay in done:
            hang_up.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await hang_up
            return relay.result()
        relay.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await relay
        with contextlib.suppress(ConnectionError):
            hang_up.result()  # a reset (sever) rather than a clean close
        return False

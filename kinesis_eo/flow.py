"""Decision logic as generators, driven by a thin sync loop and a thin asyncio loop.

A *flow* is a generator that decides what to do and never does I/O itself. It
yields :class:`Call` (make this AWS call and send me the response, or throw
the translated error into me), :class:`Sleep` (wait, then send me None),
:class:`Invoke` (call this user function, awaiting it under asyncio, and send
me its result or throw its exception into me), :class:`Receive` (send me the
next event of this event stream, or None at its end), :class:`Together` (run
these flows concurrently and send me their return values), or any other object,
which is an output for the flow's consumer. A flow may
``return`` a value. The same flow runs under :func:`drive_sync` with a boto3
client and under :func:`drive_async` with an aiobotocore (or aioboto3) client,
so that readers, producers and lease logic are written once.

Transient errors are retried here, per call, with tenacity; anything else is
thrown into the flow, which handles it or lets it propagate to the caller.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable, Generator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from kinesis_eo.errors import ConnectionFailedError, KinesisEOError, translate_aws_error
from kinesis_eo.retry import RetryConfig, async_retrying, sync_retrying

__all__ = [
    "Call",
    "Flow",
    "Invoke",
    "Receive",
    "Response",
    "Sleep",
    "T",
    "Together",
    "call_async",
    "call_sync",
    "client_for",
    "drive_async",
    "drive_sync",
    "gather",
    "pump",
    "receive_async",
    "receive_sync",
    "run_async",
    "run_sync",
]

Response = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Call:
    """One AWS call: the client method, its parameters, and names for error messages.

    ``service`` picks the client when a flow is driven with several (a mapping
    such as ``{"kinesis": ..., "dynamodb": ...}``), as a consumer is.
    """

    method: str
    params: Mapping[str, Any]
    resource: str
    action: str
    service: str = ""
    retry: bool = field(default=True)


def client_for(client: Any, call: Call) -> Any:
    """The client a `Call` goes to: ``client`` itself, or the one named by ``call.service`` in a
    mapping of clients.
    """
    if not isinstance(client, Mapping):
        return client
    try:
        return client[call.service]
    except KeyError:
        wanted = call.service or "unnamed"
        raise TypeError(
            f"{call.action} needs a {wanted} client; the flow has {sorted(client)}"
        ) from None


@dataclass(frozen=True, slots=True)
class Sleep:
    """What a flow yields to wait ``seconds`` before it is resumed (``time.sleep`` or
    ``asyncio.sleep``).
    """

    seconds: float


@dataclass(frozen=True, slots=True)
class Invoke:
    """Call user code (a handler, a dead-letter target) from a flow, sync or async alike."""

    function: Callable[..., Any]
    args: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class Receive:
    """The next event of an AWS event stream (SubscribeToShard's), or None once it ended.

    ``stream`` is boto3's ``EventStream`` (pulled with ``next``) or aiobotocore's
    ``AioEventStream`` (pulled with ``await anext``). A broken connection is
    thrown into the flow as :class:`~kinesis_eo.errors.ConnectionFailedError`,
    an exception event as the translated AWS error. (Closing a stream needs no
    instruction: ``close()`` is synchronous in both libraries.)
    """

    stream: Any
    resource: str
    action: str


Flow = Generator[Any, Any, Any]
T = TypeVar("T")

# Threads one Together may use under the sync driver, whatever its limit: each
# holds a boto3 call or a handler, and more would only queue on the HTTP pool.
MAX_TOGETHER_THREADS = 32


@dataclass(frozen=True, slots=True)
class Together:
    """Run several flows concurrently; the parent is sent the list of their return values.

    The sync driver runs each flow with :func:`run_sync` in a thread pool
    (boto3 clients are thread-safe), the first one in the calling thread when
    all may run at once; the asyncio driver runs them as tasks. At most
    ``limit`` run at once (0: all). A sub-flow may yield calls, sleeps,
    invocations and nested :class:`Together`, but no outputs: an output is a
    :class:`TypeError` in that sub-flow, since no one would know its order.
    When sub-flows fail, every other one still runs to its end (an effect is
    never cut half-way), then the error of the first failed flow, in the
    order given, is thrown into the parent. Cancelling an asyncio parent
    cancels the sub-flows' tasks.
    """

    flows: tuple[Flow, ...]
    limit: int = 0

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise ValueError(f"a Together's limit must be 0 (no limit) or more, got {self.limit}")

    @property
    def width(self) -> int:
        return min(len(self.flows), self.limit or len(self.flows))


def gather(flows: Sequence[Flow], limit: int = 0) -> Generator[Any, Any, list[Any]]:
    """The return values of ``flows``, run as a :class:`Together` (at most ``limit`` at once),
    or in place when there is only one, which needs no thread or task of its own."""
    if len(flows) == 1:
        return [(yield from flows[0])]
    if not flows:
        return []
    values: list[Any] = yield Together(tuple(flows), limit)
    return values


def _gathered(outcomes: Sequence[Any], errors: Sequence[BaseException | None]) -> list[Any]:
    """The sub-flows' values, or the first sub-flow's error raised."""
    for error in errors:
        if error is not None:
            raise error
    return list(outcomes)


def _together_sync(
    step: Together, client: Any, retry: RetryConfig, sleep: Callable[[float], Any]
) -> list[Any]:
    if not step.flows:
        return []
    # All at once: the first flow runs in the calling thread, which would only wait
    # otherwise. One thread fewer to start, and the first flow's calls come from a thread
    # botocore has served before (its first call in a new thread costs about 0.25 ms more).
    here = step.width == len(step.flows) <= MAX_TOGETHER_THREADS
    queued = step.flows[1:] if here else step.flows
    workers = max(1, min(step.width - here, MAX_TOGETHER_THREADS))
    mine: list[Any] = []
    my_errors: list[BaseException | None] = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kinesis-eo") as pool:
        futures = [pool.submit(run_sync, flow, client, retry, sleep) for flow in queued]
        if here:
            try:
                mine, my_errors = [run_sync(step.flows[0], client, retry, sleep)], [None]
            except Exception as exc:
                mine, my_errors = [None], [exc]
    errors = [*my_errors, *(future.exception() for future in futures)]
    theirs = [None if e else f.result() for f, e in zip(futures, errors[len(mine) :], strict=True)]
    return _gathered([*mine, *theirs], errors)


async def _together_async(step: Together, client: Any, retry: RetryConfig) -> list[Any]:
    if not step.flows:
        return []
    slots = asyncio.Semaphore(step.width)

    async def one(flow: Flow) -> Any:
        async with slots:
            return await run_async(flow, client, retry)

    outcomes = await asyncio.gather(*(one(flow) for flow in step.flows), return_exceptions=True)
    errors = [o if isinstance(o, BaseException) else None for o in outcomes]
    return _gathered(outcomes, errors)


def _receive_error(exc: Exception, step: Receive) -> Exception:
    """What a failed pull from an event stream means, in the toolkit's terms."""
    if isinstance(exc, ClientError | BotoCoreError):
        return translate_aws_error(exc, resource=step.resource, action=step.action)
    # The HTTP layer underneath (urllib3 for boto3, aiohttp for aiobotocore) raises its
    # own errors while a stream is read: a reset, a read timeout, a truncated frame.
    module = type(exc).__module__.split(".")[0]
    if isinstance(exc, OSError | TimeoutError) or module in ("urllib3", "aiohttp"):
        return ConnectionFailedError(
            f"{step.action} on {step.resource}: the event stream broke ({exc!r})"
        )
    return exc


def receive_sync(step: Receive) -> Any:
    """Satisfy a :class:`Receive` with a boto3 event stream."""
    # EventStream's iterators all draw on one parser: a fresh one per pull goes on where
    # the last stopped, and closing it leaves the stream open.
    events = iter(step.stream)
    try:
        return next(events, None)
    except Exception as exc:
        raise _receive_error(exc, step) from exc
    finally:
        close = getattr(events, "close", None)
        if close is not None and events is not step.stream:
            close()


async def receive_async(step: Receive) -> Any:
    """Satisfy a :class:`Receive` with an aiobotocore event stream."""
    events = step.stream.__aiter__()
    try:
        return await events.__anext__()
    except StopAsyncIteration:
        return None
    except Exception as exc:
        raise _receive_error(exc, step) from exc
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None and events is not step.stream:
            await aclose()


def call_sync(client: Any, call: Call, retry: RetryConfig) -> Response:
    """Make one `Call` with a boto3 client, retrying transient errors per ``retry``; AWS errors come
    out translated.
    """
    config = retry if call.retry else RetryConfig(max_attempts=1)
    for attempt in sync_retrying(config):
        with attempt:
            try:
                response: Response = getattr(client_for(client, call), call.method)(**call.params)
            except (ClientError, BotoCoreError) as exc:
                raise translate_aws_error(exc, resource=call.resource, action=call.action) from exc
            return response
    raise AssertionError("tenacity re-raises the last error")  # pragma: no cover


async def call_async(client: Any, call: Call, retry: RetryConfig) -> Response:
    """Make one `Call` with an aiobotocore client, retrying transient errors per ``retry``; AWS
    errors come out translated.
    """
    config = retry if call.retry else RetryConfig(max_attempts=1)
    async for attempt in async_retrying(config):
        with attempt:
            try:
                method = getattr(client_for(client, call), call.method)
                response: Response = await method(**call.params)
            except (ClientError, BotoCoreError) as exc:
                raise translate_aws_error(exc, resource=call.resource, action=call.action) from exc
            return response
    raise AssertionError("tenacity re-raises the last error")  # pragma: no cover


class _Done(Exception):
    def __init__(self, value: Any) -> None:
        self.value = value


def _advance(flow: Flow, send: Any, error: BaseException | None) -> Any:
    try:
        if error is not None:
            return flow.throw(error)
        return flow.send(send)
    except StopIteration as stop:
        raise _Done(stop.value) from None


# What handlers mostly return (a transactional handler's writes, or nothing): told apart
# from an awaitable by its type alone, without inspect's walk through the ABCs.
_NEVER_AWAITABLE = frozenset({type(None), list, tuple, dict, str, bytes, int, float, bool})


def drive_sync(
    flow: Flow,
    client: Any,
    retry: RetryConfig,
    sleep: Callable[[float], Any] = time.sleep,
) -> Generator[Any, None, Any]:
    """Run ``flow`` with a boto3 client; yields its outputs, returns its return value."""
    send: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = _advance(flow, send, error)
        except _Done as done:
            return done.value
        send, error = None, None
        # Invoke first: a batch makes one per record, and a call or two.
        if isinstance(step, Invoke):
            try:
                send = step.function(*step.args)
            except Exception as exc:
                error = exc
            else:
                if type(send) not in _NEVER_AWAITABLE and inspect.isawaitable(send):
                    close = getattr(send, "close", None)
                    if close is not None:
                        close()
                    error = TypeError(
                        f"{step.function!r} is async: run it with the asyncio consumer"
                    )
                    send = None
        elif isinstance(step, Call):
            try:
                send = call_sync(client, step, retry)
            except KinesisEOError as exc:
                error = exc
        elif isinstance(step, Sleep):
            if step.seconds > 0:
                sleep(step.seconds)
        elif isinstance(step, Receive):
            try:
                send = receive_sync(step)
            except Exception as exc:
                error = exc
        elif isinstance(step, Together):
            try:
                send = _together_sync(step, client, retry, sleep)
            except Exception as exc:
                error = exc
        else:
            yield step


def run_sync(
    flow: Flow,
    client: Any,
    retry: RetryConfig,
    sleep: Callable[[float], Any] = time.sleep,
) -> Any:
    """Run a flow that has no outputs to the end and return its value."""
    driver = drive_sync(flow, client, retry, sleep)
    try:
        output = next(driver)
    except StopIteration as stop:
        return stop.value
    raise TypeError(f"flow produced an output where none was expected: {output!r}")


_INSTRUCTIONS = (Invoke, Call, Sleep, Receive, Together)


def pump(
    flow: Flow, on_output: Callable[[Any], Generator[Any, Any, bool]]
) -> Generator[Any, Any, Any]:
    """Run ``flow`` inside another flow, handing each of its outputs to ``on_output``.

    Its calls, sleeps and invocations pass up to the driver; ``on_output`` is
    itself a flow and returns True to stop ``flow`` (it is closed then).
    """
    send: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = _advance(flow, send, error)
        except _Done as done:
            return done.value
        send, error = None, None
        if isinstance(step, _INSTRUCTIONS):
            try:
                send = yield step
            except Exception as exc:
                error = exc
            continue
        if (yield from on_output(step)):
            flow.close()
            return None


async def _next_output_async(flow: Flow, client: Any, retry: RetryConfig) -> Any:
    """Advance ``flow`` past its calls and sleeps to its next output, or raise _Done."""
    send: Any = None
    error: BaseException | None = None
    while True:
        step = _advance(flow, send, error)
        send, error = None, None
        if isinstance(step, Call):
            try:
                send = await call_async(client, step, retry)
            except KinesisEOError as exc:
                error = exc
        elif isinstance(step, Sleep):
            await asyncio.sleep(max(step.seconds, 0.0))
        elif isinstance(step, Receive):
            try:
                send = await receive_async(step)
            except Exception as exc:
                error = exc
        elif isinstance(step, Together):
            try:
                send = await _together_async(step, client, retry)
            except Exception as exc:
                error = exc
        elif isinstance(step, Invoke):
            try:
                send = step.function(*step.args)
                if inspect.isawaitable(send):
                    send = await send
            except Exception as exc:
                error = exc
        else:
            return step


async def drive_async(flow: Flow, client: Any, retry: RetryConfig) -> AsyncIterator[Any]:
    """Run ``flow`` with an aiobotocore client; yields its outputs."""
    while True:
        try:
            output = await _next_output_async(flow, client, retry)
        except _Done:
            return
        yield output


async def run_async(flow: Flow, client: Any, retry: RetryConfig) -> Any:
    """Run a flow that has no outputs to the end and return its value."""
    try:
        output = await _next_output_async(flow, client, retry)
    except _Done as done:
        return done.value
    raise TypeError(f"flow produced an output where none was expected: {output!r}")

"""The bridge: sends of shared signals published to other processes, and
theirs run here as background sends."""

from __future__ import annotations

import inspect
import logging
import math
import os
import random
import secrets
import socket
import threading
from collections import deque
from contextlib import AsyncExitStack, suppress
from contextvars import ContextVar
from itertools import islice
from types import TracebackType
from typing import Any, Literal, NoReturn
from weakref import WeakKeyDictionary, WeakSet

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel

from .. import _tracing
from .._background import Background
from .._context import AppContext, _app_ctx
from .._exceptions import (
    ArgumentError,
    BackgroundError,
    BridgeError,
    BridgeFullError,
    InvalidValueError,
    UsageError,
)
from .._lifecycle import got_background_exception, lifecycle
from .._signal import NamedSignal, Signal
from .._types import Receiver
from .._utilities import callable_name, describe
from ..observers import ObservedSend, Observer, Observing, observe
from . import _wire
from ._redis import BackendDown, RedisBackend, WorkQueue, _leaves

logger = logging.getLogger("asignals")

# The sending process's id while the receivers of a send from another
# process run (and what they send in turn): see origin().
_origin: ContextVar[str | None] = ContextVar("asignals.bridge.origin", default=None)

# How many (process, signal) pairs a bridge remembers the last send of, to
# drop sends that arrive twice.
_ORIGINS_KEPT = 10_000

# Every bridge alive, for the metrics of asignals.otel.
_bridges: WeakSet[RedisBridge] = WeakSet()

# Which bridge shares each signal: a signal crosses through one bridge only.
_sharing: WeakKeyDictionary[Signal, RedisBridge] = WeakKeyDictionary()
_sharing_lock = threading.Lock()

bridge_connected = NamedSignal(
    "bridge-connected",
    doc="""Sent by a bridge, as sender, each time its listener is connected
    and subscribed: as it starts, and after each outage (``reconnect=True``).
    In ``pubsub`` mode, sends made elsewhere during an outage were missed:
    resync here.""",
)
bridge_disconnected = NamedSignal(
    "bridge-disconnected",
    doc="""Sent by a bridge, as sender, when it loses its connection to
    Redis (``error=`` says how), once per outage. Sends published elsewhere
    from now until ``bridge_connected`` do not reach this process in
    ``pubsub`` mode; this process's own sends wait in the outbound queue.""",
)


def origin() -> str | None:
    """The id of the process that made the send whose receivers are running
    (its :attr:`RedisBridge.id`), or None for a send made in this process.
    Sends that those receivers make stay in this process (they are not
    published again), and ``origin()`` still names the first process there."""
    return _origin.get()


Mode = Literal["pubsub", "stream"]

# Seconds a read of the streams waits for new entries before it asks again.
_READ_BLOCK = 1.0
# The most queued sends published in one round trip.
_BATCH = 500
# Seconds an exclusive group remembers which copy of a send it runs, to run
# a send published twice once (a key per send, in Redis).
_ONCE_KEPT = 24 * 3600
WhenFull = Literal["drop", "raise"]


class _Publisher(Observer):
    """What makes a bridge see every send of the signals it shares: an
    observer that may refuse a send (see ``asignals.observers``)."""

    def __init__(self, bridge: RedisBridge) -> None:
        self._asignals_check_send = bridge._sent


class RedisBridge:
    """Signals across processes and hosts, on Redis.

    A send of a signal the bridge shares (:meth:`share`) runs the local
    receivers as ever and is published; every other process whose bridge
    shares that signal runs its receivers for it once, as a background send
    (:meth:`Signal.send_background`). Start it with
    ``asignals.install(app, bridge=bridge)`` (the app's lifespan starts and
    stops it) or ``async with bridge:`` (scripts, workers, tests).

    :param url: The Redis URL, ``redis://host:port/db``.
    :param mode: ``"pubsub"``: Redis pub/sub, at most once; a process that is
        disconnected misses the sends made meanwhile and is told by
        :data:`bridge_disconnected` and :data:`bridge_connected`.
        ``"stream"``: a Redis stream per signal, at least once: a process
        that reconnects resumes after the last send it took, and a send that
        arrives twice runs once.
    :param stream_maxlen: In ``"stream"`` mode, about how many sends each
        signal's stream keeps (older ones are trimmed as new ones come): a
        process disconnected for longer than that many sends misses the
        oldest.
    :param namespace: The prefix of the Redis channels (``namespace:signal
        name``): bridges in different namespaces do not hear each other.
    :param secret: A shared secret (str or bytes): messages are signed with
        HMAC-SHA256 and unsigned or forged ones refused (logged, counted).
    :param queue_size: How many published sends may wait for Redis (while it
        is down or slow). Never more: see ``when_full``.
    :param when_full: What a send does when the queue is full: ``"drop"``
        (the default): it runs its local receivers and is not published,
        logged and counted in ``stats["dropped"]``; ``"raise"``: it raises
        :class:`~asignals.BridgeFullError` and nothing runs.
    :param max_message_bytes: The largest message a send may make; a larger
        one is an :class:`~asignals.InvalidValueError` at the send, and a
        larger one arriving is refused.
    :param connect_timeout: Seconds the bridge waits for Redis as it starts
        before it fails with :class:`~asignals.BridgeError`; also each
        command's timeout.
    :param reconnect_delay: The first and the longest wait between
        reconnection attempts, in seconds: the wait doubles each time, with
        jitter.
    :param grace: With ``async with bridge``: seconds each step of its
        shutdown may take: exclusive receivers finishing, sends from other
        processes running, queued sends being published (what is left is
        dropped, logged and counted). In an app, the middleware's
        ``background_grace`` applies instead.
    :param background_limit: With ``async with bridge``: how many sends from
        other processes may run at once (in an app, the middleware's).
    """

    def __init__(
        self,
        url: str,
        *,
        mode: Mode = "pubsub",
        namespace: str = "asignals",
        stream_maxlen: int = 10_000,
        secret: str | bytes | None = None,
        queue_size: int = 10_000,
        when_full: WhenFull = "drop",
        max_message_bytes: int = 1 << 20,
        connect_timeout: float = 10.0,
        reconnect_delay: tuple[float, float] = (0.1, 5.0),
        grace: float = 10.0,
        background_limit: int = 1000,
    ) -> None:
        if mode not in ("pubsub", "stream"):
            raise InvalidValueError(f'mode must be "pubsub" or "stream", not {mode!r}')
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise InvalidValueError(f"url must be a Redis URL (redis://host:port/db), not {url!r}")
        if when_full not in ("drop", "raise"):
            raise InvalidValueError(f'when_full must be "drop" or "raise", not {when_full!r}')
        for name, value in (
            ("queue_size", queue_size),
            ("stream_maxlen", stream_maxlen),
            ("max_message_bytes", max_message_bytes),
            ("background_limit", background_limit),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidValueError(f"{name} must be a whole number, at least 1, not {value!r}")
        first, longest = reconnect_delay
        if not 0 < first <= longest:
            raise InvalidValueError(
                f"reconnect_delay must be (first, longest) with 0 < first <= longest, "
                f"not {reconnect_delay!r}"
            )
        if not connect_timeout > 0 or not grace >= 0:
            raise InvalidValueError("connect_timeout must be > 0 and grace >= 0")
        self.url = url
        self.mode = mode
        self.namespace = namespace
        self.stream_maxlen = stream_maxlen
        # In "stream" mode, where the listener is in each signal's stream:
        # the id of the last entry taken (b"": from the start on).
        self._positions: dict[str, bytes] = {}
        self._secret = secret.encode() if isinstance(secret, str) else secret
        self.queue_size = queue_size
        self.when_full = when_full
        self.max_message_bytes = max_message_bytes
        self.connect_timeout = connect_timeout
        self.reconnect_delay = reconnect_delay
        self.grace = grace
        self.background_limit = background_limit
        #: This process's id in the messages it publishes (host, pid and a
        #: random part, as each bridge object is a process of its own).
        self.id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}".replace(" ", "_")
        # How its own messages begin, to drop them unread as they come back.
        self._own = _wire.prefix(self.id)
        self._backend = RedisBackend(url, connect_timeout)
        self._shared: dict[str, Signal] = {}
        self._exclusive: list[_Exclusive] = []
        self._observing: dict[Signal, Observing] = {}
        #: What the bridge has done, by count: ``published``, ``received``
        #: (sends from other processes handed to their receivers),
        #: ``dropped`` (sends not published: queue full, shut down before
        #: they went out, or refused by Redis: a stream's key of another
        #: type), ``refused`` (messages that arrived and were not taken:
        #: foreign, malformed, unsigned, forged, too large, for a signal not
        #: shared here), ``not_run`` (sends from elsewhere that
        #: could not start here: background limit, shutdown), ``duplicates``
        #: (sends that arrived again, dropped), ``reconnects``; for exclusive
        #: receivers, ``exclusive_done``, ``exclusive_failed`` (each failed
        #: attempt) and ``dead_letters``.
        self.stats = dict.fromkeys(
            (
                "published",
                "received",
                "dropped",
                "refused",
                "not_run",
                "duplicates",
                "reconnects",
                "exclusive_done",
                "exclusive_failed",
                "dead_letters",
            ),
            0,
        )
        # The number of the last send taken from each process, for each
        # signal, the most recently heard last.
        self._seen: dict[tuple[str, str], int] = {}
        # The outbound queue, filled from any thread, emptied by the
        # publisher task.
        # Each send: its number, its channel, its message, and what to tell
        # once Redis has it (while traced).
        self._queue: deque[tuple[int, str, bytes, _tracing.Published | None]] = deque()
        self._lock = threading.Lock()
        self._queued = 0  # the number of the last message queued
        self._done = 0  # every message up to this one is published or dropped
        self._dropping = False  # dropping since the queue filled: logged once
        self._state: Literal["new", "running", "closed"] = "new"
        self._wake: anyio.Event | None = None
        self._progress: anyio.Event | None = None
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._thread: int | None = None
        self._background: Background | None = None
        self._app: Any = None
        self._connected = False
        self._stop_listening: anyio.CancelScope | None = None
        self._stop: anyio.Event | None = None
        self._served: anyio.Event | None = None
        self._exit_stack: AsyncExitStack | None = None
        self._quieting = False
        self._idle: anyio.Event | None = None
        # The signals whose sends from receivers of sends from elsewhere
        # were said to stay here.
        self._warned: WeakSet[Signal] = WeakSet()
        # The signal of the send from elsewhere being handed to its receivers
        # (a background send made here, which must not be published again).
        self._handing: tuple[Signal, int] | None = None
        # Whether tracing a send failed, which is logged once.
        self._untraced = False
        _bridges.add(self)

    def __repr__(self) -> str:
        return f"<RedisBridge {self.mode} {self.namespace!r} {self._state}>"

    # What crosses.

    def share(self, *signals: Signal) -> None:
        """Have these named signals cross processes: their sends are
        published, and sends of them from other processes run their
        receivers here. Call it before the bridge starts, in every process
        (each shares what it sends or receives)."""
        if self._state == "running":
            raise UsageError(
                "share() must be called before the bridge starts (in the app's setup, "
                "before install() or `async with bridge`)."
            )
        for signal in signals:
            if not isinstance(signal, NamedSignal):
                raise ArgumentError(
                    f"share() takes named signals (asignals.signal('name'), "
                    f"Namespace.signal), which other processes find by name, not {signal!r}"
                )
            if signal in lifecycle.values():
                raise ArgumentError(
                    f"{describe(signal)} is one of asignals' own signals, whose senders "
                    "and arguments (apps, requests, responses, templates) are live "
                    "objects of this process: it cannot be shared. Send a signal of "
                    "your own, with plain values, from its receiver."
                )
            taken = self._shared.get(signal.name)
            if taken is not None and taken is not signal:
                raise InvalidValueError(
                    f"This bridge already shares another signal named {signal.name!r}"
                )
        with _sharing_lock:
            for signal in signals:
                other = _sharing.get(signal)
                if other is not None and other is not self and other._state != "closed":
                    raise UsageError(
                        f"{describe(signal)} is already shared through another bridge "
                        f"({other!r}); a signal crosses through one bridge at a time "
                        "(another may take it over once that one has shut down)."
                    )
            for signal in signals:
                other = _sharing.get(signal)
                if other is not None and other is not self:
                    other._unshare(signal)
                if other is not self:
                    name: str = signal.name  # type: ignore[attr-defined]
                    _sharing[signal] = self
                    self._shared[name] = signal
                    self._positions[self._channel(name)] = b""
                    self._observing[signal] = observe(_Publisher(self), signal)

    def _unshare(self, signal: Signal) -> None:
        """Let go of ``signal`` (this bridge has shut down, and another one
        shares it now)."""
        self._shared.pop(signal.name, None)  # type: ignore[attr-defined]
        self._positions.pop(self._channel(signal.name), None)  # type: ignore[attr-defined]
        self._exclusive = [e for e in self._exclusive if e.signal is not signal]
        observing = self._observing.pop(signal, None)
        if observing is not None:
            observing.close()

    def exclusive(
        self,
        signal: Signal,
        receiver: Receiver | None = None,
        *,
        name: str | None = None,
        idle_timeout: float = 30.0,
        max_failures: int = 5,
    ) -> Any:
        """Run ``receiver`` once per send of ``signal`` across all processes,
        not once per process: each send (made anywhere, this process too) is
        handled by one live process whose bridge has this exclusive receiver
        (its group: ``name``, by default the receiver's qualified name), and
        acknowledged only once the receiver returned. A send whose process
        died or failed in the receiver is taken over by a process after
        ``idle_timeout`` seconds; after ``max_failures`` attempts it goes to
        the dead-letter stream ``<namespace>:<signal name>:dead``, logged and
        reported through ``got_background_exception``. The durable form of a
        background send: it survives the process that took it.

        Needs ``mode="stream"`` in every process that sends ``signal``. Shares
        ``signal``. The receiver is not connected to ``signal``: it runs only
        this way, in an application context of the app where there is one
        (not with ``async with bridge``), and not for the sends made before
        its group first existed. Use it as
        a decorator, ``@bridge.exclusive(signal)``, or call it with the
        receiver.
        """
        if self.mode != "stream":
            raise InvalidValueError(
                'exclusive receivers need mode="stream" (a stream keeps each send until '
                "one process handled it); this bridge is in mode "
                f"{self.mode!r}"
            )
        if not idle_timeout > 0 or not isinstance(max_failures, int) or max_failures < 1:
            raise InvalidValueError("idle_timeout must be > 0 and max_failures at least 1")

        def register(function: Receiver) -> Receiver:
            if not callable(function):
                raise ArgumentError(f"exclusive() takes a callable receiver, not {function!r}")
            group = name if name is not None else callable_name(function)
            if any(e.group == group and e.signal is signal for e in self._exclusive):
                raise InvalidValueError(
                    f"{describe(signal)} already has an exclusive receiver named {group!r}; "
                    "give this one another name="
                )
            self.share(signal)
            self._exclusive.append(_Exclusive(signal, function, group, idle_timeout, max_failures))
            return function

        if receiver is None:
            return register
        return register(receiver)

    @property
    def shared(self) -> list[Signal]:
        """The signals this bridge shares."""
        return list(self._shared.values())

    def _channel(self, name: str) -> str:
        return f"{self.namespace}:{name}"

    # Sending: called as each send of a shared signal starts, before its
    # receivers, from whatever thread made it.

    def _sent(self, send: ObservedSend) -> None:
        signal, sender, kwargs = send.signal, send.sender, send.kwargs
        if signal._is_muted or self._handing == (signal, threading.get_ident()):
            return  # a muted signal sends nothing; a send from elsewhere is not sent back
        if _origin.get() is not None:
            # Made while a send from elsewhere is handled: it stays here, so
            # that processes never bounce a signal between them.
            if signal not in self._warned:
                self._warned.add(signal)
                logger.warning(
                    "A send of %s made while a send from another process was handled "
                    "stays in this process: it is not published (other processes' "
                    "receivers and exclusive receivers do not get it). Said once per signal.",
                    describe(signal),
                )
            return
        name = signal.name  # type: ignore[attr-defined]
        app = sender is not None and (sender is self._app or _is_current_app(sender))
        if not app:
            _wire.check_sender(name, sender)
        _wire.check_arguments(name, kwargs)
        channel = self._channel(name)
        # The trace context, while asignals is traced (asignals.otel): made
        # first, so that the message carries it, and told what became of it.
        trace: dict[str, str] | None = None
        published: _tracing.Published | None = None
        tracer = _tracing.tracer
        if tracer is not None:
            try:
                traced = tracer.publishing(send, channel)
            except Exception:
                traced = None
                if not self._untraced:
                    self._untraced = True
                    logger.exception(
                        "Tracing a send of %s failed: it is published untraced, as are "
                        "the next sends tracing fails for (said once)",
                        name,
                    )
            if traced is not None:
                trace, published = traced
        try:
            dropped = self._queue_send(
                signal, sender, app, kwargs, channel, trace, published, send.data
            )
        except BaseException as exc:
            if published is not None:
                published(exc)
            raise
        if dropped is not None:
            if published is not None:
                published(dropped)
            return
        self._wake_publisher()

    def _queue_send(
        self,
        signal: Signal,
        sender: Any,
        app: bool,
        kwargs: dict[str, Any],
        channel: str,
        trace: dict[str, str] | None,
        published: _tracing.Published | None,
        data: dict[Any, Any] | None = None,
    ) -> str | None:
        """Queue a send for the publisher, or say why it was dropped (logged,
        counted), or raise why it is refused."""
        name = signal.name  # type: ignore[attr-defined]
        with self._lock:
            number = self._queued + 1
            envelope = _wire.Envelope(
                number, self.id, name, None if app else sender, app, dict(kwargs), trace
            )
            message = _wire.encode(envelope, self._secret, self.max_message_bytes)
            if self._state == "closed":
                self.stats["dropped"] += 1
                logger.error(
                    "Send of %s not published: the bridge %r is shut down",
                    describe(signal),
                    self,
                )
                return "the bridge is shut down"
            if len(self._queue) >= self.queue_size:
                if self.when_full == "raise":
                    raise BridgeFullError(
                        f"Send of {describe(signal)} refused: the bridge's outbound queue "
                        f"holds {len(self._queue)} sends (queue_size={self.queue_size}) "
                        "that Redis has not taken yet. Nothing was sent. Retry later, or "
                        "raise queue_size."
                    )
                self.stats["dropped"] += 1
                if not self._dropping:
                    self._dropping = True
                    logger.error(
                        "The bridge's outbound queue is full (queue_size=%d): sends are "
                        "not published until it drains, each counted in stats['dropped'] "
                        "(first: %s)",
                        self.queue_size,
                        describe(signal),
                    )
                return "the bridge's outbound queue is full"
            self._queued = number
            self._queue.append((number, channel, message, published))
            if data is not None:
                data[_tracing.PUBLISHED] = (self.id, number)
        return None

    def _wake_publisher(self) -> None:
        wake = self._wake
        if wake is None or wake.is_set():
            return
        if threading.get_ident() == self._thread:
            wake.set()
        else:
            # RuntimeError: the loop is gone; the queue is drained or
            # dropped as the bridge closes.
            with suppress(RuntimeError):
                anyio.from_thread.run_sync(wake.set, token=self._token)

    # Running.

    async def __aenter__(self) -> RedisBridge:
        """Start the bridge on its own task group (sends from other processes
        run there, ``background_limit`` at a time); return once connected and
        subscribed."""
        self._check_not_running()
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            task_group = await stack.enter_async_context(anyio.create_task_group())
            background = Background(task_group, self.background_limit, self.grace)
            stack.callback(background.release)
            stack.push_async_callback(self._close)
            stack.push_async_callback(self._drain)
            stack.push_async_callback(background.close)
            stack.push_async_callback(self._quiet)
            await self._start(task_group, background, None)
        except BaseException as exc:
            try:
                await stack.__aexit__(type(exc), exc, exc.__traceback__)
            except BaseExceptionGroup as group:
                _raise_bridge_error(group)
            raise
        self._exit_stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop listening, let the sends from other processes finish (for at
        most ``grace`` seconds), publish what is queued (the same), close."""
        stack, self._exit_stack = self._exit_stack, None
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)

    async def _start(
        self, task_group: anyio.abc.TaskGroup, background: Background, app: Any
    ) -> None:
        """Start on ``task_group``, running sends from other processes on
        ``background`` with ``app`` as the app; return once connected and
        subscribed, or raise :class:`BridgeError` after ``connect_timeout``."""
        self._check_not_running()
        self._state = "running"
        self._background = background
        self._app = app
        self._thread = threading.get_ident()
        self._token = anyio.lowlevel.current_token()
        self._wake = anyio.Event()
        self._progress = anyio.Event()
        self._stop = anyio.Event()
        self._served = anyio.Event()
        self._connected = False
        self._dropping = False
        self._quieting = False
        try:
            await task_group.start(self._serve)
        except BaseException:
            self._state = "closed"
            raise

    def _check_not_running(self) -> None:
        if self._state == "running":
            raise BridgeError(f"{self!r} is already running: one app or one `async with` at a time")

    async def _serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        assert self._stop is not None
        assert self._served is not None
        try:
            async with anyio.create_task_group() as tasks:
                await tasks.start(self._listen)
                tasks.start_soon(self._publish)
                for exclusive in self._exclusive:
                    # Started once its group exists: sends from now on are
                    # handled.
                    await tasks.start(self._consume, exclusive)
                task_status.started()
                await self._stop.wait()
                tasks.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            _raise_bridge_error(group)
        finally:
            self._served.set()

    async def _listen(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Subscribe to the shared signals' channels and take what arrives,
        reconnecting with backoff; tell the app of each outage."""
        channels = [self._channel(name) for name in self._shared]
        started = False
        attempt = 0
        deadline = listened = anyio.current_time() + self.connect_timeout
        with anyio.CancelScope() as self._stop_listening:
            while True:
                try:
                    if not channels:
                        if not started:
                            task_status.started()
                            started = True
                        await anyio.sleep_forever()
                    if self.mode == "stream":
                        listening = self._backend.read(self._positions, _READ_BLOCK)
                    else:
                        listening = self._backend.subscribe(channels)
                    async with listening as messages:
                        listened = anyio.current_time()
                        await self._now_connected(started)
                        if not started:
                            task_status.started()
                            started = True
                        async for message in messages:
                            self._take(message)
                    raise BackendDown("the subscription ended")
                except Exception as exc:
                    # Closed under it as the bridge stops: no outage.
                    await anyio.lowlevel.checkpoint_if_cancelled()
                    # The backoff starts again after a connection that
                    # lasted, not after one that fails at once.
                    if anyio.current_time() - listened > self.reconnect_delay[1]:
                        attempt = 0
                    listened = math.inf  # until the next connection
                    delay = self._backoff(attempt)
                    down = isinstance(exc, BackendDown)
                    if not started:
                        # Starting: retried until connect_timeout.
                        if anyio.current_time() + delay > deadline:
                            raise self._not_started(exc) from exc
                        logger.warning("The bridge could not listen on Redis yet: %s", exc)
                    elif down:
                        await self._now_disconnected(exc)
                    else:
                        # Redis refused a command (a key of another type, say):
                        # no outage, but nothing is heard until it is fixed.
                        logger.error(
                            "The bridge's listener failed (retried in %.1f s)", delay, exc_info=exc
                        )
                    await anyio.sleep(delay)
                    attempt += 1

    def _not_started(self, exc: Exception) -> BridgeError:
        """Why the bridge could not start, after ``connect_timeout``."""
        doing = "connect to" if isinstance(exc, BackendDown) else "listen on"
        return BridgeError(
            f"The bridge could not {doing} Redis at {self.url} within "
            f"connect_timeout={self.connect_timeout} s: {exc}"
        )

    def _backoff(self, attempt: int) -> float:
        first, longest = self.reconnect_delay
        delay: float = min(longest, first * 2**attempt)
        return delay * random.uniform(0.5, 1.0)

    async def _now_connected(self, started: bool) -> None:
        if self._connected:
            return
        self._connected = True
        if started:
            self.stats["reconnects"] += 1
            logger.warning("The bridge is connected to Redis again")
        await self._tell(bridge_connected, {"reconnect": started})

    async def _now_disconnected(self, error: BaseException) -> None:
        if not self._connected:
            return
        self._connected = False
        logger.error("The bridge lost its connection to Redis: %s", error)
        await self._tell(bridge_disconnected, {"error": error})

    async def _tell(self, signal: Signal, kwargs: dict[str, Any]) -> None:
        try:
            await signal.send_async(self, **kwargs)
        except Exception:
            logger.exception("A receiver of %s raised", describe(signal))

    async def _publish(self) -> None:
        """Publish the queued sends in order; while Redis is down (or slow),
        keep them and retry with backoff. (The listener tells the app of an
        outage: its connection breaks too.)"""
        assert self._wake is not None
        attempt = 0
        while True:
            try:
                async with self._backend.connected():
                    while True:
                        while self._queue:
                            # What is queued, up to a batch, in one round
                            # trip; taken off the queue once Redis has it
                            # (sent again after a failure: a send that
                            # arrives twice runs once).
                            with self._lock:
                                batch = list(islice(self._queue, _BATCH))
                            refused = await self._backend.publish_many(
                                [(channel, message) for _, channel, message, _ in batch],
                                self.stream_maxlen if self.mode == "stream" else None,
                            )
                            attempt = 0
                            refusals: dict[str, Exception] = {}
                            tells: list[tuple[_tracing.Published, Exception | None]] = []
                            with self._lock:
                                for (number, channel, _, told), error in zip(
                                    batch, refused, strict=True
                                ):
                                    # Unless the queue was dropped meanwhile.
                                    if self._queue and self._queue[0][0] == number:
                                        self._queue.popleft()
                                        if error is None:
                                            self.stats["published"] += 1
                                        else:
                                            self.stats["dropped"] += 1
                                            refusals[channel] = error
                                        if told is not None:
                                            tells.append((told, error))
                                self._dropping = False
                            for tell, error in tells:
                                tell(error)
                            for channel, error in refusals.items():
                                logger.error(
                                    "Redis refused sends on %s, not published (each counted "
                                    "in stats['dropped']): %s",
                                    channel,
                                    error,
                                )
                            self._finished(batch[-1][0])
                        self._wake = anyio.Event()
                        if not self._queue:
                            await self._wake.wait()
            except Exception as exc:
                await anyio.lowlevel.checkpoint_if_cancelled()
                if attempt == 0:  # once per outage
                    logger.error(
                        "The bridge could not publish (%d sends wait): %s",
                        len(self._queue),
                        exc,
                        exc_info=None if isinstance(exc, BackendDown) else exc,
                    )
                await anyio.sleep(self._backoff(attempt))
                attempt += 1

    def _finished(self, number: int) -> None:
        self._done = number
        progress, self._progress = self._progress, anyio.Event()
        if progress is not None:
            progress.set()

    async def flush(self) -> None:
        """Wait until every send made so far is published, or dropped as the
        bridge shut down (each logged). While Redis is down this waits for
        it: bound it with a timeout of yours (``anyio.fail_after``)."""
        if self._state != "running":
            raise UsageError(f"flush() needs a running bridge; {self!r} is not")
        target = self._queued
        while self._done < target and self._state == "running":
            assert self._progress is not None
            await self._progress.wait()

    # Receiving.

    def _take(self, message: bytes) -> None:
        """Run the receivers of a send from another process, in the
        background; log and count what cannot be taken. Nothing a message
        holds stops the listener."""
        try:
            self._take_message(message)
        except Exception:
            self.stats["refused"] += 1
            logger.exception("The bridge could not take a message: %r", message[:200])

    def _take_message(self, message: bytes) -> None:
        if message.startswith(self._own):
            return  # its own send: the local receivers ran as it was made
        try:
            envelope = _wire.decode(message, self._secret, self.max_message_bytes)
        except _wire.MessageError as exc:
            self.stats["refused"] += 1
            logger.warning("The bridge refused a message: %s", exc)
            return
        signal = self._shared.get(envelope.signal)
        # A send published twice (Redis took it, but the connection broke
        # before it said so, and the publisher sent it again) comes with a
        # number already seen: each process publishes its sends in order, and
        # each signal's arrive in that order (each signal has its channel or
        # stream; the numbers run across all of a process's signals).
        if signal is not None:
            seen = self._seen
            key = (envelope.origin, envelope.signal)
            last = seen.pop(key, 0)
            seen[key] = max(last, envelope.number)
            if len(seen) > _ORIGINS_KEPT:
                del seen[next(iter(seen))]
            if envelope.number <= last:
                self.stats["duplicates"] += 1
                return
        if signal is None:
            self.stats["refused"] += 1
            logger.warning(
                "The bridge refused a message for signal %r, which it does not share",
                envelope.signal,
            )
            return
        background = self._background
        assert background is not None
        sender = self._app if envelope.app else envelope.sender
        token = _origin.set(envelope.origin)
        message_token = _tracing.handing.set((envelope.origin, envelope.number))
        # While traced: the span of the send made here comes from the message.
        traced = None
        if _tracing.tracer is not None:
            attributes = self._message_attributes(envelope, message)
            traced = _tracing.incoming.set(_tracing.Message(signal, envelope.trace, attributes))
        self._handing = (signal, threading.get_ident())
        try:
            background.send(self._app, signal, sender, envelope.kwargs)
        except BackgroundError as exc:
            self.stats["not_run"] += 1
            logger.error(
                "A send of %s from %s could not run here: %s",
                describe(signal),
                envelope.origin,
                exc,
            )
            return
        except Exception:
            self.stats["not_run"] += 1
            logger.exception(
                "A send of %s from %s could not run here", describe(signal), envelope.origin
            )
            return
        finally:
            self._handing = None
            _origin.reset(token)
            _tracing.handing.reset(message_token)
            if traced is not None:
                _tracing.incoming.reset(traced)
        self.stats["received"] += 1

    def _message_attributes(
        self, envelope: _wire.Envelope, message: bytes, **more: Any
    ) -> dict[str, Any]:
        """The messaging attributes of the span that processes ``message``
        (OpenTelemetry's semantic conventions for messaging)."""
        return {
            "messaging.system": "redis",
            "messaging.destination.name": self._channel(envelope.signal),
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.message.body.size": len(message),
            "messaging.client.id": self.id,
            "asignals.bridge.origin": envelope.origin,
            "asignals.bridge.mode": self.mode,
            **more,
        }

    # Exclusive receivers.

    async def _consume(
        self, exclusive: _Exclusive, *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        """Run ``exclusive``'s receiver for the sends its group gets here, one
        at a time, reconnecting with backoff."""
        stream = self._channel(exclusive.signal.name)  # type: ignore[attr-defined]
        attempt = 0
        started = False
        deadline = anyio.current_time() + self.connect_timeout
        while not self._quieting:
            try:
                async with self._backend.work(stream, exclusive.group, self.id) as queue:
                    if not started:
                        task_status.started()
                        started = True
                    while not self._quieting:
                        # Cancelled as the bridge stops: then nothing was
                        # fetched (a fetch in flight stays pending, and is
                        # taken over after idle_timeout).
                        fetched: tuple[bytes, int, bytes] | None = None
                        with anyio.CancelScope() as exclusive.fetching:
                            fetched = await queue.next(exclusive.idle_timeout, _READ_BLOCK)
                        exclusive.fetching = None
                        attempt = 0
                        if fetched is not None:
                            await self._run_exclusive(exclusive, queue, *fetched)
            except Exception as exc:
                await anyio.lowlevel.checkpoint_if_cancelled()
                delay = self._backoff(attempt)
                if not started:
                    if anyio.current_time() + delay > deadline:
                        raise self._not_started(exc) from exc
                elif attempt == 0:  # once per outage
                    logger.error(
                        "Exclusive receiver %r lost its connection: %s",
                        exclusive.group,
                        exc,
                        exc_info=None if isinstance(exc, BackendDown) else exc,
                    )
                await anyio.sleep(delay)
                attempt += 1
        if not started:
            task_status.started()

    async def _run_exclusive(
        self,
        exclusive: _Exclusive,
        queue: WorkQueue,
        entry: bytes,
        delivered: int,
        message: bytes,
    ) -> None:
        signal = exclusive.signal
        try:
            envelope = _wire.decode(message, self._secret, self.max_message_bytes)
        except _wire.MessageError as exc:
            # Never run, never retried: acknowledged, and counted.
            self.stats["refused"] += 1
            logger.warning("The bridge refused a message for %s: %s", describe(signal), exc)
            await queue.ack(entry)
            return
        if delivered > exclusive.max_failures:
            why = (
                f"exclusive receiver {exclusive.group!r} of {describe(signal)} did not "
                f"finish it in {delivered - 1} attempts"
            )
            dead = await queue.dead_letter(entry, message, delivered - 1, why, self.stream_maxlen)
            self.stats["dead_letters"] += 1
            error = BridgeError(f"A send from {envelope.origin} was moved to {dead}: {why}")
            logger.error("%s", error)
            await self._report(error)
            return
        attributes: dict[str, Any] = {}
        if _tracing.tracer is not None:
            attributes = self._message_attributes(
                envelope,
                message,
                **{
                    "messaging.message.id": entry.decode(),
                    "messaging.consumer.group.name": exclusive.group,
                    "asignals.bridge.attempt": delivered,
                },
            )
        exclusive.busy = True
        try:
            await self._run_and_ack(exclusive, queue, entry, delivered, envelope, attributes)
        finally:
            exclusive.busy = False
            self._exclusive_idle()

    async def _run_and_ack(
        self,
        exclusive: _Exclusive,
        queue: WorkQueue,
        entry: bytes,
        delivered: int,
        envelope: _wire.Envelope,
        attributes: dict[str, Any],
    ) -> None:
        signal = exclusive.signal
        # A send published twice (the connection broke as Redis took a
        # batch, which was sent again) is in the stream twice: the copy that
        # claims it first is the one that runs (and is retried); the other
        # is acknowledged unrun.
        once = (
            f"{self.namespace}:once:{signal.name}:{exclusive.group}:"  # type: ignore[attr-defined]
            f"{envelope.origin}:{envelope.number}"
        )
        if not await queue.claim(once, entry, _ONCE_KEPT):
            self.stats["duplicates"] += 1
            await queue.ack(entry)
            return
        try:
            try:
                async with anyio.create_task_group() as keeping:
                    # While the receiver runs, its send stays this process's.
                    keeping.start_soon(self._keep, exclusive, queue, entry)
                    try:
                        await self._call_exclusive(exclusive, envelope, attributes)
                    finally:
                        keeping.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                # The receiver's own error (or a cancellation), out of the
                # group the task group made of it: one level.
                _, rest = group.split(anyio.get_cancelled_exc_class())
                raise (rest.exceptions[0] if rest is not None else next(_leaves(group))) from None
        except Exception as exc:
            self.stats["exclusive_failed"] += 1
            logger.error(
                "Exclusive receiver %r of %s raised (attempt %d of %d; retried after "
                "idle_timeout=%s s)",
                exclusive.group,
                describe(signal),
                delivered,
                exclusive.max_failures,
                exclusive.idle_timeout,
                exc_info=exc,
            )
            await self._report(exc)
            return
        await queue.ack(entry)
        self.stats["exclusive_done"] += 1

    async def _keep(self, exclusive: _Exclusive, queue: WorkQueue, entry: bytes) -> None:
        """Reset the idle time of the send a receiver runs, a few times per
        ``idle_timeout``, so that no other process takes it over while it
        runs; log it if one did (the receiver ran too long without a
        connection to Redis)."""
        while True:
            await anyio.sleep(exclusive.idle_timeout / 3)
            try:
                if not await queue.touch(entry):
                    logger.error(
                        "Exclusive receiver %r of %s ran past idle_timeout=%s s without "
                        "keeping its send, which another process took over: it may run twice",
                        exclusive.group,
                        describe(exclusive.signal),
                        exclusive.idle_timeout,
                    )
                    return
            except Exception as exc:
                # Tried again; never the receiver's concern.
                logger.warning(
                    "Exclusive receiver %r could not renew its claim on its send: %s",
                    exclusive.group,
                    exc,
                )

    async def _call_exclusive(
        self,
        exclusive: _Exclusive,
        envelope: _wire.Envelope,
        attributes: dict[str, Any],
    ) -> None:
        tracer = _tracing.tracer
        if tracer is None:
            await self._call_exclusive_receiver(exclusive, envelope)
            return
        message = _tracing.Message(exclusive.signal, envelope.trace, attributes)
        with tracer.exclusive(exclusive.signal, callable_name(exclusive.receiver), message):
            await self._call_exclusive_receiver(exclusive, envelope)

    async def _call_exclusive_receiver(
        self, exclusive: _Exclusive, envelope: _wire.Envelope
    ) -> None:
        sender = self._app if envelope.app else envelope.sender
        token = _origin.set(None if envelope.origin == self.id else envelope.origin)
        try:
            if self._app is not None:
                async with AppContext(self._app):
                    result = exclusive.receiver(sender, **envelope.kwargs)
                    if inspect.isawaitable(result):
                        await result
            else:
                result = exclusive.receiver(sender, **envelope.kwargs)
                if inspect.isawaitable(result):
                    await result
        finally:
            _origin.reset(token)

    async def _report(self, error: Exception) -> None:
        """Send ``error`` to ``got_background_exception``'s receivers."""
        try:
            await got_background_exception.send_async(self._app, exception=error)
        except Exception:
            logger.exception("A receiver of got_background_exception raised")

    def _exclusive_idle(self) -> None:
        idle = self._idle
        if idle is not None and not any(e.busy for e in self._exclusive):
            self._idle = None
            idle.set()

    # Stopping.

    async def _quiet(self, grace: float | None = None) -> None:
        """Stop taking sends from other processes, and let exclusive receivers
        finish the send they run, for at most ``grace`` seconds (the bridge's
        own by default)."""
        self._quieting = True
        scope = self._stop_listening
        if scope is not None:
            scope.cancel()
        for exclusive in self._exclusive:
            if exclusive.fetching is not None:
                exclusive.fetching.cancel()
        with anyio.move_on_after(self.grace if grace is None else grace):
            while any(e.busy for e in self._exclusive):
                self._idle = anyio.Event()
                await self._idle.wait()

    async def _drain(self, grace: float | None = None) -> None:
        """Let exclusive receivers finish the sends they run, and publish what
        is queued, for at most ``grace`` seconds (the bridge's own by
        default); then close, dropping (and logging) what is left."""
        if self._state != "running":
            return
        grace = self.grace if grace is None else grace
        try:
            with anyio.move_on_after(grace):
                while any(e.busy for e in self._exclusive):
                    self._idle = anyio.Event()
                    await self._idle.wait()
                await self.flush()
        finally:
            self._drop_queued(f"grace={grace} s")
        await self._close()

    def _drop_queued(self, why: str) -> None:
        """Close: drop what is queued, each counted, in one log line, and
        wake whatever waits in :meth:`flush`."""
        with self._lock:
            left = len(self._queue)
            told = [told for *_, told in self._queue if told is not None]
            self._queue.clear()
            self.stats["dropped"] += left
            self._state = "closed"
            self._done = self._queued
        progress, self._progress = self._progress, None
        if progress is not None:
            progress.set()
        for tell in told:
            tell(f"dropped as the bridge shut down ({why})")
        if left:
            logger.error(
                "The bridge shut down with %d sends not yet published (%s): they were dropped",
                left,
                why,
            )

    async def _close(self) -> None:
        """Stop the bridge's tasks and close its connections (again: nothing)."""
        if self._state == "new":
            return
        self._drop_queued("its shutdown was cut short")
        if self._stop is not None:
            self._stop.set()
            assert self._served is not None
            with anyio.CancelScope(shield=True):
                await self._served.wait()
        self._connected = False
        self._wake = self._progress = None
        self._background = None
        self._token = None


def _is_current_app(sender: Any) -> bool:
    ctx = _app_ctx.get(None)
    return ctx is not None and sender is ctx.app


def _raise_bridge_error(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Raise the one error of a bridge that could not start on its own, not
    in the group a task group made of it; else the group."""
    matched, rest = group.split(BridgeError)
    if matched is None or rest is not None:
        raise group
    raise next(_leaves(matched)) from None


class _Exclusive:
    """An exclusive receiver: its signal, its group, and whether it runs."""

    def __init__(
        self,
        signal: Signal,
        receiver: Receiver,
        group: str,
        idle_timeout: float,
        max_failures: int,
    ) -> None:
        self.signal = signal
        self.receiver = receiver
        self.group = group
        self.idle_timeout = idle_timeout
        self.max_failures = max_failures
        self.busy = False
        self.fetching: anyio.CancelScope | None = None

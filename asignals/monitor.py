"""A live view of the signals an app sends: mount it and open it in a browser.

>>> from starlette.routing import Mount
>>> from asignals.monitor import SignalMonitor
>>> monitor = SignalMonitor()
>>> routes = [Mount("/signals", app=monitor)]  # then open /signals/
>>> monitor.close()  # it watches from its creation until it is closed

The page lists each send as it is made, newest first: the time, the signal,
the sender, the arguments (summarised with :mod:`reprlib`), the request that
made it, and each receiver with how it ended and how long it took; below, the
receivers connected to each signal. A websocket adds sends to the page as they
happen; without JavaScript (or websockets) the page is a plain list to reload.
"""

from __future__ import annotations

import ipaddress
import itertools
import reprlib
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Collection, Iterable
from contextlib import suppress
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit

import anyio
import jinja2
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route, Router, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ._context import AppContext, RequestContext, _app_ctx
from ._exceptions import ArgumentError, InvalidValueError
from ._lifecycle import appcontext_popped
from ._signal import Signal
from ._types import ANY
from ._utilities import callable_name, running_asyncio_loop
from .observers import (
    ObservedSend,
    Observer,
    Observing,
    ReceiverCall,
    all_signals,
    connections,
    observe,
)

__all__ = ["ReceiverRun", "SignalMonitor", "WatchedSend", "is_loopback"]


def _summary() -> reprlib.Repr:
    summary = reprlib.Repr()
    summary.maxlevel = 3
    summary.maxstring = 160
    summary.maxother = 160
    summary.maxdict = summary.maxlist = summary.maxtuple = summary.maxset = 8
    return summary


_SUMMARY = _summary()


def safe_repr(value: Any) -> str:
    """``repr(value)``, shortened; never raises."""
    try:
        return _SUMMARY.repr(value)
    except Exception as exc:
        return f"<repr of {type(value).__name__} failed: {type(exc).__name__}>"


def signal_name(signal: Signal) -> str:
    """How the monitor names a signal: its name, if it has one."""
    name = getattr(signal, "name", None)
    return name if isinstance(name, str) else f"<Signal at {id(signal):#x}>"


def is_loopback(connection: HTTPConnection) -> bool:
    """Whether the client is on this machine (127.0.0.0/8 or ::1) and named
    this machine in its ``Host`` header (``localhost`` or a loopback
    address): the monitor's default ``allow``. The second check keeps out web
    pages that reach a local server by DNS rebinding. Behind a reverse proxy on
    the same machine every client looks local: see :class:`SignalMonitor`."""
    client = connection.client
    return (
        client is not None
        and _is_loopback_address(client.host)
        and _is_loopback_name(connection.url.hostname)
    )


def _is_loopback_address(host: str | None) -> bool:
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _is_loopback_name(hostname: str | None) -> bool:
    name = (hostname or "").lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost") or _is_loopback_address(name)


def _same_origin(connection: HTTPConnection) -> bool:
    """Whether a websocket comes from a page of the server it connects to, or
    from no page at all (not a browser). Browsers let any page open a
    websocket to any server, with the user's cookies."""
    origin = connection.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc.lower() == connection.headers.get("host", "").lower()


class ReceiverRun:
    """One receiver's part in a :class:`WatchedSend`.

    ``status`` is ``"not called"`` (yet, or ever: an earlier receiver raised,
    the send timed out), ``"running"``, ``"done"``, ``"failed"`` (``error``
    says with what) or ``"cancelled"``; ``duration`` is in seconds, once it
    ended.
    """

    __slots__ = ("duration", "error", "kind", "name", "status")

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kind = kind
        self.status = "not called"
        self.duration: float | None = None
        self.error: str | None = None


_numbers = itertools.count(1)
_versions = itertools.count(1)
# Guards the monitors' buffers and the versions of sends: a version is taken
# and stored, and a send added, under it, so that a live view that read every
# version up to N has seen every change numbered up to N, whatever the thread
# that made it.
_buffers_lock = threading.Lock()


class WatchedSend:
    """One send of a signal, as the monitors saw it. Its values are summaries
    (strings), taken when the send began calling receivers."""

    def __init__(self, signal: Signal, sender: Any, kwargs: dict[str, Any]) -> None:
        self.number = 0  # numbered in the order sends are shown
        self.time = time.time()
        self.signal = signal_name(signal)
        self.sender = safe_repr(sender)
        self.arguments: dict[str, str] = {}
        self.receivers: list[ReceiverRun] = []
        self.version = 0
        self._kwargs: dict[str, Any] | None = kwargs
        # Weakly: a send kept by one monitor must not keep another alive.
        self._monitors: tuple[weakref.ref[SignalMonitor], ...] = ()
        # The request (or websocket) whose app context made the send.
        ctx = _app_ctx.get(None)
        self.request: str | None = None
        self._path: str | None = None
        self._own = _made_by_monitor(signal, ctx)
        # (A request over has let go of its scope.)
        scope = ctx.scope if isinstance(ctx, RequestContext) else None
        if scope is not None and scope["type"] in ("http", "websocket"):
            self._path = scope.get("path", "")
            method = scope.get("method", "WEBSOCKET" if scope["type"] == "websocket" else "")
            self.request = f"{method} {self._path}"

    def publish(self) -> None:
        """Show the send on the open monitors; only the first call counts."""
        kwargs = self._kwargs
        if kwargs is None:
            return
        self._kwargs = None
        self.arguments = {name: safe_repr(value) for name, value in kwargs.items()}
        monitors = tuple(m for m in _monitors() if m._accepts(self))
        with _buffers_lock:
            self.number = next(_numbers)
            self.version = next(_versions)
            self._monitors = tuple(m._ref for m in monitors)
            for monitor in monitors:
                monitor._sends.append(self)
        for monitor in monitors:
            monitor._wake()

    def _changed(self) -> None:
        with _buffers_lock:
            self.version = next(_versions)
        for ref in self._monitors:
            monitor = ref()
            if monitor is not None:
                monitor._wake()


class _Watcher(Observer):
    """The observer of every signal while a monitor is open: it keeps a
    :class:`WatchedSend` for each send, and updates it as receivers run."""

    def send_started(self, send: ObservedSend) -> None:
        watched = WatchedSend(send.signal, send.sender, send.kwargs)
        watched.receivers = [ReceiverRun(call.name, call.kind) for call in send.calls]
        send.data[_Watcher] = watched
        watched.publish()

    def receiver_started(self, send: ObservedSend, call: ReceiverCall) -> None:
        watched = send.data.get(_Watcher)
        if watched is not None:
            watched.receivers[call.index].status = "running"
            watched._changed()

    def receiver_finished(self, send: ObservedSend, call: ReceiverCall) -> None:
        watched = send.data.get(_Watcher)
        if watched is None:
            return
        run = watched.receivers[call.index]
        run.status = call.status
        run.duration = call.duration
        error = call.error
        if error is not None:
            run.error = type(error).__name__ if call.status == "cancelled" else safe_repr(error)
        watched._changed()


_WATCHER = _Watcher()
_watching: Observing | None = None


# The open monitors, weakly: one that nobody holds any more (its app is gone)
# stops watching.
_open_monitors: tuple[weakref.ref[SignalMonitor], ...] = ()
# The app context of a request that a monitor serves, while it lasts.
_serving_monitor: ContextVar[AppContext | None] = ContextVar(
    "asignals.serving_monitor", default=None
)


def _made_by_monitor(signal: Signal, ctx: AppContext | None) -> bool:
    """Whether a send made in ``ctx`` belongs to a request for a monitor's
    own pages: one of those after the monitor got the request, and the
    ``appcontext_popped`` that ends it, sent when no context is left."""
    serving = _serving_monitor.get()
    if serving is None:
        return False
    if ctx is serving:
        return True
    # That request is over (an app can run many requests in one context, as
    # httpx's ASGITransport does).
    _serving_monitor.set(None)
    return ctx is None and signal is appcontext_popped


_monitors_lock = threading.Lock()


class _Waiter:
    """Wakes one live view's task when sends change, from any thread."""

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.thread = threading.get_ident()
        loop = running_asyncio_loop()
        self.call_soon: Callable[[Callable[[], None]], object]
        if loop is not None:
            self.call_soon = loop.call_soon_threadsafe
        else:
            import trio  # anyio runs on asyncio or trio

            self.call_soon = trio.lowlevel.current_trio_token().run_sync_soon

    def _set(self) -> None:
        self.event.set()

    def wake(self) -> None:
        if threading.get_ident() == self.thread:
            self.event.set()
        else:
            # The loop may be gone; the view went with it.
            with suppress(RuntimeError):
                self.call_soon(self._set)

    async def wait(self) -> None:
        await self.event.wait()
        self.event = anyio.Event()


class SignalMonitor:
    """A mountable ASGI app that shows the signals sent in this process, live.

    ``app.mount("/signals", SignalMonitor())``, or
    ``Mount("/signals", app=SignalMonitor())`` in a route list, then open
    ``/signals/`` in a browser. ``?signal=request`` filters the list to the
    signals whose name contains ``request``.

    The monitor watches every signal from its creation until :meth:`close`,
    or until nothing holds it any more: while it does, each send goes
    through its bookkeeping (a few microseconds per send and receiver);
    before and after, nothing does. It keeps the last ``capacity`` sends and
    nothing more; requests for its own pages are not shown.

    :param capacity: How many sends to keep (at least 1).
    :param allow: Which connections may see the monitor, as a function of the
        Starlette ``HTTPConnection``. The default, :func:`is_loopback`,
        allows clients on this machine that ask for it by a loopback name
        only: the monitor shows the arguments of every signal, such as form
        data and headers. Behind a reverse proxy on the same machine, every
        client looks local unless the server takes the client's address from
        the proxy's ``X-Forwarded-For`` (uvicorn does, for proxies on
        127.0.0.1). Pass an ``allow`` that checks more
        (``allow=lambda conn: conn.user.is_authenticated`` with Starlette's
        ``AuthenticationMiddleware``) to let others in. Whatever ``allow``
        says, the live view refuses websockets opened by other sites' pages.
    """

    def __init__(
        self,
        *,
        capacity: int = 200,
        allow: Callable[[HTTPConnection], bool] = is_loopback,
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise InvalidValueError(
                f"capacity must be an int of at least 1 (how many sends the monitor "
                f"keeps), not {capacity!r}"
            )
        if not callable(allow):
            raise ArgumentError(
                f"allow must be a function of the connection that returns whether it "
                f"may see the monitor, such as asignals.monitor.is_loopback, not {allow!r}"
            )
        self.capacity = capacity
        self.allow = allow
        self._sends: deque[WatchedSend] = deque(maxlen=capacity)
        self._waiters: set[_Waiter] = set()
        self._prefixes: frozenset[str] = frozenset()
        self._instance = uuid.uuid4().hex
        self._closed = False
        self._router = Router(
            routes=[Route("/", self._page), WebSocketRoute("/live", self._live)],
        )
        self._ref = ref = _open(self)
        self._finalizer = weakref.finalize(self, _close, ref)

    @property
    def sends(self) -> list[WatchedSend]:
        """The sends kept, oldest first."""
        with _buffers_lock:
            return list(self._sends)

    def close(self) -> None:
        """Stop watching and wake the live views, which then end. When the
        last open monitor closes, signals are no longer watched at all."""
        if self._closed:
            return
        self._closed = True
        self._finalizer()
        self._wake()

    def __enter__(self) -> SignalMonitor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            # The middleware's sends after this (request_finished, the
            # teardown) run in this context, and are not shown.
            _serving_monitor.set(_app_ctx.get(None))
            root = scope.get("root_path", "")
            if root and root not in self._prefixes:
                self._prefixes = self._prefixes | {root}
            message = self._refusal(HTTPConnection(scope))
            if message is not None:
                if scope["type"] == "websocket":
                    await WebSocket(scope, receive, send).close(code=1008, reason="not allowed")
                else:
                    await PlainTextResponse(message, status_code=403)(scope, receive, send)
                return
        await self._router(scope, receive, send)

    def _refusal(self, connection: HTTPConnection) -> str | None:
        """Why ``connection`` may not see the monitor, or None if it may."""
        if connection.scope["type"] == "websocket" and not _same_origin(connection):
            return (
                "The signal monitor's live view answers its own pages only, and this "
                f"websocket came from a page at {connection.headers['origin']}."
            )
        if self.allow(connection):
            return None
        if self.allow is not is_loopback:
            return (
                f"The signal monitor's allow function ({callable_name(self.allow)}) "
                "refused this request."
            )
        client = connection.client
        where = (
            f"this request came from {client.host if client else 'an unknown client'}"
            if client is None or not _is_loopback_address(client.host)
            else f"this request was for the host {connection.url.hostname!r}; "
            "use http://localhost or http://127.0.0.1"
        )
        return (
            f"The signal monitor answers clients on this machine only, and {where}. "
            "To let others in, mount SignalMonitor(allow=...) with a function of the "
            "connection that says who may see it (the monitor shows every signal's "
            "arguments)."
        )

    # What is kept, and who is told.

    def _accepts(self, send: WatchedSend) -> bool:
        return not self._closed and self._shows(send)

    def _shows(self, send: WatchedSend) -> bool:
        """Whether ``send`` was not made by a request for the monitor itself
        (those made before it learnt where it is mounted are kept, not shown)."""
        if send._own:
            return False
        path = send._path
        if path is None:
            return True
        return not any(path == p or path.startswith(p + "/") for p in self._prefixes)

    def _wake(self) -> None:
        for waiter in list(self._waiters):
            waiter.wake()

    def _changed_since(self, version: int, pattern: str) -> tuple[list[WatchedSend], int]:
        """The sends shown that changed after ``version``, and the version
        the view has then seen."""
        with _buffers_lock:
            sends = [s for s in self._sends if s.version > version]
            version = max((s.version for s in sends), default=version)
        return [s for s in _filtered(sends, pattern) if self._shows(s)], version

    # The pages.

    async def _page(self, request: Request) -> Response:
        pattern = request.query_params.get("signal", "").strip()
        with _buffers_lock:
            version = next(_versions)
            kept = list(self._sends)
        sends = [s for s in _filtered(reversed(kept), pattern) if self._shows(s)]
        signals = _connected(pattern)
        html = _template("monitor.html").render(
            sends=sends,
            signals=signals,
            pattern=pattern,
            version=version,
            instance=self._instance,
            capacity=self.capacity,
            closed=self._closed,
        )
        return HTMLResponse(html, headers={"cache-control": "no-store"})

    async def _live(self, websocket: WebSocket) -> None:
        await websocket.accept()
        if self._closed or websocket.query_params.get("instance") != self._instance:
            # A closed monitor, or a page from another process (a restarted
            # server, a new monitor): the page says so, or reloads.
            await websocket.send_json({"closed": True} if self._closed else {"reload": True})
            await websocket.close()
            return
        pattern = websocket.query_params.get("signal", "").strip()
        try:
            version = int(websocket.query_params.get("after", "0"))
        except ValueError:
            version = 0
        waiter = _Waiter()
        self._waiters.add(waiter)
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(_until_closed, websocket, tasks.cancel_scope)
                await self._stream(websocket, waiter, version, pattern)
                tasks.cancel_scope.cancel()
        finally:
            self._waiters.discard(waiter)
        if websocket.application_state == WebSocketState.CONNECTED:
            with suppress(WebSocketDisconnect, OSError, RuntimeError):
                await websocket.close()

    async def _stream(
        self, websocket: WebSocket, waiter: _Waiter, version: int, pattern: str
    ) -> None:
        """Send the rows that change, until the monitor closes."""
        row = _template("monitor_row.html")
        try:
            while not self._closed:
                changed, version = self._changed_since(version, pattern)
                if changed:
                    rows = [
                        {
                            "id": f"send-{s.number}",
                            "number": s.number,
                            "html": row.render(send=s),
                        }
                        for s in sorted(changed, key=lambda s: s.number)
                    ]
                    await websocket.send_json({"rows": rows, "version": version})
                await waiter.wait()
        except (WebSocketDisconnect, OSError):
            pass  # the browser went away


async def _until_closed(websocket: WebSocket, scope: anyio.CancelScope) -> None:
    """Read the socket until the browser closes it, then end the view."""
    with suppress(WebSocketDisconnect, OSError):
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass
    scope.cancel()


def _monitors() -> list[SignalMonitor]:
    """The open monitors."""
    return [m for ref in _open_monitors if (m := ref()) is not None]


def _open(monitor: SignalMonitor) -> weakref.ref[SignalMonitor]:
    global _open_monitors, _watching
    ref = weakref.ref(monitor)
    with _monitors_lock:
        first = not _open_monitors
        _open_monitors = (*_open_monitors, ref)
        if first:
            _watching = observe(_WATCHER)
    return ref


def _close(ref: weakref.ref[SignalMonitor]) -> None:
    global _open_monitors, _watching
    with _monitors_lock:
        _open_monitors = tuple(r for r in _open_monitors if r is not ref)
        if not _open_monitors and _watching is not None:
            _watching.close()
            _watching = None


def _matches(pattern: str) -> Callable[[str], bool]:
    """Whether a signal name contains ``pattern``, in any case, with ``_``
    and ``-`` alike (Flask names ``request_started`` "request-started")."""
    needle = pattern.casefold().replace("_", "-")
    return lambda name: needle in name.casefold().replace("_", "-")


def _filtered(sends: Iterable[WatchedSend], pattern: str) -> list[WatchedSend]:
    matches = _matches(pattern)
    return [s for s in sends if matches(s.signal)]


class _Connected:
    """A signal and its receivers, for the page."""

    def __init__(self, name: str, doc: str, receivers: list[tuple[str, str, str]]) -> None:
        self.name = name
        self.doc = doc
        self.receivers = receivers


def _connected(pattern: str) -> list[_Connected]:
    """The named signals, and the anonymous ones with receivers, with their
    receivers: name, kind, and the senders they are connected for."""
    matches = _matches(pattern)
    shown = []
    for signal in all_signals():
        name = signal_name(signal)
        if not matches(name):
            continue
        receivers = [
            (callable_name(receiver), kind, _senders(senders))
            for receiver, kind, senders in connections(signal)
        ]
        if not receivers and not hasattr(signal, "name"):
            continue
        doc = signal.__doc__ if signal.__doc__ != type(signal).__doc__ else None
        # The first line of the doc, without reST's literal marks.
        line = (doc or "").strip().split("\n")[0].replace("``", "")
        shown.append(_Connected(name, line, receivers))
    return sorted(shown, key=lambda c: c.name)


def _senders(senders: Collection[Any]) -> str:
    if ANY in senders:
        return "any sender"
    return ", ".join(sorted(safe_repr(s) for s in senders))


def _format_time(timestamp: float) -> str:
    milliseconds = int(timestamp % 1 * 1000)
    return f"{time.strftime('%H:%M:%S', time.localtime(timestamp))}.{milliseconds:03d}"


def _format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


_environment: jinja2.Environment | None = None


def _template(name: str) -> jinja2.Template:
    # The monitor renders with its own environment, not asignals.templating:
    # its pages send no template signals.
    global _environment
    if _environment is None:
        _environment = jinja2.Environment(
            loader=jinja2.PackageLoader("asignals", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        _environment.globals.update(format_time=_format_time, format_duration=_format_duration)
    return _environment.get_template(name)

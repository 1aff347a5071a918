"""A live view of the signals an app sends, request by request: mount it and
open it in a browser.

>>> from starlette.routing import Mount
>>> from asignals.monitor import SignalMonitor
>>> monitor = SignalMonitor()
>>> routes = [Mount("/signals", app=monitor)]  # then open /signals/

The page lists the requests (and websockets, the lifespan, sends made
outside any request), newest first; opening one shows its signals and their
receivers in time, as a waterfall, with the background sends it made and the
sends they caused in other processes. It records while a page is open, and
costs nothing while nobody looks.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator
from contextlib import contextmanager, suppress
from contextvars import Context
from importlib import resources
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import jinja2
from markupsafe import Markup
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route, Router, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from .._exceptions import ArgumentError, InvalidValueError
from .._signal import NamedSignal
from .._summary import SECRET_PARTS, Secrets, summary
from .._types import ANY
from .._utilities import callable_name, running_asyncio_loop
from ..observers import Observing, all_signals, connections, observe
from ._access import (
    PROXY_HEADERS,
    fetched_by_own_page,
    host_allowed,
    host_names,
    is_loopback,
    proxied,
    same_origin,
)
from ._recorder import Recorder, plain, signal_name

if TYPE_CHECKING:
    from ..bridge import RedisBridge

__all__ = ["PROXY_HEADERS", "SECRET_PARTS", "SignalMonitor", "first_sentence", "is_loopback"]

logger = logging.getLogger("asignals")

# Seconds between two pushes to a view: the changes made meanwhile go in one.
PUSH_INTERVAL = 0.25
# With a bridge: how often a worker with open views asks the others for their
# traces, and how long a worker records after it was last asked.
PULL_INTERVAL = 0.5
LEASE = 5.0
# Every how many pulls a worker asks for every trace kept.
FULL_EVERY = 20

# What a worker with open pages sends through the bridge, its id as sender:
# the others record, and answer with their traces.
pages_open = NamedSignal(
    "asignals.monitor.pages-open",
    doc="""Sent through the bridge by a worker whose monitor has a page open,
    twice a second, with its bridge's id as sender (and ``full=True`` when
    it wants every trace kept: as a page opens, and every ten seconds):
    other workers record their sends for five seconds and send them back
    with traces_changed.""",
)
traces_changed = NamedSignal(
    "asignals.monitor.traces-changed",
    doc="""Sent through the bridge by a worker that records for another's
    monitor, with its bridge's id as sender and ``traces``, a JSON list of
    the traces that changed.""",
)


class SignalMonitor:
    """A mountable ASGI app that shows the signals an app sends, request by
    request, live.

    ``app.mount("/signals", SignalMonitor())``, or
    ``Mount("/signals", app=SignalMonitor())`` in a route list, then open
    ``/signals/`` in a browser.

    It records while a page of it is open (or a :meth:`recording` block
    runs, or always with ``record_always=True``): then each send goes
    through its bookkeeping, summarised once, whatever the number of pages;
    while nobody looks, nothing does. It keeps the last ``capacity``
    requests and nothing more; requests for its own pages are not shown.

    Who may see it: a client that ``allow`` accepts, that asked for it by a
    name in ``hosts``, and whose request did not come through a proxy (a
    ``Forwarded``, ``X-Forwarded-For``, ``X-Real-IP``, ``X-Forwarded-Host`` or
    ``Via`` header), unless ``proxied=True``. The page shows values as text only,
    under a Content-Security-Policy, with values under secret-looking names
    masked.

    :param capacity: How many requests (traces) to keep, at least 1.
    :param allow: Which connections may see the monitor, as a function of the
        Starlette ``HTTPConnection``. The default, :func:`is_loopback`,
        allows clients on this machine only: the monitor shows the arguments
        of every signal, such as form data. Pass one that checks more
        (``allow=lambda conn: conn.user.is_authenticated`` with Starlette's
        ``AuthenticationMiddleware``) to let others in.
    :param hosts: The host names the monitor answers to, checked whatever
        ``allow`` says (``"*.example.com"`` for subdomains, ``"*"`` for any);
        by default ``localhost`` and loopback addresses.
    :param proxied: Whether to serve requests that came through a reverse
        proxy. Off by default: behind a proxy, the client address a server
        sees is the proxy's, or what the proxy's headers say, which a client
        may forge. Turn it on with an ``allow`` that does not depend on the
        client's address.
    :param secrets: Parts of names that look secret: values under such names
        (arguments, mapping keys, fields) are masked. Extend the default with
        ``secrets=(*SECRET_PARTS, "ssn")``.
    :param max_views: How many pages may be open at once, at least 1.
    :param bridge: A :class:`~asignals.bridge.RedisBridge` (not started yet)
        that every worker's monitor is given: each worker's page then shows
        the requests of all workers. Without one, a page shows its worker's.
    :param record_always: Record from the start, whether a page is open or
        not.
    """

    def __init__(
        self,
        *,
        capacity: int = 200,
        allow: Callable[[HTTPConnection], bool] = is_loopback,
        hosts: Collection[str] | None = None,
        proxied: bool = False,
        secrets: Iterable[str] = SECRET_PARTS,
        max_views: int = 20,
        bridge: RedisBridge | None = None,
        record_always: bool = False,
    ) -> None:
        for name, value in (("capacity", capacity), ("max_views", max_views)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidValueError(f"{name} must be an int of at least 1, not {value!r}")
        if not callable(allow):
            raise ArgumentError(
                f"allow must be a function of the connection that returns whether it "
                f"may see the monitor, such as asignals.monitor.is_loopback, not {allow!r}"
            )
        try:
            masked = Secrets(secrets)
        except (TypeError, ValueError) as exc:
            raise ArgumentError(f"secrets: {exc}") from None
        self.capacity = capacity
        self.allow = allow
        self.hosts = host_names(hosts)
        self.proxied = bool(proxied)
        self.secrets = masked.parts
        self.max_views = max_views
        self.record_always = bool(record_always)
        self._prefixes: frozenset[str] = frozenset()
        self._closed = False
        self._lock = threading.Lock()
        self._views = 0
        self._holds = 0
        self._remote_until = 0.0
        self._last_pull = 0.0
        self._pulls = 0
        self._observing: Observing | None = None
        self._waiters: set[_Waiter] = set()
        self._recorder = Recorder(
            capacity, masked, self._wake, self._shows, (pages_open, traces_changed)
        )
        self._recorder.wanted = self._wanted
        # What views are sent: the changes, numbered, encoded once for all.
        self._batches: deque[tuple[int, str]] = deque(maxlen=64)
        self._batch = 0
        self._batched_at = 0.0
        self._feed_lock = threading.Lock()
        self.bridge = bridge
        if bridge is not None:
            self._use_bridge(bridge)
        self._router = Router(
            routes=[
                Route("/", self._page),
                WebSocketRoute("/live", self._live),
                Route("/events", self._events),
                Route("/favicon.svg", _favicon),
            ],
        )
        if self.record_always:
            self._update()

    @property
    def worker(self) -> str:
        """This worker, as the traces name it: its bridge's id, or host and
        process id."""
        return self._recorder.worker

    def traces(self) -> list[dict[str, Any]]:
        """The traces kept, in the order they were first kept, as the page
        gets them (see :mod:`asignals.monitor._recorder` for their fields)."""
        return [json.loads(text) for text in self._recorder.all()]

    @contextmanager
    def recording(self) -> Iterator[SignalMonitor]:
        """Record while the block runs, as if a page were open (other
        workers are not asked for theirs)."""
        self._hold(1)
        try:
            yield self
        finally:
            self._hold(-1)

    @property
    def is_recording(self) -> bool:
        """Whether sends go through the monitor's bookkeeping now."""
        return self._observing is not None

    def clear(self) -> None:
        """Forget the traces kept (open pages keep theirs)."""
        self._recorder.clear()

    def close(self) -> None:
        """Stop recording and end the open pages' live views, which say so."""
        if self._closed:
            return
        self._closed = True
        self._update()
        self._wake()

    def __enter__(self) -> SignalMonitor:
        """Record until the block ends, then close."""
        self._hold(1)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Recording: while someone looks.

    def _hold(self, change: int) -> None:
        """Count a block that records in (1) or out (-1)."""
        with self._lock:
            self._holds += change
        self._update()

    def _wanted(self) -> bool:
        """Whether to go on recording (asked as each send starts); stops the
        recording when a lease from another worker ran out."""
        if self._views or self._holds or self.record_always:
            return not self._closed
        if time.monotonic() < self._remote_until:
            return not self._closed
        self._update()
        return False

    def _update(self) -> None:
        with self._lock:
            wanted = not self._closed and (
                self.record_always
                or self._views > 0
                or self._holds > 0
                or time.monotonic() < self._remote_until
            )
            if wanted and self._observing is None:
                self._observing = observe(self._recorder)
                _recording.add(self)
            elif not wanted and self._observing is not None:
                self._observing.close()
                self._observing = None
                _recording.discard(self)

    def _shows(self, path: str | None) -> bool:
        """Whether a request for ``path`` is not one for the monitor itself."""
        if path is None:
            return True
        return not any(path == p or path.startswith(p + "/") for p in self._prefixes)

    def _wake(self) -> None:
        waiters = self._waiters
        if waiters:
            for waiter in tuple(waiters):
                waiter.wake()

    # Serving.

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            root = scope.get("root_path", "")
            if root and root not in self._prefixes:
                self._prefixes = self._prefixes | {root}
            # This request is for the monitor: not traced, from now on, or
            # from its start, once the monitor knows where it is mounted.
            self._recorder.forget_current()
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
        live = connection.scope["type"] == "websocket" or connection.url.path.endswith("/events")
        if live and not fetched_by_own_page(connection):
            return (
                "The signal monitor's live view answers its own pages only, and this "
                f"request came from another site ({connection.headers['sec-fetch-site']})."
            )
        if not same_origin(connection):
            return (
                "The signal monitor's live view answers its own pages only, and this "
                f"request came from a page at {connection.headers['origin']}."
            )
        header = proxied(connection)
        if header is not None and not self.proxied:
            return (
                f"The signal monitor refuses requests that came through a proxy, and this "
                f"one has a {header!r} header: behind a proxy the client's address cannot "
                "be trusted. Open the monitor on the server itself (http://localhost/...), "
                "or mount SignalMonitor(proxied=True, allow=...) with an allow function "
                "that checks who the user is."
            )
        hostname = connection.url.hostname
        if not host_allowed(self.hosts, hostname):
            names = "localhost or 127.0.0.1" if self.hosts is None else ", ".join(self.hosts)
            return (
                f"The signal monitor answers requests for {names} only, and this one was "
                f"for {hostname!r}. Use one of those, or mount "
                "SignalMonitor(hosts=[...]) with the names it may be reached by."
            )
        if self.allow(connection):
            return None
        if self.allow is not is_loopback:
            return (
                f"The signal monitor's allow function ({callable_name(self.allow)}) "
                "refused this request."
            )
        client = connection.client
        where = client.host if client is not None else "an unknown client"
        return (
            f"The signal monitor answers clients on this machine only, and this request "
            f"came from {where}. To let others in, mount SignalMonitor(allow=...) with a "
            "function of the connection that says who may see it (the monitor shows "
            "every signal's arguments)."
        )

    async def _page(self, request: Request) -> Response:
        nonce = secrets.token_urlsafe(18)
        html = _template().render(
            nonce=nonce,
            script=_static("monitor.js"),
            style=_static("monitor.css"),
            signals=_connected(self._recorder.secrets),
            capacity=self.capacity,
            worker=_worker_label(self.worker),
            bridged=self.bridge is not None,
            closed=self._closed,
        )
        return HTMLResponse(
            html,
            headers={
                "cache-control": "no-store",
                "content-security-policy": (
                    f"default-src 'none'; script-src 'nonce-{nonce}'; "
                    f"style-src 'nonce-{nonce}'; connect-src 'self'; img-src 'self'; "
                    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
                ),
                "x-content-type-options": "nosniff",
                "referrer-policy": "no-referrer",
                "x-frame-options": "DENY",
            },
        )

    # The live views: a websocket, or server-sent events where the server
    # has no websocket library.

    async def _live(self, websocket: WebSocket) -> None:
        await websocket.accept()
        async with anyio.create_task_group() as tasks:

            async def push(text: str) -> None:
                try:
                    await websocket.send_text(text)
                except (WebSocketDisconnect, OSError, RuntimeError):
                    # (RuntimeError: the server saw the socket close first.)
                    # The browser went away: the view ends here.
                    tasks.cancel_scope.cancel()
                    await anyio.lowlevel.checkpoint()

            tasks.start_soon(_until_closed, websocket, tasks.cancel_scope)
            await self._view(push)
            tasks.cancel_scope.cancel()
        with suppress(WebSocketDisconnect, OSError, RuntimeError):
            await websocket.close()

    async def _events(self, request: Request) -> Response:
        return _EventStream(self._view)

    async def _view(self, push: Callable[[str], Awaitable[None]]) -> None:
        """Feed one view: everything kept, then the changes, batched, until
        the monitor closes."""
        if self._closed:
            await push('{"type":"closed"}')
            return
        waiter = _Waiter()
        with self._lock:
            full = self._views >= self.max_views
            if not full:
                self._views += 1
        if full:
            message = (
                f"The signal monitor serves at most {self.max_views} open pages at once, "
                "and that many are open. Close one and reload, or mount "
                "SignalMonitor(max_views=...) with more."
            )
            await push(json.dumps({"type": "refused", "message": message}))
            return
        try:
            self._waiters.add(waiter)
            self._update()
            self._pull(full=True)
            number, text = self._snapshot()
            await push(text)
            recorder = self._recorder
            while not self._closed:
                if not recorder.pending():
                    if self.bridge is None:
                        await waiter.wait()
                    else:
                        with anyio.move_on_after(self._until(self._last_pull, PULL_INTERVAL)):
                            await waiter.wait()
                self._pull()
                if self._closed:
                    break
                if not recorder.pending() and self._batch <= number:
                    continue
                # One clock for every view: a batch at most every
                # PUSH_INTERVAL, whichever view makes it, and every view
                # gets the same ones.
                await anyio.sleep(self._until(self._batched_at, PUSH_INTERVAL))
                self._flush()
                batches = self._since(number)
                if batches is None:
                    number, text = self._snapshot()  # too far behind
                    await push(text)
                    continue
                for number, text in batches:  # noqa: B007 (the last one's is kept)
                    await push(text)
            await push('{"type":"closed"}')
        finally:
            self._waiters.discard(waiter)
            with self._lock:
                self._views -= 1
            self._update()

    @staticmethod
    def _until(last: float, interval: float) -> float:
        """Seconds until ``interval`` after ``last`` (a monotonic time)."""
        return max(0.0, last + interval - time.monotonic())

    def _flush(self) -> None:
        """Make a batch of the changes, if the last one is PUSH_INTERVAL old."""
        with self._feed_lock:
            if time.monotonic() - self._batched_at >= PUSH_INTERVAL * 0.99:
                self._flush_locked()

    def _since(self, number: int) -> list[tuple[int, str]] | None:
        """The batches after ``number``, or None if some were let go."""
        with self._feed_lock:
            batches = self._batches
            if self._batch > number and (not batches or batches[0][0] > number + 1):
                return None
            return [(n, text) for n, text in batches if n > number]

    def _snapshot(self) -> tuple[int, str]:
        with self._feed_lock:
            self._flush_locked()
            number = self._batch
            kept = self._recorder.all(sending=True)
        head = json.dumps(
            {
                "type": "snapshot",
                "worker": self.worker,
                "bridged": self.bridge is not None,
                "capacity": self.capacity,
            }
        )
        return number, head[:-1] + ',"traces":[' + ",".join(kept) + "]}"

    def _flush_locked(self) -> None:
        """Make one batch of the changes since the last one, encoded once
        for every view."""
        changed, left_out, removed = self._recorder.take()
        if changed or left_out or removed:
            self._batched_at = time.monotonic()
            self._batch += 1
            head = json.dumps({"type": "update", "left_out": left_out, "removed": removed})
            text = head[:-1] + ',"traces":[' + ",".join(changed) + "]}"
            self._batches.append((self._batch, text))

    # All workers, through a bridge.

    def _use_bridge(self, bridge: RedisBridge) -> None:
        from ..bridge import RedisBridge

        if not isinstance(bridge, RedisBridge):
            raise ArgumentError(f"bridge must be an asignals.bridge.RedisBridge, not {bridge!r}")
        if pages_open not in bridge.shared:
            bridge.share(pages_open, traces_changed)
        self._recorder.use_bridge(bridge)
        _bridged.add(self)

    def _pull(self, full: bool = False) -> None:
        """Ask the other workers for their traces (at most every
        PULL_INTERVAL, whatever the number of views); for every trace they
        keep with ``full``, and every FULL_EVERY pulls (an answer lost in
        ``pubsub`` mode is made good)."""
        if self.bridge is None or self._closed:
            return
        now = time.monotonic()
        with self._lock:
            if not full and now - self._last_pull < PULL_INTERVAL * 0.99:
                return
            self._last_pull = now
            self._pulls += 1
            full = full or self._pulls % FULL_EVERY == 0
        try:
            pages_open.send(self.worker, full=full)
        except Exception:
            logger.exception("The signal monitor could not ask the other workers for sends")

    def _watched_from(self, worker: str, full: bool = False) -> None:
        """Another worker's page is open: record, and send it what changed
        (or every trace kept)."""
        if self._closed or worker == self.worker:
            return
        self._remote_until = time.monotonic() + LEASE
        self._update()
        if self.bridge is None:
            return
        if full:
            self._recorder.resend()
        changed, _, _ = self._recorder.take(remote=True)
        # A message's payload is JSON in JSON: each trace's text is escaped
        # once more, which may double it.
        limit = max(1, self.bridge.max_message_bytes // 3)
        for chunk in _chunks(changed, limit, self.worker):
            # In a context of its own: not a send made for the one from
            # elsewhere, which would stay in this process.
            try:
                Context().run(traces_changed.send, self.worker, traces="[" + ",".join(chunk) + "]")
            except Exception as exc:
                logger.error(
                    "The signal monitor could not send %d traces to the other workers: %s",
                    len(chunk),
                    exc,
                )

    def _received(self, worker: str, text: str) -> None:
        """Another worker's traces arrived: kept if a page is open here."""
        if self._closed or worker == self.worker or not (self._views or self._holds):
            return
        try:
            found = json.loads(text, parse_constant=_no_constant)
        except ValueError:
            found = None
        if not isinstance(found, list):
            logger.warning("The signal monitor dropped traces from %s: not a JSON list", worker)
            return
        kept = [t for t in found if _is_trace(t, worker)]
        if len(kept) < len(found):
            logger.warning(
                "The signal monitor dropped %d malformed traces from %s",
                len(found) - len(kept),
                worker,
            )
        if kept:
            self._recorder.merge(kept)
            self._wake()


# The monitors recording now.
_recording: weakref.WeakSet[SignalMonitor] = weakref.WeakSet()


def _monitors() -> list[SignalMonitor]:
    """The monitors recording now."""
    return list(_recording)


# The open monitors with a bridge, which the bridge's receivers tell.
_bridged: weakref.WeakSet[SignalMonitor] = weakref.WeakSet()


@pages_open.connect
def _someone_watches(sender: Any, *, full: Any = False, **kwargs: Any) -> None:
    if isinstance(sender, str):
        for monitor in list(_bridged):
            monitor._watched_from(sender, full is True)


@traces_changed.connect
def _traces_arrived(sender: Any, *, traces: Any = None, **kwargs: Any) -> None:
    if isinstance(sender, str) and isinstance(traces, str):
        for monitor in list(_bridged):
            monitor._received(sender, traces)


def _chunks(items: list[str], limit: int, worker: str) -> Iterator[list[str]]:
    """``items`` in lists of at most ``limit`` characters in all, as a JSON
    list; an item longer than that is left out, and logged."""
    chunk: list[str] = []
    size = 2
    for item in items:
        if len(item) + 2 > limit:
            if worker in _too_large:
                continue
            _too_large.add(worker)
            logger.warning(
                "The signal monitor left out a trace of %d characters from what it sends "
                "other workers (%s): a bridge message holds %d at most. Said once; "
                "the next ones too large are left out too",
                len(item),
                worker,
                limit,
            )
            continue
        if chunk and size + len(item) + 1 > limit:
            yield chunk
            chunk, size = [], 2
        chunk.append(item)
        size += len(item) + 1
    if chunk:
        yield chunk


# The workers that said they left out a trace too large for the bridge.
_too_large: set[str] = set()


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON has")


_KINDS = frozenset(("http", "websocket", "lifespan", "context", "background", "bridged", "send"))
_TEXT = (str, type(None))
_NUMBER = (int, float)
_TIME = (int, float, type(None))
_TRACE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "worker": str,
    "kind": str,
    "method": _TEXT,
    "path": _TEXT,
    "status": (int, type(None)),
    "error": _TEXT,
    "start": _NUMBER,
    "end": _TIME,
    "failed": bool,
    "more": int,
    "sends": list,
}
_SEND_FIELDS: dict[str, type | tuple[type, ...]] = {
    "n": int,
    "signal": str,
    "sender": str,
    "mode": str,
    "start": _NUMBER,
    "end": _TIME,
    "args": list,
    "status": str,
    "error": _TEXT,
    "parent": (int, type(None)),
    "published": (int, type(None)),
    "receivers": list,
    "more_receivers": int,
}
_RECEIVER_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "kind": str,
    "status": str,
    "start": _TIME,
    "end": _TIME,
    "error": _TEXT,
}


def _has(data: Any, fields: dict[str, type | tuple[type, ...]]) -> bool:
    return isinstance(data, dict) and all(
        isinstance(data.get(name, ...), kind) for name, kind in fields.items()
    )


def _is_pair(pair: Any) -> bool:
    return isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)


def _is_trace(data: Any, worker: str) -> bool:
    """Whether ``data`` is a trace that ``worker`` recorded, whole: what the
    page's script reads is there, of the type it expects."""
    if not _has(data, _TRACE_FIELDS) or data["kind"] not in _KINDS:
        return False
    link = data.get("from", ...)
    if data["kind"] == "bridged":
        if not (
            isinstance(link, list)
            and len(link) == 2
            and isinstance(link[0], str)
            and isinstance(link[1], int)
        ):
            return False
    elif link is not None:
        return False
    return (
        data["worker"] == worker
        and data["id"].startswith(worker + "/")
        and all(
            _has(send, _SEND_FIELDS)
            and all(_is_pair(pair) for pair in send["args"])
            and all(_has(run, _RECEIVER_FIELDS) for run in send["receivers"])
            for send in data["sends"]
        )
    )


def _worker_label(worker: str) -> str:
    """A worker's id without the random part a bridge adds."""
    parts = worker.split(":")
    return ":".join(parts[:2]) if len(parts) > 2 else worker


class _Waiter:
    """Wakes one live view's task when traces change, from any thread."""

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.woken = False
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
        if self.woken:
            return  # once per wait, however many changes
        self.woken = True
        if threading.get_ident() == self.thread:
            self.event.set()
        else:
            # The loop may be gone; the view went with it.
            with suppress(RuntimeError):
                self.call_soon(self._set)

    async def wait(self) -> None:
        await self.event.wait()
        self.event = anyio.Event()
        self.woken = False


async def _until_closed(websocket: WebSocket, scope: anyio.CancelScope) -> None:
    """Read the socket until the browser closes it, then end the view."""
    with suppress(WebSocketDisconnect, OSError):
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass
    scope.cancel()


class _EventStream(Response):
    """A live view as server-sent events, until the browser goes away."""

    def __init__(self, view: Callable[[Callable[[str], Awaitable[None]]], Awaitable[None]]) -> None:
        # No body, and no length: the stream goes on.
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-store"),
            (b"x-accel-buffering", b"no"),
            (b"x-content-type-options", b"nosniff"),
        ]
        self.view = view

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})

        async def until_gone(scope: anyio.CancelScope) -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            scope.cancel()

        gone = False
        async with anyio.create_task_group() as tasks:

            async def push(text: str) -> None:
                nonlocal gone
                body = b"data: " + text.encode() + b"\n\n"
                try:
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                except OSError:
                    # The browser went away (an ASGI 2.4 server says so).
                    gone = True
                    tasks.cancel_scope.cancel()
                    await anyio.lowlevel.checkpoint()

            tasks.start_soon(until_gone, tasks.cancel_scope)
            await self.view(push)
            # The view ended (the monitor closed): the browser is told not
            # to reconnect, and the stream ends.
            tasks.cancel_scope.cancel()
        if not gone:
            with suppress(OSError):
                await send({"type": "http.response.body", "body": b"", "more_body": False})


# The page.


async def _favicon(request: Request) -> Response:
    return Response(
        str(_static("favicon.svg")),
        media_type="image/svg+xml",
        headers={"cache-control": "max-age=86400", "x-content-type-options": "nosniff"},
    )


class _Connected:
    """A signal and its receivers, for the page."""

    def __init__(self, name: str, doc: str, receivers: list[tuple[str, str, str]]) -> None:
        self.name = name
        self.doc = doc
        self.receivers = receivers


def _connected(masked: Secrets) -> list[_Connected]:
    """The named signals, and the anonymous ones with receivers, with their
    receivers: name, kind, and the senders they are connected for."""
    shown = []
    for signal in all_signals():
        if signal is pages_open or signal is traces_changed:
            continue
        receivers = [
            (plain(callable_name(receiver)), plain(kind), _senders(senders, masked))
            for receiver, kind, senders in connections(signal)
        ]
        if not receivers and not hasattr(signal, "name"):
            continue
        doc = signal.__doc__ if signal.__doc__ != type(signal).__doc__ else None
        shown.append(_Connected(signal_name(signal), first_sentence(doc), receivers))
    return sorted(shown, key=lambda c: c.name)


def first_sentence(doc: str | None) -> str:
    """The first sentence of a docstring, on one line, without reST's literal
    marks."""
    if not isinstance(doc, str):
        return ""
    paragraph = " ".join(plain(doc).strip().split("\n\n")[0].split())
    for end in (". ", ".) "):
        index = paragraph.find(end)
        if index != -1:
            paragraph = paragraph[: index + 1]
            break
    return paragraph.replace("``", "")


def _senders(senders: Collection[Any], masked: Secrets) -> str:
    if ANY in senders:
        return "any sender"
    return ", ".join(sorted(summary(s, 60, masked) for s in senders))


_environment: jinja2.Environment | None = None


def _template() -> jinja2.Template:
    # The monitor renders with its own environment, not asignals.templating:
    # its pages send no template signals.
    global _environment
    if _environment is None:
        _environment = jinja2.Environment(
            loader=jinja2.PackageLoader("asignals", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
    return _environment.get_template("monitor.html")


_statics: dict[str, Markup] = {}


def _static(name: str) -> Markup:
    """The monitor's own script or style sheet, as it is."""
    text = _statics.get(name)
    if text is None:
        source = resources.files(__package__).joinpath("static", name).read_text("utf-8")
        text = _statics[name] = Markup(source)
    return text

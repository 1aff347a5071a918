"""What the monitor keeps: each request (or other connection) as a trace of
the sends made for it and their receivers in time, as JSON-ready dicts of
plain strings and numbers, summarised once, as the sends are made.

A trace is a dict::

    {"id": "<worker>/<number>", "worker": "<worker>", "kind": "http" |
     "websocket" | "lifespan" | "context" (an app context pushed by hand) |
     "background" | "bridged" (a send from another process) | "send" (made
     outside any app context), "method": str | None,
     "path": str | None, "status": int | None, "error": str | None,
     "start": <epoch seconds>, "end": <epoch seconds> | None, "failed": bool,
     "from": [<worker>, <message number>] | None, "more": <sends not kept>,
     "sends": [send, ...]}

and each send::

    {"n": <number in its trace>, "signal": str, "sender": str, "mode": str,
     "start": float, "end": float | None, "args": [[name, summary], ...],
     "status": "running" | "done" | "failed" | "cancelled",
     "error": str | None, "parent": <n of the background send that made it> | None,
     "published": <message number> | None,
     "receivers": [{"name": str, "kind": str, "status": str,
                    "start": float | None, "end": float | None,
                    "error": str | None}, ...],
     "more_receivers": <receivers not kept>}

``from`` links a trace of sends from another process to the send that
published them there (its worker and its ``published`` number).
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, cast

from .. import _tracing
from .._background import _BackgroundContext
from .._context import AppContext, RequestContext, _app_ctx
from .._lifecycle import (
    appcontext_popped,
    appcontext_tearing_down,
    got_request_exception,
    got_websocket_exception,
    request_finished,
)
from .._signal import Signal
from .._summary import Secrets, summary
from ..observers import ObservedSend, Observer, ReceiverCall, _is_cancellation

if TYPE_CHECKING:
    from ..bridge import RedisBridge

#: This process, as the monitor names it without a bridge.
WORKER = f"{socket.gethostname()}:{os.getpid()}"

# How many sends of one trace are kept (the rest are counted), and how long
# each argument's summary may be (four times this, at most). A trace larger
# than a bridge message can hold is not sent to other workers (logged).
SENDS_KEPT = 100
ARGUMENT_CHARS = 100
SENDER_CHARS = 60
ERROR_CHARS = 300
PATH_CHARS = 500
# How many arguments and receivers of a send are kept (the rest are counted).
ARGUMENTS_KEPT = 20
RECEIVERS_KEPT = 50
# The most traces not sent yet that one batch takes (see Recorder.take).
NEW_TAKEN = 50

_NOTHING: Any = object()


def plain(value: object) -> str:
    """``value`` as a plain ``str``: not a subclass (such as markup, whose
    ``__html__`` a template would trust), whatever its type."""
    if type(value) is str:
        return value
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception:
        return f"<{type(value).__qualname__} object>"
    return str.__str__(text) if isinstance(text, str) else f"<{type(value).__qualname__}>"


def signal_name(signal: Signal) -> str:
    """How the monitor names a signal: its name, if it has one."""
    name = getattr(signal, "name", None)
    return plain(name) if isinstance(name, str) else f"<Signal at {id(signal):#x}>"


def short_sender(sender: Any, ctx: AppContext | None, secrets: Secrets) -> str:
    """A sender in a few characters: a plain value as itself, the app by its
    title (FastAPI's) or its class, anything else by its class."""
    if sender is None or type(sender) in (str, int, float, bool):
        return summary(sender, SENDER_CHARS, secrets)
    app = ctx.app if ctx is not None else None
    if sender is app:
        title = getattr(sender, "title", None)
        if isinstance(title, str) and title:
            return plain(title[:SENDER_CHARS])
    return plain(type(sender).__qualname__)


def _arguments(kwargs: dict[str, Any], secrets: Secrets) -> list[list[str]]:
    """The summaries of a send's first ARGUMENTS_KEPT arguments, by name."""
    shown = [
        [plain(name), "***" if name in secrets else summary(value, ARGUMENT_CHARS, secrets)]
        for name, value in itertools.islice(kwargs.items(), ARGUMENTS_KEPT)
    ]
    if len(kwargs) > ARGUMENTS_KEPT:
        shown.append(["…", f"{len(kwargs) - ARGUMENTS_KEPT} more arguments"])
    return shown


def error_text(error: BaseException, secrets: Secrets) -> str:
    """An exception as ``Type: message``, bounded, secrets masked."""
    kind = plain(type(error).__qualname__)
    try:
        message = str(error)
    except Exception:
        message = ""
    if not isinstance(message, str) or not message:
        return kind
    # Cut, then masked where a secret-looking name is followed by a value
    # (as in a repr() of arguments), then summarised (URL passwords).
    message = secrets.in_text(str.__str__(message[: 2 * ERROR_CHARS]))
    return f"{kind}: {summary(message, ERROR_CHARS, secrets)[1:-1]}"


class Trace:
    """A trace and what the monitor knows about it beyond its JSON."""

    __slots__ = ("data", "kept", "local", "numbers", "sent", "text")

    def __init__(self, data: dict[str, Any], local: bool) -> None:
        self.data = data
        self.local = local
        #: Whether it is still among those kept (one evicted is updated by
        #: its last sends, and never shown again).
        self.kept = True
        self.numbers = 0
        #: Whether the views (index 0) and other workers (1) got it already
        #: (None: left out, under load).
        self.sent: list[bool | None] = [False, False]
        #: Its JSON, once encoded, until it changes.
        self.text: str | None = None

    def json(self) -> str:
        """Its JSON (under the recorder's lock), encoded once per change."""
        text = self.text
        if text is None:
            text = self.text = _json(self.data)
        return text


class Recorder(Observer):
    """Watches every send while the monitor records, and keeps the traces:
    the last ``capacity`` of them. Called from any thread; ``changed`` is
    called, outside the lock, after each change."""

    def __init__(
        self,
        capacity: int,
        secrets: Secrets,
        changed: Callable[[], None],
        shows: Callable[[str | None], bool],
        ignored: tuple[Signal, ...],
    ) -> None:
        self.capacity = capacity
        self.secrets = secrets
        self._changed = changed
        self._shows = shows
        self._ignored = ignored
        self.worker = WORKER
        self.lock = threading.Lock()
        self.traces: OrderedDict[str, Trace] = OrderedDict()
        #: Traces changed since the views last got them, and since other
        #: workers last got them (this worker's own), by id.
        self.dirty: dict[str, Trace] = {}
        self.dirty_remote: dict[str, Trace] = {}
        #: Traces the views got that are not to be shown after all.
        self.removed: list[str] = []
        self._numbers = 0
        self._key = f"_asignals_monitor_{id(self):x}"
        # The trace of the context this task tore down last, until its
        # appcontext_popped (None: one not shown).
        self._torn: ContextVar[Any] = ContextVar(
            f"asignals.monitor.torn.{id(self):x}", default=_NOTHING
        )
        #: Checked as each send starts: False stops the recording.
        self.wanted: Callable[[], bool] = lambda: True

    def use_bridge(self, bridge: RedisBridge) -> None:
        self.worker = bridge.id

    # The traces.

    def _new_trace(self, kind: str, start: float, **fields: Any) -> Trace:
        self._numbers += 1
        data: dict[str, Any] = {
            "id": f"{self.worker}/{self._numbers}",
            "worker": self.worker,
            "kind": kind,
            "method": None,
            "path": None,
            "status": None,
            "error": None,
            "start": start,
            "end": None,
            "failed": False,
            "from": None,
            "more": 0,
            "sends": [],
        }
        data.update(fields)
        trace = Trace(data, local=True)
        self._keep(trace)
        return trace

    def _keep(self, trace: Trace) -> None:
        """Keep ``trace``, letting go of the oldest beyond capacity (under
        the lock)."""
        traces = self.traces
        old = traces.pop(trace.data["id"], None)
        if old is not None:
            old.kept = False
        traces[trace.data["id"]] = trace
        while len(traces) > self.capacity:
            _, oldest = traces.popitem(last=False)
            oldest.kept = False
            self.dirty.pop(oldest.data["id"], None)
            self.dirty_remote.pop(oldest.data["id"], None)

    def _touch(self, trace: Trace) -> None:
        trace.text = None
        if trace.kept:
            trace_id = trace.data["id"]
            self.dirty[trace_id] = trace
            if trace.local:
                self.dirty_remote[trace_id] = trace

    def _trace_of(self, signal: Signal, now: float) -> tuple[Trace, int | None] | None:
        """The trace a send starting now belongs to, and the number of the
        background send (in it) that made it; None for a send not shown.
        (Under the lock.)"""
        ctx = _app_ctx.get(None)
        if isinstance(ctx, _BackgroundContext) and ctx.made_by is not None:
            # The receivers of a background send, and what they send: in the
            # trace of the send that made it; not shown if it is not.
            made_by = ctx.made_by
            if made_by.signal in self._ignored:
                return None  # the monitor's own, from another worker
            parent = made_by.data.get(self)
            if parent is None or not parent[0].kept:
                return None  # that send is not shown (it began before the recording)
            return parent[0], parent[1]["n"]
        message = _tracing.handing.get()
        if message is not None:
            # A send from another process: a trace of its own, linked to
            # the send that published it there.
            link = [plain(message[0]), message[1]]
            return self._new_trace("bridged", now, **{"from": link}), None
        if ctx is None:
            if signal is appcontext_popped:
                # Sent once the context is gone: it ends the context that
                # was torn down last in this task.
                torn = self._torn.get()
                if torn is not _NOTHING:
                    self._torn.set(_NOTHING)
                    return cast("tuple[Trace, int | None] | None", torn)
            return self._new_trace("send", now), None
        key = self._key
        found: tuple[Trace, int | None] | None
        if key in ctx.__dict__:
            known: tuple[Trace, int | None] | None = ctx.__dict__[key]
            if known is None or known[0].kept:
                return known
            # Let go of (a context that lasts: the lifespan, a websocket):
            # its sends from now on make a trace of their own.
        scope = ctx.scope if isinstance(ctx, RequestContext) else None
        if scope is None:
            kind = "background" if isinstance(ctx, _BackgroundContext) else "context"
            found = self._new_trace(kind, now), None
        else:
            kind = scope["type"]
            path = plain(scope.get("path", ""))[:PATH_CHARS]
            if kind in ("http", "websocket") and not self._shows(path):
                found = None  # a request for the monitor itself
            else:
                method = scope.get("method", "WS" if kind == "websocket" else None)
                found = (
                    self._new_trace(
                        kind,
                        now,
                        method=None if method is None else plain(method),
                        path=None if kind == "lifespan" else path,
                    ),
                    None,
                )
        ctx.__dict__[key] = found
        return found

    def forget_current(self) -> None:
        """The current request is one for the monitor's own pages: drop its
        trace, and do not trace the rest of it."""
        ctx = _app_ctx.get(None)
        if ctx is None:
            return
        with self.lock:
            found = ctx.__dict__.get(self._key)
            ctx.__dict__[self._key] = None
            if found is not None:
                trace = found[0]
                trace.kept = False
                trace_id = trace.data["id"]
                self.traces.pop(trace_id, None)
                self.dirty.pop(trace_id, None)
                self.dirty_remote.pop(trace_id, None)
                if trace.sent[0]:
                    self.removed.append(trace_id)  # the views have it: they drop it

    def _tearing_down(self) -> None:
        """The current context is being torn down: ``appcontext_popped``,
        sent once it is gone, belongs to it."""
        ctx = _app_ctx.get(None)
        if ctx is not None:
            self._torn.set(ctx.__dict__.get(self._key, _NOTHING))

    # The observer.

    def send_started(self, send: ObservedSend) -> None:
        signal = send.signal
        if signal in self._ignored:
            return
        if not self.wanted():
            return
        ctx = _app_ctx.get(None)
        now = time.time()
        secrets = self.secrets
        # Summarised here, once, outside the lock: a summary is bounded,
        # but an object's own repr() runs in full.
        record: dict[str, Any] = {
            "n": 0,
            "signal": signal_name(signal),
            "sender": short_sender(send.sender, ctx, secrets),
            "mode": send.mode,
            "start": now,
            "end": None,
            "args": _arguments(send.kwargs, secrets),
            "status": "running",
            "error": None,
            "parent": None,
            "published": None,
            "receivers": [
                {
                    "name": plain(call.name),
                    "kind": call.kind,
                    "status": "not called",
                    "start": None,
                    "end": None,
                    "error": None,
                }
                for call in send.calls[:RECEIVERS_KEPT]
            ],
            "more_receivers": max(0, len(send.calls) - RECEIVERS_KEPT),
        }
        with self.lock:
            found = self._trace_of(signal, now)
            if signal is appcontext_tearing_down:
                # After _trace_of: the context's trace, a new one if its
                # last was let go.
                self._tearing_down()
            if found is None:
                return
            trace, parent = found
            sends = trace.data["sends"]
            record["parent"] = parent
            if len(sends) >= SENDS_KEPT:
                # Not kept (its record goes with it), but what it says of
                # the request (a status, an end, a failure) still counts.
                trace.data["more"] += 1
            else:
                trace.numbers += 1
                record["n"] = trace.numbers
                sends.append(record)
            send.data[self] = (trace, record)
            self._touch(trace)
        self._changed()

    def receiver_started(self, send: ObservedSend, call: ReceiverCall) -> None:
        found = send.data.get(self)
        if found is None:
            return
        trace, record = found
        if call.index >= RECEIVERS_KEPT:
            return
        with self.lock:
            run = record["receivers"][call.index]
            run["status"] = "running"
            run["start"] = time.time()
            self._touch(trace)
        self._changed()

    def receiver_finished(self, send: ObservedSend, call: ReceiverCall) -> None:
        found = send.data.get(self)
        if found is None:
            return
        trace, record = found
        if call.index >= RECEIVERS_KEPT:
            if call.status == "failed":
                with self.lock:
                    trace.data["failed"] = True
                    self._touch(trace)
            return
        now = time.time()
        error = call.error
        text = None
        if error is not None:
            text = (
                plain(type(error).__qualname__)
                if call.status == "cancelled"
                else error_text(error, self.secrets)
            )
        with self.lock:
            run = record["receivers"][call.index]
            run["status"] = call.status
            run["end"] = now
            if run["start"] is None:
                run["start"] = now - (call.duration or 0.0)
            run["error"] = text
            if call.status == "failed":
                trace.data["failed"] = True
            self._touch(trace)
        self._changed()

    def send_finished(self, send: ObservedSend) -> None:
        found = send.data.get(self)
        if found is None:
            return
        trace, record = found
        now = time.time()
        signal = send.signal
        error = send.error
        # Cancelled (the client went away, a timeout around the send) is not
        # failed.
        ended = "done" if error is None else "cancelled" if _is_cancellation(error) else "failed"
        text = None if error is None else error_text(error, self.secrets)
        status: int | None = None
        exception: str | None = None
        if signal is request_finished:
            response = send.kwargs.get("response")
            code = getattr(response, "status_code", None)
            if type(code) is int:
                status = code
        elif signal is got_request_exception or signal is got_websocket_exception:
            raised = send.kwargs.get("exception")
            if isinstance(raised, BaseException):
                exception = error_text(raised, self.secrets)
        published = send.data.get(_tracing.PUBLISHED)
        with self.lock:
            record["end"] = now
            record["error"] = text
            record["status"] = ended
            if published is not None:
                record["published"] = published[1]
            data = trace.data
            if ended == "failed":
                data["failed"] = True
            if status is not None:
                data["status"] = status
                if status >= 500:
                    data["failed"] = True
            if exception is not None:
                data["error"] = exception
                data["failed"] = True
                if data["status"] is None and signal is got_request_exception:
                    data["status"] = 500
            if data["kind"] in ("http", "websocket", "lifespan"):
                # Popped, once gone: the request is over (not a background
                # send's context, also in its trace, nor one pushed within).
                if (
                    signal is appcontext_popped
                    and record["parent"] is None
                    and _app_ctx.get(None) is None
                ):
                    data["end"] = now
            elif data["end"] is None or now > data["end"]:
                data["end"] = now
            self._touch(trace)
        self._changed()

    # Traces from other workers.

    def merge(self, traces: list[dict[str, Any]]) -> None:
        """Keep the traces another worker sent (the latest state of each, in
        the place of the one it replaces: a resent trace does not push out
        newer ones)."""
        with self.lock:
            for data in traces:
                old = self.traces.get(data["id"])
                if old is None:
                    kept = self.traces
                    if len(kept) >= self.capacity and (
                        data["start"] < next(iter(kept.values())).data["start"]
                    ):
                        continue  # older than all kept: it would push out a newer one
                    trace = Trace(data, local=False)
                    self._keep(trace)
                    self._touch(trace)
                elif not old.local and old.data != data:
                    old.data = data
                    self._touch(old)

    def pending(self) -> bool:
        """Whether there are changes the views have not got (a hint: read
        without the lock)."""
        return bool(self.dirty or self.removed)

    def resend(self) -> None:
        """Send every trace of this worker's own to other workers again."""
        with self.lock:
            for trace in self.traces.values():
                if trace.local:
                    self.dirty_remote[trace.data["id"]] = trace
                    if trace.sent[1] is None:
                        trace.sent[1] = False  # in full, this time

    def take(self, remote: bool = False) -> tuple[list[str], int, list[str]]:
        """The traces changed since the last take (for the views, or with
        ``remote`` this worker's own, for other workers), each as JSON; and
        how many new ones were left out; and the ids of those the views are
        to drop (requests found to be the monitor's own). Traces already sent are always
        taken; of those not sent yet, the last NEW_TAKEN only: under load, a
        page gets a sample of the requests, and the latest state of each it
        has."""
        index = 1 if remote else 0
        with self.lock:
            dirty = self.dirty_remote if remote else self.dirty
            changed = [trace for trace in dirty.values() if trace.kept]
            dirty.clear()
            # Left out once, left out for good (but in a snapshot): a page
            # never gets half of a trace's life, and each is counted once.
            changed = [trace for trace in changed if trace.sent[index] is not None]
            new = [trace for trace in changed if not trace.sent[index]]
            left_out = max(0, len(new) - NEW_TAKEN)
            if left_out:
                for trace in new[:left_out]:
                    trace.sent[index] = None
                changed = [trace for trace in changed if trace.sent[index] is not None]
            for trace in changed:
                trace.sent[index] = True
            removed: list[str] = []
            if not remote:
                removed, self.removed = self.removed, []
            return [trace.json() for trace in changed], left_out, removed

    def all(self, sending: bool = False) -> list[str]:
        """Every trace kept, in the order they were kept, each as JSON;
        ``sending`` to the views (in a snapshot)."""
        with self.lock:
            if sending:
                for trace in self.traces.values():
                    trace.sent[0] = True
            return [trace.json() for trace in self.traces.values()]

    def clear(self) -> None:
        with self.lock:
            for trace in self.traces.values():
                trace.kept = False
            self.traces.clear()
            self.dirty.clear()
            self.dirty_remote.clear()


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), allow_nan=False)

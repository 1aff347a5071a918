"""Fault injection over raw ASGI: at every step of a request or websocket
through SignalMiddleware, an exception, a cancellation or a client that
leaves, in every install form.

A step is a place in the endpoint (before the body is read, while it is read,
after the response started, mid-stream, in a background task) or a receiver
(sync or async) of a lifecycle signal. A client leaves the ASGI 2.3 way
(``disconnect``: ``http.disconnect`` is queued, later sends are dropped) or
the ASGI 2.4 way (``gone``: later sends raise ``OSError``).

Every cell is checked the same way: the signals sent, in order, the teardown
ones exactly once and last; ``exc`` (the request's error: the one
``got_request_exception`` reported, else what ended the request, else
None); what leaves the app; the messages the client got, with no response
started twice; the log; and that nothing of the request is left: contexts,
asignals' context variables in the calling task, running tasks.
``expected_*`` say what each cell must give, and why.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, aclosing, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import anyio.lowlevel
import pytest
from asgi_apps import (
    APP_TEARDOWN,
    FINISHED,
    GOT,
    POPPED,
    PUSHED,
    REQUEST_TEARDOWN,
    STARTED,
    WS_FINISHED,
    WS_GOT,
    WS_STARTED,
    WS_TEARDOWN,
    is_cancellation,
)
from helpers import Boom
from raw_asgi import HTTP_REQUEST, WS_CONNECT, Canceller, Client, http_scope, websocket_scope
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

import asignals
from asignals import SignalMiddleware, current_app, g, install

pytestmark = pytest.mark.anyio

HTTP_SIGNALS = [PUSHED, STARTED, FINISHED, GOT, REQUEST_TEARDOWN, APP_TEARDOWN, POPPED]
WS_SIGNALS = [WS_STARTED, WS_FINISHED, WS_GOT, WS_TEARDOWN]
TEARDOWN = [REQUEST_TEARDOWN, APP_TEARDOWN, POPPED]
WS_TEARDOWN_SIGNALS = [WS_TEARDOWN, APP_TEARDOWN, POPPED]

NORMAL = [PUSHED, STARTED, FINISHED, *TEARDOWN]
NO_RESPONSE = [PUSHED, STARTED, *TEARDOWN]
NO_REQUEST = [PUSHED, APP_TEARDOWN, POPPED]
FAILED_AFTER_START = [PUSHED, STARTED, FINISHED, GOT, *TEARDOWN]

FORMS = ["install", "wrap", "add_middleware", "raw"]
ENDPOINT_STEPS = ["before_body", "reading_body", "after_start", "mid_stream", "background"]
FAULTS = ["exception", "cancel", "disconnect", "gone"]
KINDS = ["sync", "async"]
WS_STEPS = ["before_accept", "after_accept"]
# The steps where the endpoint raises: in got_request_exception, in
# request_finished for the error response, and none (the endpoint's own).
ERROR_PAGE_FINISHED = "error_page_finished"
FAILING = [GOT, ERROR_PAGE_FINISHED, "failing"]

ERROR_PAGE = ["start 500", "body Internal Server Error"]

# What a cell expects of exc, and of what leaves the app: None, one of these,
# or an exception type.
INJECTED = "the injected exception"
ENDPOINT = "the endpoint's exception"
ESCAPED = "what left the app"
GROUP = (ENDPOINT, INJECTED)  # an ExceptionGroup of these
CANCELLED = "the cancellation"

Expected = object


def asignals_vars() -> dict[contextvars.ContextVar[Any], Any]:
    """The context variables of asignals set in the current context."""
    return {
        var: value
        for var, value in contextvars.copy_context().items()
        if var.name.startswith("asignals")
    }


# The server's side: a client that can leave.


class Leaving(Client):
    """A client that leaves when told: the disconnect message is queued (and
    every later ``receive`` gets one); then each send raises ``OSError``
    (ASGI 2.4) or is dropped (2.3), as servers do. ``attempted`` is every
    message the app tried to send, in order."""

    def __init__(self, *incoming: Message, spec_version: str, disconnect: Message) -> None:
        super().__init__(*incoming)
        self.spec_version = spec_version
        self.disconnect = disconnect
        self.gone = False
        self.attempted: list[Message] = []

    def leave(self) -> None:
        self.gone = True
        self.push(dict(self.disconnect))

    async def receive(self) -> Message:
        if self.gone and not self.incoming:
            await anyio.lowlevel.checkpoint()
            message = dict(self.disconnect)
            self.received.append(message)
            return message
        return await super().receive()

    async def send(self, message: Message) -> None:
        self.attempted.append(message)
        if not self.gone:
            await super().send(message)
            return
        await anyio.lowlevel.checkpoint()
        if self.spec_version == "2.4":
            raise OSError("the client went away")

    @property
    def summary(self) -> list[str]:
        """What the client got, readably: ``start 200``, ``body hello``;
        ``...`` marks a body with more to come."""
        return [summarize(message) for message in self.sent]


def summarize(message: Message) -> str:
    kind = message["type"]
    if kind == "http.response.start":
        return f"start {message['status']}"
    if kind == "http.response.body":
        more = " ..." if message.get("more_body") else ""
        return f"body {message.get('body', b'').decode()}{more}"
    return str(kind)


def assert_one_response(attempted: list[Message]) -> None:
    """No response started twice, nothing sent after the end of one."""
    kinds = [message["type"] for message in attempted]
    assert kinds.count("http.response.start") <= 1, kinds
    if kinds:
        assert kinds[0] == "http.response.start", kinds
    ends = [
        i
        for i, message in enumerate(attempted)
        if message["type"] == "http.response.body" and not message.get("more_body")
    ]
    assert not ends or ends[0] == len(attempted) - 1, kinds


class Injector:
    """Makes the fault happen, the first time a step reaches it, and notes
    the ``current_app`` seen there."""

    def __init__(self, fault: str, client: Leaving, canceller: Canceller) -> None:
        self.fault = fault
        self.client = client
        self.canceller = canceller
        self.error = Boom("injected")
        self.fired = False
        self.seen_app: Any = None
        # Whether the code that awaited a cancellation went on after it
        # (it was shielded).
        self.went_on = False

    def _note(self) -> None:
        try:
            self.seen_app = current_app._get_current_object()
        except RuntimeError:
            self.seen_app = None

    def fire(self) -> None:
        """From sync code, which cannot wait: raise, cancel the scope the
        app runs in (the cancellation comes at the next checkpoint), or
        leave."""
        if self.fired:
            return
        self.fired = True
        self._note()
        if self.fault == "exception":
            raise self.error
        if self.fault == "cancel":
            self.canceller.scope.cancel()
        else:
            self.client.leave()

    async def fire_async(self) -> None:
        """From async code; a cancellation comes from another task, at this
        step (if this is shielded, it comes later, and this returns)."""
        if self.fault != "cancel" or self.fired:
            await anyio.lowlevel.checkpoint()
            self.fire()
            return
        self.fired = True
        self._note()
        self.canceller.trigger.set()
        with anyio.fail_after(10):
            await self.canceller.cancelled.wait()
        await anyio.lowlevel.checkpoint()
        self.went_on = True


class Recorder:
    """Every lifecycle signal sent, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, dict[str, Any]]] = []

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.calls]

    def kwargs(self, name: str) -> dict[str, Any]:
        (kwargs,) = [kwargs for called, _, kwargs in self.calls if called == name]
        return kwargs


@contextmanager
def recording() -> Iterator[Recorder]:
    recorder = Recorder()
    with ExitStack() as stack:
        for name in HTTP_SIGNALS + WS_SIGNALS:

            def receiver(sender: Any, _name: str = name, **kwargs: Any) -> None:
                recorder.calls.append((_name, sender, kwargs))

            stack.enter_context(getattr(asignals, name).connected_to(receiver))
        yield recorder


# The apps under test.


class Chunks:
    """A streaming response's body: two chunks, with the fault before the
    first (``after_start``) or between them (``mid_stream``). Not an async
    generator, which a cancelled stream would leave to the garbage collector
    to close."""

    def __init__(self, step: str, injector: Injector) -> None:
        self.step = step
        self.injector = injector
        self.chunks = [b"first", b"second"]

    def __aiter__(self) -> Chunks:
        return self

    async def __anext__(self) -> bytes:
        if not self.chunks:
            raise StopAsyncIteration
        if (self.step, len(self.chunks)) in (("after_start", 2), ("mid_stream", 1)):
            await self.injector.fire_async()
        return self.chunks.pop(0)


def starlette_endpoint(step: str, injector: Injector, endpoint_error: Boom) -> Any:
    """The endpoint for ``step``; for a step in a receiver, a plain one
    (that fails, to reach ``got_request_exception``)."""

    async def endpoint(request: Request) -> Response:
        if step in FAILING:
            raise endpoint_error
        if step == "before_body":
            await injector.fire_async()
            await request.body()
        elif step == "reading_body":
            async with aclosing(request.stream()) as stream:
                async for chunk in stream:
                    if chunk:
                        await injector.fire_async()
        elif step in ("after_start", "mid_stream"):
            return StreamingResponse(Chunks(step, injector))
        elif step == "background":
            return PlainTextResponse("hello", background=BackgroundTask(injector.fire_async))
        return PlainTextResponse("hello")

    return endpoint


async def read_body(receive: Receive) -> bool:
    """Read a request's body; False if the client left first."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return False
        if not message.get("more_body", False):
            return True


def raw_app(step: str, injector: Injector, endpoint_error: Boom) -> ASGIApp:
    """A plain ASGI app with the same steps; it returns quietly if the
    client leaves while it reads the body, and its background work is what
    it does after the response."""

    async def raw(scope: Scope, receive: Receive, send: Send) -> None:
        if step in FAILING:
            raise endpoint_error
        if step == "before_body":
            await injector.fire_async()
        elif step == "reading_body":
            await receive()
            await injector.fire_async()
        if not await read_body(receive):
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if step == "after_start":
            await injector.fire_async()
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        if step == "mid_stream":
            await injector.fire_async()
        await send({"type": "http.response.body", "body": b"second"})
        if step == "background":
            await injector.fire_async()

    return raw


def websocket_handler(step: str, injector: Injector) -> Any:
    async def handler(websocket: WebSocket) -> None:
        if step == "before_accept":
            await injector.fire_async()
        await websocket.accept()
        if step == "after_accept":
            await injector.fire_async()
        await websocket.send_text("hello")
        await websocket.receive_text()
        await websocket.close()

    return handler


def raw_websocket(step: str, injector: Injector) -> ASGIApp:
    """A plain ASGI websocket app that returns quietly when the client
    leaves."""

    async def raw(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # websocket.connect
        if step == "before_accept":
            await injector.fire_async()
        await send({"type": "websocket.accept"})
        if step == "after_accept":
            await injector.fire_async()
        await send({"type": "websocket.send", "text": "hello"})
        if (await receive())["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.close", "code": 1000})

    return raw


ReceiverErrors = Literal["raise", "log"]


def build(
    form: str, raw: ASGIApp, routes: list[Any], receiver_errors: ReceiverErrors
) -> tuple[ASGIApp, Any]:
    """The app to call, with the middleware installed the ``form`` way
    (``raw``: around the plain ASGI app), and the signals' sender."""
    if form == "raw":
        return SignalMiddleware(raw, receiver_errors=receiver_errors), raw
    app = Starlette(routes=routes)
    if form == "install":
        return install(app, receiver_errors=receiver_errors), app
    if form == "wrap":
        return SignalMiddleware(app, receiver_errors=receiver_errors), app
    app.add_middleware(SignalMiddleware, receiver_errors=receiver_errors)
    return app, app


# Running one cell.


@dataclass
class Outcome:
    sender: Any
    recorder: Recorder
    client: Leaving
    injector: Injector
    endpoint_error: Boom
    canceller: Canceller
    escaped: BaseException | None = None
    returned: bool = False
    records: list[logging.LogRecord] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return self.recorder.names

    def resolve(self, expected: Expected) -> Any:
        """The object an expectation stands for."""
        if expected is INJECTED:
            return self.injector.error
        if expected is ENDPOINT:
            return self.endpoint_error
        if expected is ESCAPED:
            return self.escaped
        return expected


@dataclass
class Cell:
    form: str
    step: str
    fault: str
    kind: str = "async"
    receiver_errors: ReceiverErrors = "raise"

    @property
    def websocket(self) -> bool:
        return self.step in WS_STEPS


async def run(
    cell: Cell,
    caplog: pytest.LogCaptureFixture,
    receivers: Sequence[tuple[str, Callable[..., Any]]] = (),
    record: bool = True,
) -> Outcome:
    """Call the app of ``cell`` as a server would, with the fault injected,
    inside a cancel scope that the fault may cancel, and ``receivers``
    connected (each to the signal named), after the recorder of every
    lifecycle signal (unless not ``record``); check that the call leaves
    no context variable of asignals set and no task running."""
    spec_version = "2.3" if cell.fault == "disconnect" else "2.4"
    if cell.websocket:
        # The client says nothing after connecting: the handler waits for it
        # until the fault.
        incoming: list[Message] = [dict(WS_CONNECT)]
        disconnect: Message = {"type": "websocket.disconnect", "code": 1001}
        scope = websocket_scope()
        scope["asgi"]["spec_version"] = spec_version
    else:
        incoming = {
            "before_body": [],
            "reading_body": [{"type": "http.request", "body": b"chunk", "more_body": True}],
        }.get(cell.step, [dict(HTTP_REQUEST)])
        disconnect = {"type": "http.disconnect"}
        scope = http_scope(spec_version=spec_version)
    client = Leaving(*incoming, spec_version=spec_version, disconnect=disconnect)
    canceller = Canceller()
    injector = Injector(cell.fault, client, canceller)
    endpoint_error = Boom("endpoint")
    if cell.websocket:
        raw = raw_websocket(cell.step, injector)
        routes: list[Any] = [WebSocketRoute("/ws", websocket_handler(cell.step, injector))]
    else:
        raw = raw_app(cell.step, injector, endpoint_error)
        routes = [Route("/", starlette_endpoint(cell.step, injector, endpoint_error))]
    app, sender = build(cell.form, raw, routes, cell.receiver_errors)

    with recording() if record else nullcontext(Recorder()) as recorder, ExitStack() as stack:
        outcome = Outcome(sender, recorder, client, injector, endpoint_error, canceller)
        signal = FINISHED if cell.step == ERROR_PAGE_FINISHED else cell.step
        if signal in HTTP_SIGNALS:
            # Connected after the recorder: the signal is recorded, then
            # the fault happens.
            def sync_fault(sender: Any, **kwargs: Any) -> None:
                injector.fire()

            async def async_fault(sender: Any, **kwargs: Any) -> None:
                await injector.fire_async()

            fault_receiver = sync_fault if cell.kind == "sync" else async_fault
            stack.enter_context(getattr(asignals, signal).connected_to(fault_receiver))
        for name, receiver in receivers:
            stack.enter_context(getattr(asignals, name).connected_to(receiver))

        async def watched(scope: Scope, receive: Receive, send: Send) -> None:
            try:
                await app(scope, receive, send)
            except BaseException as exc:
                outcome.escaped = exc
                raise
            outcome.returned = True

        caplog.clear()
        tasks_before = {task.id for task in anyio.get_running_tasks()}
        vars_before = asignals_vars()
        outer: BaseException | None = None
        try:
            with anyio.fail_after(10):  # a TimeoutError if the app hangs
                await canceller.call(watched, scope, client)
        except BaseException as exc:
            outer = exc
        if outer is not None:  # what left the app, in the task group's group
            assert isinstance(outer, BaseExceptionGroup), outer
            assert len(outer.exceptions) == 1, outer
        outcome.records = [r for r in caplog.records if r.name == "asignals"]
        assert asignals_vars() == vars_before
        assert {task.id for task in anyio.get_running_tasks()} == tasks_before
    return outcome


def check(outcome: Outcome, expected: Expect, teardown: list[str] = TEARDOWN) -> None:
    """What every cell must satisfy, then what this one expects."""
    check_signals(outcome, expected, teardown)
    check_ending(outcome, expected)


def check_signals(outcome: Outcome, expected: Expect, teardown: list[str]) -> None:
    names = outcome.names
    # The teardown signals: each exactly once, in order, last, after the
    # request (or websocket) context was set up, if it was.
    opened = 1 if STARTED in names or WS_STARTED in names else 0
    for name in teardown[1:]:
        assert names.count(name) == 1, names
    assert names.count(teardown[0]) == opened, names
    assert names[-len(teardown) + 1 - opened :] == teardown[1 - opened :], names
    assert names[0] == PUSHED, names
    assert names == expected.names
    assert {id(sender) for _, sender, _ in outcome.recorder.calls} == {id(outcome.sender)}

    # exc: the same in every teardown signal, and the exception that
    # got_request_exception reported, if it was sent.
    excs = [kwargs["exc"] for name, _, kwargs in outcome.recorder.calls if name in teardown[:-1]]
    assert all(exc is excs[0] for exc in excs), excs
    for name in (GOT, WS_GOT):
        if name in names:
            reported = outcome.recorder.kwargs(name)["exception"]
            assert reported is excs[0], f"{name} reported {reported!r}, teardown got {excs[0]!r}"
    want = outcome.resolve(expected.exc)
    got = f"teardown got exc={excs[0]!r}, not {expected.exc!r}"
    if isinstance(want, type):
        assert isinstance(excs[0], want), got
    else:
        assert excs[0] is want, got
    if expected.escapes is CANCELLED and expected.exc is ESCAPED:
        assert is_cancellation(excs[0]), got


def check_ending(outcome: Outcome, expected: Expect) -> None:
    """What left the app, what the client got, and that nothing of the
    request is left."""
    escaped = outcome.escaped
    left = f"{escaped!r} left the app, not {expected.escapes!r}"
    if expected.escapes is None:
        assert outcome.returned, left
    elif expected.escapes is CANCELLED:
        assert is_cancellation(escaped), left
    elif isinstance(expected.escapes, tuple):
        assert isinstance(escaped, ExceptionGroup), left
        assert escaped.exceptions == tuple(outcome.resolve(e) for e in expected.escapes)
    elif isinstance(expected.escapes, type):
        assert type(escaped) is expected.escapes, left
    else:
        assert escaped is outcome.resolve(expected.escapes), left
    if expected.cancelled is not None:
        assert outcome.canceller.scope.cancelled_caught is expected.cancelled

    assert outcome.client.summary == expected.sent
    if not any(m["type"].startswith("websocket.") for m in outcome.client.attempted):
        assert_one_response(outcome.client.attempted)
    proxies: tuple[Any, ...] = (current_app, g, asignals.request)
    for proxy in proxies:
        with pytest.raises(RuntimeError, match="Working outside"):
            proxy._get_current_object()


@dataclass
class Expect:
    names: list[str]
    exc: Expected
    escapes: Expected
    sent: list[str]
    # Whether the cancel scope around the call caught a cancellation; None
    # when a cancellation was asked for but no checkpoint came before the
    # app raised: then it lands on the caller, and whether the scope says it
    # caught it is the backend's affair.
    cancelled: bool | None = False


# What each cell must give.


def unhandled(form: str) -> list[str]:
    """The signals of an unhandled exception before the response started:
    install(), and SignalMiddleware around a Starlette app, send
    got_request_exception from inside the app's error middleware, before it
    makes the 500, which the middleware then sees (Flask's order; they do so
    when request_finished has receivers, as it has wherever the signals are
    recorded); inside Starlette's error middleware, or around a plain app,
    no 500 reaches the middleware."""
    if form in ("install", "wrap"):
        return [PUSHED, STARTED, GOT, FINISHED, *TEARDOWN]
    return [PUSHED, STARTED, GOT, *TEARDOWN]


def error_page(form: str) -> list[str]:
    return [] if form == "raw" else ERROR_PAGE


def full_response(form: str, step: str) -> list[str]:
    if form == "raw":
        return ["start 200", "body first ...", "body second"]
    if step in ("after_start", "mid_stream"):
        return ["start 200", "body first ...", "body second ...", "body "]
    return ["start 200", "body hello"]


def expected_in_endpoint(form: str, step: str, fault: str) -> Expect:
    raw = form == "raw"
    if step in ("before_body", "reading_body"):
        if fault == "exception":
            return Expect(unhandled(form), INJECTED, INJECTED, error_page(form))
        if fault == "cancel":
            return Expect(NO_RESPONSE, ESCAPED, CANCELLED, [], cancelled=True)
        if raw:  # the plain app returns when the client leaves
            return Expect([PUSHED, STARTED, *TEARDOWN], None, None, [])
        # Starlette raises ClientDisconnect: an unhandled exception.
        if fault == "disconnect":  # the 500 is dropped
            return Expect(unhandled(form), ESCAPED, ClientDisconnect, [])
        # gone: sending the 500 raises OSError, which propagates; the
        # request's error is still the ClientDisconnect.
        return Expect(unhandled(form), ClientDisconnect, OSError, [])
    if step in ("after_start", "mid_stream"):
        sent = ["start 200"] if step == "after_start" else ["start 200", "body first ..."]
        if fault == "exception":
            return Expect(FAILED_AFTER_START, INJECTED, INJECTED, sent)
        if fault == "cancel":
            return Expect(NORMAL, ESCAPED, CANCELLED, sent, cancelled=True)
        if fault == "disconnect":  # the stream ends quietly (ASGI 2.3)
            return Expect(NORMAL, None, None, sent)
        # gone: Starlette's stream raises ClientDisconnect; the plain app's
        # send raises OSError.
        return Expect(FAILED_AFTER_START, ESCAPED, OSError if raw else ClientDisconnect, sent)
    # In the background task, once the whole response went out.
    sent = full_response(form, step)
    if fault == "exception":
        return Expect(FAILED_AFTER_START, INJECTED, INJECTED, sent)
    if fault == "cancel":
        return Expect(NORMAL, ESCAPED, CANCELLED, sent, cancelled=True)
    return Expect(NORMAL, None, None, sent)  # nothing is sent after the client left


def expected_in_receiver(form: str, signal: str, kind: str, fault: str) -> Expect:
    sent = full_response(form, signal)
    if signal == GOT:
        return expected_in_got_request_exception(form, kind, fault)
    if fault == "exception":  # with receiver_errors="raise"
        if signal == PUSHED:
            # No request context: no request_started, no request teardown.
            # Only Starlette's error middleware outside makes a 500.
            return Expect(NO_REQUEST, INJECTED, INJECTED, ERROR_PAGE * (form == "add_middleware"))
        if signal in (STARTED, FINISHED):
            # The request's unhandled exception. With install() the 500
            # comes (with its own request_finished, as in Flask). Around a
            # Starlette app too, from request_finished: the app's error
            # middleware took the response as started and made none, so the
            # middleware makes it; but a request_started receiver there
            # raises before the app is called, and the server makes the 500.
            # With add_middleware, Starlette's error middleware outside
            # makes it.
            before = [PUSHED, STARTED] + [FINISHED] * (signal == FINISHED) + [GOT]
            if form == "install" or (form == "wrap" and signal == FINISHED):
                return Expect([*before, FINISHED, *TEARDOWN], INJECTED, INJECTED, ERROR_PAGE)
            page = ERROR_PAGE * (form == "add_middleware")
            return Expect([*before, *TEARDOWN], INJECTED, INJECTED, page)
        # A teardown receiver: the response went out; its error propagates.
        return Expect(NORMAL, None, INJECTED, sent)
    if fault == "cancel":
        if signal in TEARDOWN:
            # Teardown finishes (shielded if a receiver is async); the
            # cancellation comes once it is over: out of the app if it
            # awaited, else at the caller's next checkpoint.
            escapes = CANCELLED if kind == "async" else None
            return Expect(NORMAL, None, escapes, sent, cancelled=True)
        if kind == "async" and signal == PUSHED:
            return Expect(NO_REQUEST, ESCAPED, CANCELLED, [], cancelled=True)
        if kind == "async" and signal == STARTED:
            return Expect(NO_RESPONSE, ESCAPED, CANCELLED, [], cancelled=True)
        # In request_finished, or a sync receiver's cancel, which comes at
        # the next checkpoint: the response start's send.
        return Expect(NORMAL, ESCAPED, CANCELLED, [], cancelled=True)
    if signal in TEARDOWN:  # the client left after the response: no matter
        return Expect(NORMAL, None, None, sent)
    if fault == "disconnect":  # the response is dropped
        return Expect(NORMAL, None, None, [])
    # gone: the response start's send raises OSError, an unhandled
    # exception once the response started (for every form: no 500).
    return Expect(FAILED_AFTER_START, ESCAPED, OSError, [])


def expected_in_got_request_exception(form: str, kind: str, fault: str) -> Expect:
    """The endpoint raised; a receiver of got_request_exception faults. The
    request's error stays the endpoint's: it is what got_request_exception
    reported."""
    names = unhandled(form)
    if fault == "exception":
        return Expect(names, ENDPOINT, GROUP, error_page(form))
    if fault == "disconnect":
        # The 500, made after got_request_exception in every form that makes
        # one, is dropped.
        return Expect(names, ENDPOINT, ENDPOINT, [])
    if fault == "gone":
        # The 500's send fails with OSError, which propagates; a plain app
        # makes none, and its exception propagates.
        if form == "raw":
            return Expect(names, ENDPOINT, ENDPOINT, [])
        return Expect(names, ENDPOINT, OSError, [])
    # cancel
    if kind == "async":
        # Cancelled in the receiver, before any 500 is made: none is, nor
        # request_finished for it.
        return Expect([PUSHED, STARTED, GOT, *TEARDOWN], ENDPOINT, CANCELLED, [], cancelled=True)
    # A sync receiver's cancel comes at the next checkpoint: sending the
    # 500, in every form that makes one. Around a plain app none comes
    # before the request ends: its exception propagates.
    if form != "raw":
        return Expect(names, ENDPOINT, CANCELLED, [], cancelled=True)
    return Expect(names, ENDPOINT, ENDPOINT, [], cancelled=None)


def expected_in_error_page_finished(form: str, fault: str) -> Expect:
    """The endpoint raised; a receiver of request_finished for the 500
    faults. As in Flask, its exception is logged and the request's own
    propagates; whatever the fault, the request's error stays the
    endpoint's, and got_request_exception reports it."""
    names = unhandled(form)
    if fault == "exception":
        return Expect(names, ENDPOINT, ENDPOINT, ERROR_PAGE)
    if fault == "cancel":  # at the 500's send, if not in the receiver
        return Expect(names, ENDPOINT, CANCELLED, [], cancelled=True)
    if fault == "disconnect":  # the 500 is dropped
        return Expect(names, ENDPOINT, ENDPOINT, [])
    return Expect(names, ENDPOINT, OSError, [])  # gone: the 500's send fails


def expected_in_websocket(form: str, step: str, fault: str) -> Expect:
    accepted = ["websocket.accept"] if step == "after_accept" else []
    failed = [PUSHED, WS_STARTED, WS_GOT, WS_FINISHED, *WS_TEARDOWN_SIGNALS]
    if fault == "exception":
        return Expect(failed, INJECTED, INJECTED, accepted)
    if fault == "cancel":
        cancelled = [PUSHED, WS_STARTED, *WS_TEARDOWN_SIGNALS]
        return Expect(cancelled, ESCAPED, CANCELLED, accepted, cancelled=True)
    if fault == "disconnect":
        if form == "raw":  # the plain app returns when the client leaves
            normal = [PUSHED, WS_STARTED, WS_FINISHED, *WS_TEARDOWN_SIGNALS]
            return Expect(normal, None, None, accepted)
        # Starlette's receive_text raises WebSocketDisconnect.
        return Expect(failed, ESCAPED, WebSocketDisconnect, accepted)
    # gone: a send raises OSError; Starlette makes it WebSocketDisconnect
    # once the connection was accepted.
    if form == "raw" or not accepted:
        return Expect(failed, ESCAPED, OSError, accepted)
    return Expect(failed, ESCAPED, WebSocketDisconnect, accepted)


# The matrices.


def ids(*parts: str) -> str:
    return "-".join(parts)


ENDPOINT_CELLS = [
    pytest.param(form, step, fault, id=ids(step, fault, form))
    for step in ENDPOINT_STEPS
    for fault in FAULTS
    for form in FORMS
]


@pytest.mark.parametrize(("form", "step", "fault"), ENDPOINT_CELLS)
async def test_a_fault_in_the_endpoint_tears_down_once_and_propagates(
    form: str, step: str, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    outcome = await run(Cell(form, step, fault), caplog)

    check(outcome, expected_in_endpoint(form, step, fault))
    assert outcome.injector.fired
    assert outcome.injector.seen_app is outcome.sender
    assert outcome.records == []


RECEIVER_CELLS = [
    pytest.param(form, signal, kind, fault, id=ids(signal, kind, fault, form))
    for signal in HTTP_SIGNALS
    for kind in KINDS
    for fault in FAULTS
    for form in FORMS
]


@pytest.mark.parametrize(("form", "signal", "kind", "fault"), RECEIVER_CELLS)
async def test_a_fault_in_a_lifecycle_receiver_tears_down_once_and_propagates(
    form: str, signal: str, kind: str, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    outcome = await run(Cell(form, signal, fault, kind), caplog)

    check(outcome, expected_in_receiver(form, signal, kind, fault))
    assert outcome.injector.fired
    # A teardown receiver that awaits runs to its end despite the
    # cancellation; others are cancelled where they wait.
    assert outcome.injector.went_on is (
        fault == "cancel" and kind == "async" and signal in TEARDOWN
    )
    # Popped: no app context any more.
    assert outcome.injector.seen_app is (None if signal == POPPED else outcome.sender)
    assert outcome.records == []


LOGGED_CELLS = [
    pytest.param(form, signal, kind, id=ids(signal, kind, form))
    for signal in HTTP_SIGNALS
    for kind in KINDS
    for form in FORMS
]


@pytest.mark.parametrize(("form", "signal", "kind"), LOGGED_CELLS)
async def test_a_receiver_exception_is_logged_and_the_request_goes_on_with_log(
    form: str, signal: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    outcome = await run(Cell(form, signal, "exception", kind, "log"), caplog)

    if signal == GOT:  # as if the receiver had not failed
        expected = Expect(unhandled(form), ENDPOINT, ENDPOINT, error_page(form))
    else:
        expected = Expect(NORMAL, None, None, full_response(form, signal))
    check(outcome, expected)
    (record,) = outcome.records
    assert record.levelno == logging.ERROR
    assert f"{kind}_fault" in record.getMessage()
    assert signal.replace("_", "-") in record.getMessage()
    assert record.exc_info is not None
    assert record.exc_info[1] is outcome.injector.error


@pytest.mark.parametrize(("form", "step", "fault"), ENDPOINT_CELLS)
async def test_a_fault_in_the_endpoint_with_no_lifecycle_receivers_leaves_nothing_behind(
    form: str, step: str, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The middleware's path when it has no signal to send."""
    outcome = await run(Cell(form, step, fault), caplog, record=False)

    check_ending(outcome, expected_in_endpoint(form, step, fault))
    assert outcome.names == []


ERROR_PAGE_CELLS = [
    pytest.param(form, kind, fault, errors, id=ids(kind, fault, errors, form))
    for kind in KINDS
    for fault in FAULTS
    for errors in (["raise", "log"] if fault == "exception" else ["raise"])
    # The other forms send no request_finished for the 500, made outside.
    for form in ["install", "wrap"]
]


@pytest.mark.parametrize(("form", "kind", "fault", "receiver_errors"), ERROR_PAGE_CELLS)
async def test_a_fault_in_request_finished_for_the_error_page_keeps_the_requests_error(
    form: str,
    kind: str,
    fault: str,
    receiver_errors: ReceiverErrors,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cell = Cell(form, ERROR_PAGE_FINISHED, fault, kind, receiver_errors)

    outcome = await run(cell, caplog)

    check(outcome, expected_in_error_page_finished(form, fault))
    assert outcome.injector.fired
    if fault == "exception":
        (record,) = outcome.records
        assert f"{kind}_fault" in record.getMessage()
        assert record.exc_info is not None
        assert record.exc_info[1] is outcome.injector.error
    else:
        assert outcome.records == []


WEBSOCKET_CELLS = [
    pytest.param(form, step, fault, id=ids(step, fault, form))
    for step in WS_STEPS
    for fault in FAULTS
    for form in FORMS
]


@pytest.mark.parametrize(("form", "step", "fault"), WEBSOCKET_CELLS)
async def test_a_fault_in_a_websocket_handler_tears_down_once_and_propagates(
    form: str, step: str, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    outcome = await run(Cell(form, step, fault), caplog)

    check(outcome, expected_in_websocket(form, step, fault), WS_TEARDOWN_SIGNALS)
    assert [m["type"] for m in outcome.client.attempted].count("websocket.accept") <= 1
    assert outcome.injector.seen_app is outcome.sender
    assert outcome.records == []


TEARDOWN_CELLS = [
    pytest.param(form, kind, ending, id=ids(ending, kind, form))
    for ending in ["response", "exception", "cancel"]
    for kind in KINDS
    for form in FORMS
]


def failing_teardown_receivers(kind: str) -> list[tuple[str, Callable[..., Any], Boom]]:
    """A receiver of each teardown signal, each raising its own error."""
    receivers: list[tuple[str, Callable[..., Any], Boom]] = []
    for name in TEARDOWN:
        error = Boom(name)

        def sync_failing(sender: Any, _error: Boom = error, **kwargs: Any) -> None:
            raise _error

        async def async_failing(sender: Any, _error: Boom = error, **kwargs: Any) -> None:
            await anyio.lowlevel.checkpoint()
            raise _error

        receivers.append((name, sync_failing if kind == "sync" else async_failing, error))
    return receivers


def teardown_cell(form: str, ending: str, receiver_errors: ReceiverErrors) -> Cell:
    """The request ends with a response, the endpoint's exception, or a
    cancellation in the endpoint."""
    if ending == "cancel":
        return Cell(form, "before_body", "cancel", receiver_errors=receiver_errors)
    step = "plain" if ending == "response" else "failing"
    return Cell(form, step, "no fault", receiver_errors=receiver_errors)


def expected_ending(form: str, ending: str) -> Expect:
    if ending == "response":
        return Expect(NORMAL, None, None, full_response(form, "plain"))
    if ending == "exception":
        return Expect(unhandled(form), ENDPOINT, ENDPOINT, error_page(form))
    return Expect(NO_RESPONSE, ESCAPED, CANCELLED, [], cancelled=True)


@pytest.mark.parametrize(("form", "kind", "ending"), TEARDOWN_CELLS)
async def test_errors_of_several_teardown_receivers_are_raised_together_after_all_ran(
    form: str, kind: str, ending: str, caplog: pytest.LogCaptureFixture
) -> None:
    failing = failing_teardown_receivers(kind)
    errors = tuple(error for _, _, error in failing)
    cell = teardown_cell(form, ending, "raise")

    outcome = await run(cell, caplog, [(name, receiver) for name, receiver, _ in failing])

    expected = expected_ending(form, ending)
    if ending == "response":
        expected.escapes = errors
    elif ending == "exception":
        expected.escapes = (ENDPOINT, *errors)
    check(outcome, expected)
    if ending == "cancel":
        # A cancellation is never replaced: the errors are logged.
        assert [record.exc_info[1] for record in outcome.records if record.exc_info] == list(errors)
        assert len(outcome.records) == len(errors)
    else:
        assert outcome.records == []


@pytest.mark.parametrize(("form", "kind", "ending"), TEARDOWN_CELLS)
async def test_errors_of_several_teardown_receivers_are_logged_with_log(
    form: str, kind: str, ending: str, caplog: pytest.LogCaptureFixture
) -> None:
    failing = failing_teardown_receivers(kind)
    cell = teardown_cell(form, ending, "log")

    outcome = await run(cell, caplog, [(name, receiver) for name, receiver, _ in failing])

    check(outcome, expected_ending(form, ending))
    assert len(outcome.records) == len(failing)
    for record, (name, receiver, error) in zip(outcome.records, failing, strict=True):
        assert record.exc_info is not None
        assert record.exc_info[1] is error
        assert receiver.__name__ in record.getMessage()
        assert name.replace("_", "-") in record.getMessage()

"""asignals.monitor: what the review of the monitor found, each a test.

The results of a send the monitor stopped watching midway; blinker's
``_async_wrapper``/``_sync_wrapper`` given the receivers themselves; a send
with nothing to call that returns [] as without a monitor; the Host and Origin
checks against DNS rebinding; the own-request flag of an app that serves many
requests in one context; a monitor nobody holds; a live view whose client went
away, or whose sends change while it reads them; senders known by their id;
a send() that raised before calling anything; how an interrupted receiver is
shown.

Every monitor a test opens is closed by the end of the test (the autouse
fixture in conftest.py fails a test that leaves one open).
"""

from __future__ import annotations

import gc
import inspect
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import urlencode

import anyio
import anyio.lowlevel
import anyio.to_thread
import httpx2
import pytest
from helpers import LOOPBACK, local_client
from monitor_pages import (
    WAIT,
    app_with,
    connected,
    done,
    done_async,
    hello,
    live_html,
    name_of,
    new_signal,
    only_send,
    receive,
    request_of,
    rows,
    runs,
    sends_of,
    signal_of,
)
from raw_asgi import WS_CONNECT, websocket_scope
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.testclient import TestClient, WebSocketTestSession
from starlette.types import Message, Scope
from starlette.websockets import WebSocketDisconnect
from uvicorn.protocols.utils import ClientDisconnected

import asignals.monitor
from asignals import NamedSignal
from asignals.monitor import SignalMonitor, WatchedSend


def live_at(
    test_client: TestClient, monitor: SignalMonitor, host: str = "localhost", **kwargs: Any
) -> WebSocketTestSession:
    """The monitor's live view at ``ws://<host>/live``, from the first send."""
    query = urlencode({"instance": monitor._instance, "after": 0, "signal": ""})
    # A full URL: TestClient's websockets go to ws://testserver otherwise.
    return test_client.websocket_connect(f"ws://{host}/live?{query}", **kwargs)


def sent_signal() -> NamedSignal:
    """A signal with a receiver, sent once: a live view has a row to send."""
    signal = new_signal()
    signal.connect(done)
    signal.send("shop")
    return signal


# 1. A monitor closed during a send: the results hold the receivers


def waiting_receiver(started: anyio.Event, release: anyio.Event) -> Callable[..., Any]:
    async def waiting(sender: Any, **kwargs: Any) -> str:
        started.set()
        await release.wait()
        return "released"

    return waiting


@pytest.mark.anyio
@pytest.mark.parametrize("way", ["send_async", "concurrent send_async", "send in a worker thread"])
async def test_results_hold_the_receivers_when_the_monitor_closes_during_the_send(
    way: str,
) -> None:
    signal = new_signal()
    started, release = anyio.Event(), anyio.Event()
    waiting = waiting_receiver(started, release)
    signal.connect(done)
    signal.connect(waiting)
    results: list[tuple[Any, Any]] = []

    async def sending() -> None:
        if way == "send in a worker thread":
            # The async receiver runs on the event loop, the send waits in
            # the thread.
            results.extend(await anyio.to_thread.run_sync(partial(signal.send, "shop")))
        else:
            concurrent = way == "concurrent send_async"
            results.extend(await signal.send_async("shop", _concurrent=concurrent))

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            with SignalMonitor():
                tasks.start_soon(sending)
                await started.wait()
            release.set()

    assert results == [(done, "done"), (waiting, "released")]
    assert results[0][0] is done
    assert results[1][0] is waiting


def test_results_of_send_hold_the_receivers_when_a_receiver_closes_the_monitor() -> None:
    signal = new_signal()
    monitor = SignalMonitor()

    def closing(sender: Any, **kwargs: Any) -> str:
        monitor.close()
        return "closed"

    signal.connect(closing)
    signal.connect(done)
    with monitor:
        results = signal.send("shop")

    assert results == [(closing, "closed"), (done, "done")]
    assert results[0][0] is closing
    assert results[1][0] is done


# 2. _async_wrapper and _sync_wrapper get the receivers themselves


def test_async_wrapper_gets_the_async_receiver_itself(anyio_backend: str) -> None:
    signal = new_signal()
    signal.connect(done)
    signal.connect(done_async)
    wrapped: list[Callable[..., Any]] = []

    def ensure_sync(func: Callable[..., Any]) -> Callable[..., Any]:
        # What flask.Flask.ensure_sync does: it tells async functions by
        # inspecting them.
        wrapped.append(func)
        if inspect.iscoroutinefunction(func):
            return lambda *args, **kwargs: anyio.run(
                partial(func, *args, **kwargs), backend=anyio_backend
            )
        return func

    with SignalMonitor() as monitor:
        results = signal.send("shop", _async_wrapper=ensure_sync)

    assert wrapped == [done_async]
    assert wrapped[0] is done_async
    assert results == [(done, "done"), (done_async, "done async")]
    send = only_send(monitor, signal)
    assert runs(send) == [
        (name_of(done), "sync", "done"),
        (name_of(done_async), "async", "done"),
    ]
    assert all(run.duration is not None and run.error is None for run in send.receivers)


@pytest.mark.anyio
async def test_sync_wrapper_gets_the_sync_receiver_itself() -> None:
    signal = new_signal()
    signal.connect(done)
    signal.connect(done_async)
    wrapped: list[Callable[..., Any]] = []

    def to_async(func: Callable[..., Any]) -> Callable[..., Any]:
        wrapped.append(func)
        name = func.__name__  # as a wrapper that logs would

        async def call(*args: Any, **kwargs: Any) -> Any:
            await anyio.lowlevel.checkpoint()
            return (name, func(*args, **kwargs))

        return call

    with SignalMonitor() as monitor:
        results = await signal.send_async("shop", _sync_wrapper=to_async)

    assert wrapped == [done]
    assert wrapped[0] is done
    assert results == [(done, ("done", "done")), (done_async, "done async")]
    send = only_send(monitor, signal)
    assert runs(send) == [
        (name_of(done), "sync", "done"),
        (name_of(done_async), "async", "done"),
    ]
    assert all(run.duration is not None and run.error is None for run in send.receivers)


# 3. A send with nothing to call returns [] before checking its keywords


async def send_with_a_slip(call: str, signal: NamedSignal) -> Any:
    """A send whose keywords would be a TypeError if there were a receiver
    to call."""
    if call == "send(None, _concurent=True)":
        return signal.send(None, _concurent=True)
    if call == "send(sender=1)":
        return signal.send(sender=1)
    return await signal.send_async(None, _timout=1)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "call", ["send(None, _concurent=True)", "send(sender=1)", "send_async(None, _timout=1)"]
)
@pytest.mark.parametrize("state", ["without receivers", "muted"])
async def test_a_send_with_nothing_to_call_returns_nothing_as_without_a_monitor(
    call: str, state: str
) -> None:
    signal = new_signal()
    if state == "muted":
        signal.connect(done)
        signal.is_muted = True
    assert await send_with_a_slip(call, signal) == []

    with SignalMonitor() as monitor:
        results = await send_with_a_slip(call, signal)

    assert results == []
    assert only_send(monitor, signal).receivers == []


# 4. Who may see the monitor: the Host and Origin headers (DNS rebinding)

LOOPBACK_HOSTS = ["localhost", "localhost:8000", "127.0.0.1:8000", "[::1]", "[::1]:8000"]
OTHER_HOSTS = ["evil.example", "evil.example:8000", "localhost.evil.example", "127.0.0.1.nip.io"]


@pytest.mark.parametrize("host", OTHER_HOSTS)
def test_a_loopback_client_asking_for_another_host_is_denied(
    anyio_backend: str, monitor: SignalMonitor, host: str
) -> None:
    # A page of evil.example whose name now resolves to 127.0.0.1: the
    # browser is a loopback client, and says Host: evil.example.
    sent_signal()

    response = local_client(monitor, anyio_backend, host=host).get("/")

    assert response.status_code == 403
    assert "<header" not in response.text
    assert "http://localhost" in response.text  # how to ask for it


@pytest.mark.parametrize("host", LOOPBACK_HOSTS)
def test_a_loopback_client_asking_for_a_loopback_host_sees_the_page(
    anyio_backend: str, monitor: SignalMonitor, host: str
) -> None:
    response = local_client(monitor, anyio_backend, host=host).get("/")

    assert response.status_code == 200
    assert '<header id="monitor"' in response.text


@pytest.mark.parametrize("origin", [None, "same"])
@pytest.mark.parametrize("host", OTHER_HOSTS)
def test_a_loopback_client_asking_for_another_host_cannot_open_the_live_view(
    anyio_backend: str, monitor: SignalMonitor, host: str, origin: str | None
) -> None:
    sent_signal()
    headers = {} if origin is None else {"origin": f"http://{host}"}

    with (
        pytest.raises(WebSocketDisconnect) as denied,
        live_at(local_client(monitor, anyio_backend, host=host), monitor, host, headers=headers),
    ):
        pass

    assert denied.value.code == 1008


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "http://localhost:9999", "https://127.0.0.1", "null"]
)
@pytest.mark.parametrize("allow", ["default", "everyone"])
def test_a_websocket_from_another_site_s_page_is_refused(
    anyio_backend: str, origin: str, allow: str
) -> None:
    # A loopback client asking for localhost, but from a page elsewhere:
    # browsers let any page open a websocket to any server. Whatever allow
    # says.
    sent_signal()
    allowing = {} if allow == "default" else {"allow": lambda connection: True}
    with SignalMonitor(**allowing) as monitor:  # type: ignore[arg-type]
        test_client = local_client(monitor, anyio_backend)
        with (
            pytest.raises(WebSocketDisconnect) as denied,
            live_at(test_client, monitor, headers={"origin": origin}),
        ):
            pass

    assert denied.value.code == 1008


@pytest.mark.parametrize("origin", [None, "same"])
@pytest.mark.parametrize("host", LOOPBACK_HOSTS)
def test_a_websocket_from_the_monitor_s_own_page_or_no_page_is_accepted(
    anyio_backend: str, monitor: SignalMonitor, host: str, origin: str | None
) -> None:
    signal = sent_signal()
    headers = {} if origin is None else {"origin": f"http://{host}"}

    with live_at(
        local_client(monitor, anyio_backend, host=host), monitor, host, headers=headers
    ) as ws:
        assert signal.name in live_html(receive(ws))


# 5. A monitor's own requests end with them, in an app that serves many
# requests in one context


def shown(monitor: SignalMonitor) -> list[WatchedSend]:
    """The sends the monitor's page and live view show."""
    return [send for send in monitor.sends if monitor._shows(send)]


@pytest.mark.anyio
async def test_sends_after_a_request_for_the_monitor_in_the_same_context_are_shown() -> None:
    signal = new_signal()
    signal.connect(done)
    with SignalMonitor() as monitor:
        app = app_with(monitor, Route("/hello", hello))
        # httpx's ASGITransport runs each request in the caller's context.
        transport = httpx2.ASGITransport(app=app, client=(LOOPBACK, 50000))
        async with httpx2.AsyncClient(transport=transport, base_url="http://localhost") as http:
            assert (await http.get("/signals/")).status_code == 200
            signal.send("after the page")
            assert (await http.get("/hello")).text == "hello"
            page = (await http.get("/signals/")).text
            # The page's own sends, to its appcontext-popped, are over now.

    assert [send.sender for send in sends_of(monitor, signal)] == ["'after the page'"]
    kept = shown(monitor)
    assert [send.request for send in kept if send.signal == "request-started"] == ["GET /hello"]
    assert [send.request for send in kept if send.request and "/signals" in send.request] == []
    # The one of /hello, none of the two requests for the monitor.
    assert [send.signal for send in kept].count("appcontext-popped") == 1
    page_rows = rows(page).values()
    assert signal.name in {signal_of(row) for row in page_rows}
    assert "GET /hello" in {request_of(row) for row in page_rows}


# 6. A monitor nobody holds stops watching


def test_a_monitor_nobody_holds_stops_watching_once_collected() -> None:
    signal = new_signal()
    signal.connect(done)

    def mounted_and_dropped() -> weakref.ref[SignalMonitor]:
        monitor = SignalMonitor()
        app = Starlette(routes=[Mount("/signals", app=monitor)])
        signal.send("shop")
        assert signal._sync_handles is None  # watched
        assert len(sends_of(monitor, signal)) == 1
        del app
        return weakref.ref(monitor)

    gone = mounted_and_dropped()
    gc.collect()

    assert signal._sync_handles is not None
    assert signal._async_entries is not None
    assert gone() is None
    assert asignals.monitor._monitors() == []
    assert signal.send("shop") == [(done, "done")]


def test_a_monitor_nobody_holds_stops_watching_while_another_is_open() -> None:
    # The sends the other monitor keeps were shown on the dropped one too.
    signal = new_signal()
    signal.connect(done)
    with SignalMonitor() as staying:
        dropped = SignalMonitor()
        gone = weakref.ref(dropped)
        signal.send("shop")
        del dropped
        try:
            gc.collect()

            assert gone() is None
            assert asignals.monitor._monitors() == [staying]
        finally:
            leftover = gone()
            if leftover is not None:
                leftover.close()
            del leftover


# 7. The live view: a client gone while it sends; changes while it reads


class GoneClient:
    """A live view's client: it connects, then never says more; the server's
    ``ok`` first sends reach it, the next one raises as uvicorn's does once
    the client went away."""

    def __init__(self, ok: int) -> None:
        self.ok = ok
        self.sent: list[Message] = []
        self.first_row = anyio.Event()
        self.connected = False

    async def receive(self) -> Message:
        if not self.connected:
            self.connected = True
            return WS_CONNECT
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(self, message: Message) -> None:
        await anyio.lowlevel.checkpoint()
        if message["type"] == "websocket.send":
            if self.ok == 0:
                raise ClientDisconnected()
            self.ok -= 1
            self.first_row.set()
        self.sent.append(message)


def live_scope(monitor: SignalMonitor) -> Scope:
    scope = websocket_scope("/live")
    scope["headers"] = [(b"host", b"localhost")]
    scope["query_string"] = urlencode({"instance": monitor._instance, "after": 0}).encode()
    return scope


@pytest.mark.anyio
async def test_live_view_whose_first_send_fails_ends_quietly() -> None:
    with SignalMonitor() as monitor:
        sent_signal()
        gone = GoneClient(ok=0)

        with anyio.fail_after(WAIT):
            await monitor(live_scope(monitor), gone.receive, gone.send)

        assert monitor._waiters == set()
    assert [message["type"] for message in gone.sent] == ["websocket.accept"]


@pytest.mark.anyio
async def test_live_view_whose_later_send_fails_ends_quietly() -> None:
    signal = new_signal()
    signal.connect(done)
    with SignalMonitor() as monitor:
        signal.send("shop")
        gone = GoneClient(ok=1)
        ended = anyio.Event()

        async def view() -> None:
            await monitor(live_scope(monitor), gone.receive, gone.send)
            ended.set()

        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(view)
                await gone.first_row.wait()
                signal.send("shop")  # a row the client is not there for
                await ended.wait()

        assert monitor._waiters == set()


def test_live_view_misses_no_change_made_while_it_reads_the_sends(
    anyio_backend: str, monitor: SignalMonitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two receivers end in other threads right after the view took the
    # sends that changed: one of another send (Z), then one of a send it took
    # (S). The view must send Z's change, and S's again.
    s_signal, z_signal, w_signal = new_signal("s"), new_signal("z"), new_signal("w")
    for signal in (s_signal, z_signal, w_signal):
        signal.connect(done)
    s_signal.send("S")
    z_signal.send("Z")
    s, z = monitor.sends
    after = max(s.version, z.version)
    filtered = asignals.monitor._filtered
    armed = False

    def interleaved(sends: list[WatchedSend], pattern: str) -> list[WatchedSend]:
        nonlocal armed
        if armed and s in sends:
            armed = False
            z._changed()
            s._changed()
        return filtered(sends, pattern)

    monkeypatch.setattr(asignals.monitor, "_filtered", interleaved)
    test_client = local_client(monitor, anyio_backend)
    query = urlencode({"instance": monitor._instance, "after": after})
    sent: list[str] = []
    with test_client.websocket_connect(f"ws://localhost/live?{query}") as websocket:
        armed = True
        s._changed()
        sent += [signal_of(row) for row in rows(live_html(receive(websocket))).values()]
        # A later change: the view sends it, and Z's if it knows of it.
        w_signal.send("W")
        while w_signal.name not in sent:
            sent += [signal_of(row) for row in rows(live_html(receive(websocket))).values()]

    assert z_signal.name in sent


# 8. The connected-receivers table: senders known by their id


class Slotted:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<Slotted>"


@pytest.mark.parametrize(
    "sender", [None, ("shop", 1), Slotted()], ids=["None", "a tuple", "a __slots__ object"]
)
def test_connected_receivers_table_shows_a_sender_known_by_its_id_as_such(
    anyio_backend: str, monitor: SignalMonitor, sender: Any
) -> None:
    signal = new_signal()
    signal.connect(done, sender)

    row = connected(local_client(monitor, anyio_backend).get("/").text)[signal.name]

    assert f'<span class="doc">for &lt;the sender with id {id(sender)}&gt;</span>' in row


def test_connected_receivers_table_shows_an_int_sender_as_the_int(
    anyio_backend: str, monitor: SignalMonitor
) -> None:
    signal = new_signal()
    signal.connect(done, 12345)

    row = connected(local_client(monitor, anyio_backend).get("/").text)[signal.name]

    assert '<span class="doc">for 12345</span>' in row


# 9. A send() that raised before calling anything is not shown


@pytest.mark.anyio
@pytest.mark.parametrize(
    "receivers", [[done_async], [done, done_async]], ids=["async", "sync then async"]
)
async def test_send_on_the_event_loop_with_async_receivers_raises_and_is_not_shown(
    receivers: list[Callable[..., Any]],
) -> None:
    signal = new_signal()
    for receiver in receivers:
        signal.connect(receiver)

    with SignalMonitor() as monitor, pytest.raises(RuntimeError, match="send_async"):
        signal.send("shop")

    assert sends_of(monitor, signal) == []


# 10. How an interrupted receiver is shown


@pytest.mark.parametrize(
    ("exception", "shown_as"),
    [(KeyboardInterrupt(), "KeyboardInterrupt()"), (SystemExit(3), "SystemExit(3)")],
    ids=["KeyboardInterrupt", "SystemExit"],
)
def test_a_receiver_raising_a_base_exception_shows_failed_with_it(
    exception: BaseException, shown_as: str
) -> None:
    signal = new_signal()

    def interrupted(sender: Any, **kwargs: Any) -> None:
        raise exception

    signal.connect(interrupted)
    with SignalMonitor() as monitor, pytest.raises(type(exception)):
        signal.send("shop")

    (run,) = only_send(monitor, signal).receivers
    assert (run.status, run.error) == ("failed", shown_as)
    assert run.duration is not None


# The name of each event loop's cancellation exception.
CANCELLATION = {"asyncio": "CancelledError", "trio": "Cancelled"}


async def stuck(sender: Any, **kwargs: Any) -> None:
    await anyio.sleep_forever()


@pytest.mark.anyio
async def test_receivers_cancelled_by_the_timeout_of_a_concurrent_send_show_cancelled(
    anyio_backend: str,
) -> None:
    signal = new_signal()
    signal.connect(stuck)
    signal.connect(done_async)
    with SignalMonitor() as monitor, pytest.raises(TimeoutError):
        # The receiver never ends: the timeout cuts it short whatever its length.
        await signal.send_async("shop", _concurrent=True, _timeout=0.01)

    send = only_send(monitor, signal)
    assert runs(send) == [
        (name_of(stuck), "async", "cancelled"),
        (name_of(done_async), "async", "done"),
    ]
    assert send.receivers[0].error == CANCELLATION[anyio_backend]


@pytest.mark.anyio
@pytest.mark.parametrize("concurrent", [False, True], ids=["sequential", "concurrent"])
async def test_a_receiver_cancelled_from_outside_the_send_shows_cancelled(
    anyio_backend: str, concurrent: bool
) -> None:
    signal = new_signal()
    started = anyio.Event()

    async def waiting(sender: Any, **kwargs: Any) -> None:
        started.set()
        await anyio.sleep_forever()

    signal.connect(waiting)
    with SignalMonitor() as monitor, anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(partial(signal.send_async, "shop", _concurrent=concurrent))
            await started.wait()
            tasks.cancel_scope.cancel()

    (run,) = only_send(monitor, signal).receivers
    assert (run.status, run.error) == ("cancelled", CANCELLATION[anyio_backend])
    assert run.duration is not None

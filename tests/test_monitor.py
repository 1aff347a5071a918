"""asignals.monitor.SignalMonitor: the live view of every signal sent.

That its page and live rows show every value as
text; who may see it; the bound of its ring buffer; the filter by signal name;
that watching changes nothing senders and receivers see, and stops when the
monitor closes; the live view's messages; that its own requests are hidden;
the connected-receivers table. What it records of each send is in
test_monitor_records.py.

Every monitor a test opens is closed by the end of the test (the autouse
fixture in conftest.py fails a test that leaves one open): while one is open, every
send of every signal in the process runs on the watched path.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any
from urllib.parse import urlencode

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
from helpers import LOOPBACK, local_client
from monitor_pages import (
    WAIT,
    Shown,
    app_with,
    connected,
    done,
    done_async,
    fails,
    hello,
    live_html,
    name_of,
    new_signal,
    receive,
    receive_raw,
    request_of,
    rows,
    send_by,
    sends_of,
    signal_of,
)
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.testclient import TestClient, WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from asignals import NamedSignal, ResponseHead, flash, request_finished
from asignals.monitor import SignalMonitor

MARKUP = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def status_of(row: str) -> str:
    """The status of the first receiver in ``row``."""
    match = re.search(r'<span class="status">([^<]*)</span>', row)
    assert match is not None, row
    return match[1]


def page_version(page: str) -> int:
    match = re.search(r'data-version="(\d+)"', page)
    assert match is not None
    return int(match[1])


def live(
    test_client: TestClient,
    monitor: SignalMonitor,
    *,
    after: int = 0,
    signal: str = "",
    instance: str | None = None,
    path: str = "/live",
    **kwargs: Any,
) -> WebSocketTestSession:
    """Open the monitor's live view as the page's script does."""
    query = urlencode(
        {
            "instance": monitor._instance if instance is None else instance,
            "after": after,
            "signal": signal,
        }
    )
    # A full URL: TestClient's websockets go to ws://testserver otherwise.
    return test_client.websocket_connect(f"ws://localhost{path}?{query}", **kwargs)


def page_and_live_rows(test_client: TestClient, monitor: SignalMonitor, prefix: str = "") -> str:
    """The monitor's page, then the rows its live view sends for every send
    kept (after=0)."""
    page = test_client.get(f"{prefix}/").text
    with live(test_client, monitor, path=f"{prefix}/live") as websocket:
        return page + live_html(receive(websocket))


def assert_shown_as_text(html: str) -> None:
    assert MARKUP not in html
    assert ESCAPED in html


# 1. Every value is shown as text


@pytest.mark.parametrize("where", ["signal name", "sender", "argument", "receiver", "error"])
def test_values_of_a_send_are_escaped_on_the_page_and_in_live_rows(
    anyio_backend: str, monitor: SignalMonitor, where: str
) -> None:
    signal = NamedSignal(MARKUP) if where == "signal name" else new_signal()

    def receiver(sender: Any, **kwargs: Any) -> None:
        if where == "error":
            raise ValueError(MARKUP)

    if where == "receiver":
        receiver.__qualname__ = MARKUP
    signal.connect(receiver)
    sender = Shown(MARKUP) if where == "sender" else "shop"
    arguments = {"note": MARKUP} if where == "argument" else {}
    with contextlib.suppress(ValueError):
        signal.send(sender, **arguments)

    page = local_client(monitor, anyio_backend).get("/").text
    with live(local_client(monitor, anyio_backend), monitor) as websocket:
        rows_sent = live_html(receive(websocket))

    assert_shown_as_text(page)
    assert_shown_as_text(rows_sent)


def test_connected_receivers_table_escapes_docs_receivers_and_senders(
    anyio_backend: str, monitor: SignalMonitor
) -> None:
    signal = new_signal(doc=MARKUP)

    def receiver(sender: Any, **kwargs: Any) -> None:
        pass

    receiver.__qualname__ = MARKUP
    shop = Shown("<b>shop</b>")
    signal.connect(receiver, shop)

    row = connected(local_client(monitor, anyio_backend).get("/").text)[signal.name]

    assert "<script>" not in row
    assert "<b>" not in row
    assert f'<div class="doc">{ESCAPED}</div>' in row
    assert f'<span class="name">{receiver.__module__}.{ESCAPED}</span>' in row
    assert "for &lt;b&gt;shop&lt;/b&gt;</span>" in row


def test_filter_text_is_escaped_on_the_page(anyio_backend: str, monitor: SignalMonitor) -> None:
    page = local_client(monitor, anyio_backend).get("/", params={"signal": MARKUP}).text

    assert_shown_as_text(page)


def markup_routes(signal: NamedSignal) -> list[BaseRoute]:
    async def flashing(request: Request) -> Response:
        flash(MARKUP, "warning")
        return PlainTextResponse("flashed")

    async def passing_headers(request: Request) -> Response:
        signal.send(request.app, headers=dict(request.headers))
        return PlainTextResponse("sent")

    return [
        Route("/flash", flashing),
        Route("/headers", passing_headers),
        Route("/echo/{text:path}", hello),
    ]


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        pytest.param("/flash", {}, id="flashed message"),
        pytest.param("/headers", {"x-note": MARKUP}, id="request header in an argument"),
        pytest.param(f"/echo/{MARKUP}", {}, id="request path"),
    ],
)
def test_values_from_requests_are_escaped_on_the_page_and_in_live_rows(
    anyio_backend: str, monitor: SignalMonitor, path: str, headers: dict[str, str]
) -> None:
    signal = new_signal("headers-seen")
    app = app_with(monitor, *markup_routes(signal))
    test_client = local_client(app, anyio_backend)

    assert test_client.get(path, headers=headers).status_code == 200

    assert_shown_as_text(page_and_live_rows(test_client, monitor, "/signals"))


def test_a_header_set_by_a_request_finished_receiver_is_not_shown_as_markup(
    anyio_backend: str, monitor: SignalMonitor
) -> None:
    app = app_with(monitor, Route("/hello", hello))

    def set_header(sender: Any, response: ResponseHead, **kwargs: Any) -> None:
        response.headers["x-note"] = MARKUP

    request_finished.connect(set_header, app)
    test_client = local_client(app, anyio_backend)

    assert test_client.get("/hello").headers["x-note"] == MARKUP

    html = page_and_live_rows(test_client, monitor, "/signals")
    assert MARKUP not in html
    finished = [row for row in rows(html).values() if signal_of(row) == "request-finished"]
    assert finished
    assert all("&lt;ResponseHead 200&gt;" in row for row in finished)


# 2. Who may see the monitor


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_loopback_clients_may_see_the_monitor(
    anyio_backend: str, monitor: SignalMonitor, host: str
) -> None:
    response = local_client(monitor, anyio_backend, peer=host).get("/")

    assert response.status_code == 200
    assert '<header id="monitor"' in response.text


DENIED = ["10.0.0.1", "192.168.1.20", "::ffff:10.0.0.1", "2001:db8::1", "testclient", None]


@pytest.mark.parametrize("host", DENIED)
def test_other_clients_are_denied_with_how_to_allow_them(
    anyio_backend: str, monitor: SignalMonitor, host: str | None
) -> None:
    response = local_client(monitor, anyio_backend, peer=host).get("/")

    assert response.status_code == 403
    assert "SignalMonitor(allow=...)" in response.text
    assert "<header" not in response.text


@pytest.mark.parametrize("host", DENIED)
def test_other_clients_cannot_open_the_live_view(
    anyio_backend: str, monitor: SignalMonitor, host: str | None
) -> None:
    with (
        pytest.raises(WebSocketDisconnect) as denied,
        live(local_client(monitor, anyio_backend, peer=host), monitor),
    ):
        pass

    assert denied.value.code == 1008


def has_token(connection: Any) -> bool:
    return bool(connection.headers.get("x-token") == "let-me-in")


@pytest.mark.parametrize(
    ("host", "headers", "status"),
    [
        ("203.0.113.9", {"x-token": "let-me-in"}, 200),
        ("203.0.113.9", {}, 403),
        (LOOPBACK, {}, 403),
        (LOOPBACK, {"x-token": "let-me-in"}, 200),
    ],
)
def test_allow_decides_who_sees_the_page(
    anyio_backend: str, host: str, headers: dict[str, str], status: int
) -> None:
    with SignalMonitor(allow=has_token) as monitor:
        response = local_client(monitor, anyio_backend, peer=host).get("/", headers=headers)

    assert response.status_code == status


def test_allow_decides_who_opens_the_live_view(anyio_backend: str) -> None:
    with SignalMonitor(allow=has_token) as monitor:
        remote = local_client(monitor, anyio_backend, peer="203.0.113.9")
        with pytest.raises(WebSocketDisconnect), live(remote, monitor):
            pass
        with live(remote, monitor, headers={"x-token": "let-me-in"}) as websocket:
            signal = new_signal()
            signal.connect(done)
            signal.send("shop")
            assert signal.name in live_html(receive(websocket))


def test_denial_by_allow_does_not_blame_the_client_address(anyio_backend: str) -> None:
    # A loopback client denied by allow= must not be told that the monitor
    # answers "clients on this machine only": it is on this machine.
    with SignalMonitor(allow=lambda connection: False) as monitor:
        response = local_client(monitor, anyio_backend, peer=LOOPBACK).get("/")

    assert response.status_code == 403
    assert "on this machine only" not in response.text


@pytest.mark.parametrize("capacity", [0, -1, 2.5, "10", None, True])
def test_capacity_must_be_an_int_of_at_least_one(capacity: Any) -> None:
    with pytest.raises(ValueError, match="capacity must be an int of at least 1") as error:
        SignalMonitor(capacity=capacity)

    assert repr(capacity) in str(error.value)


@pytest.mark.parametrize("allow", [None, True, "127.0.0.1"])
def test_allow_must_be_a_function(allow: Any) -> None:
    with pytest.raises(TypeError, match="allow must be a function of the connection") as error:
        SignalMonitor(allow=allow)

    assert repr(allow) in str(error.value)


# 3. The ring buffer


@pytest.mark.parametrize("capacity", [1, 3])
def test_only_the_last_capacity_sends_are_kept_and_shown(anyio_backend: str, capacity: int) -> None:
    signal = new_signal()
    signal.connect(done)
    with SignalMonitor(capacity=capacity) as monitor:
        numbers = []
        for i in range(capacity + 3):
            signal.send("shop", i=i)
            numbers.append(monitor.sends[-1].number)
        kept = monitor.sends
        page = local_client(monitor, anyio_backend).get("/").text

    assert [send.number for send in kept] == numbers[-capacity:]
    assert [send.arguments for send in kept] == [{"i": repr(i)} for i in range(3, capacity + 3)]
    assert list(rows(page)) == numbers[-capacity:][::-1]


# 4. The filter

SIGNAL_NAMES = ["order-placed", "order_shipped", "user-created"]
FILTERS = [
    ("", SIGNAL_NAMES),
    ("order", ["order-placed", "order_shipped"]),
    ("ORDER-Placed", ["order-placed"]),
    ("order_placed", ["order-placed"]),
    ("order-shipped", ["order_shipped"]),
    ("  created ", ["user-created"]),
    ("nothing-like-it", []),
]


@pytest.fixture
def named_signals() -> dict[str, NamedSignal]:
    """A signal for each of SIGNAL_NAMES, with a receiver."""
    signals = {name: new_signal(name) for name in SIGNAL_NAMES}
    for signal in signals.values():
        signal.connect(done)
    return signals


@pytest.mark.parametrize(("pattern", "matching"), FILTERS)
def test_filter_lists_the_sends_of_matching_signals(
    anyio_backend: str,
    monitor: SignalMonitor,
    named_signals: dict[str, NamedSignal],
    pattern: str,
    matching: list[str],
) -> None:
    for signal in named_signals.values():
        signal.send("shop")

    page = local_client(monitor, anyio_backend).get("/", params={"signal": pattern}).text

    shown = {signal_of(row) for row in rows(page).values()}
    assert shown == {named_signals[name].name for name in matching}


@pytest.mark.parametrize(("pattern", "matching"), FILTERS)
def test_filter_applies_to_the_connected_receivers_table(
    anyio_backend: str,
    monitor: SignalMonitor,
    named_signals: dict[str, NamedSignal],
    pattern: str,
    matching: list[str],
) -> None:
    page = local_client(monitor, anyio_backend).get("/", params={"signal": pattern}).text

    shown = {name for name, signal in named_signals.items() if signal.name in connected(page)}
    assert shown == set(matching)


def test_filter_with_underscores_finds_lifecycle_signals(
    anyio_backend: str, monitor: SignalMonitor
) -> None:
    test_client = local_client(app_with(monitor, Route("/hello", hello)), anyio_backend)
    test_client.get("/hello")

    page = test_client.get("/signals/", params={"signal": "request_started"}).text

    assert [signal_of(row) for row in rows(page).values()] == ["request-started"]


def test_live_view_sends_only_rows_of_matching_signals(
    anyio_backend: str, monitor: SignalMonitor, named_signals: dict[str, NamedSignal]
) -> None:
    test_client = local_client(monitor, anyio_backend)
    version = page_version(test_client.get("/").text)

    with live(test_client, monitor, after=version, signal="order_placed") as websocket:
        named_signals["user-created"].send("shop")
        named_signals["order-placed"].send("shop")
        message = receive(websocket)

    assert [signal_of(row) for row in rows(live_html(message)).values()] == [
        named_signals["order-placed"].name
    ]


# 6. Watching changes nothing senders and receivers see


@pytest.mark.anyio
@pytest.mark.parametrize("way", ["send", "send_async"])
async def test_results_hold_the_receivers_themselves(way: str) -> None:
    signal = new_signal()
    receivers: list[Callable[..., Any]] = [done] if way == "send" else [done, done_async]
    for receiver in receivers:
        signal.connect(receiver)
    with SignalMonitor():
        results = await send_by(way, signal, "shop")

    assert [receiver for receiver, _ in results] == receivers
    assert all(got is receiver for (got, _), receiver in zip(results, receivers, strict=True))


def test_receivers_for_yields_the_receivers_themselves(monitor: SignalMonitor) -> None:
    signal = new_signal()
    signal.connect(done)
    signal.connect(done_async, "shop")

    found = list(signal.receivers_for("shop"))

    assert len(found) == 2
    assert found[0] is done
    assert found[1] is done_async


@pytest.mark.anyio
async def test_timeout_error_names_the_receiver_itself(monitor: SignalMonitor) -> None:
    signal = new_signal()

    async def stuck(sender: Any, **kwargs: Any) -> None:
        await anyio.sleep_forever()

    signal.connect(stuck)
    signal.connect(done_async)

    with pytest.raises(TimeoutError) as error:
        await signal.send_async("shop", _timeout=0.01)

    assert f"cancelled: {name_of(stuck)}; not called: {name_of(done_async)}" in str(error.value)
    assert "asignals.monitor" not in str(error.value)


@pytest.mark.anyio
async def test_send_on_the_event_loop_names_the_async_receiver_itself(
    monitor: SignalMonitor,
) -> None:
    signal = new_signal()
    signal.connect(done_async)

    with pytest.raises(RuntimeError, match="send_async") as error:
        signal.send("shop")

    assert f"has async receivers ({name_of(done_async)})" in str(error.value)
    assert "asignals.monitor" not in str(error.value)


def test_signals_made_before_and_after_the_monitor_are_watched() -> None:
    before = new_signal()
    before.connect(done)
    with SignalMonitor() as monitor:
        after = new_signal()
        after.connect(done)
        before.send("shop")
        after.send("shop")

    assert len(sends_of(monitor, before)) == len(sends_of(monitor, after)) == 1


@pytest.mark.parametrize("made", ["before", "while"])
def test_closing_the_monitor_brings_back_the_fast_paths(made: str) -> None:
    signal = new_signal() if made == "before" else None
    with SignalMonitor() as monitor:
        if signal is None:
            signal = new_signal()
        signal.connect(done)
        assert signal._sync_handles is None  # watched: every send is planned

    assert signal._sync_handles is not None
    assert signal._async_entries is not None
    assert signal.send("shop") == [(done, "done")]
    assert sends_of(monitor, signal) == []


def test_two_monitors_both_see_a_send() -> None:
    signal = new_signal()
    signal.connect(done)
    with SignalMonitor() as first, SignalMonitor() as second:
        signal.send("shop")

    assert len(sends_of(first, signal)) == len(sends_of(second, signal)) == 1


def test_closing_one_of_two_monitors_keeps_the_other_watching() -> None:
    signal = new_signal()
    signal.connect(done)
    with SignalMonitor() as staying:
        with SignalMonitor() as leaving:
            pass
        signal.send("shop")
        assert signal._sync_handles is None

    assert len(sends_of(staying, signal)) == 1
    assert sends_of(leaving, signal) == []


# 7. The live view


def test_live_view_sends_the_rows_of_sends_made_after_the_page(
    anyio_backend: str, monitor: SignalMonitor
) -> None:
    signal = new_signal()
    signal.connect(done)
    signal.send("shop", n=1)
    test_client = local_client(monitor, anyio_backend)
    page = test_client.get("/").text

    with live(test_client, monitor, after=page_version(page)) as websocket:
        signal.send("shop", n=2)
        message = receive(websocket)

    number = monitor.sends[-1].number
    assert [(row["id"], row["number"]) for row in message["rows"]] == [(f"send-{number}", number)]
    (html,) = rows(message["rows"][0]["html"]).values()
    assert signal.name in html
    assert "<dt>n</dt><dd><code>2</code></dd>" in html
    assert message["version"] > page_version(page)


def test_live_view_sends_a_send_again_when_its_receiver_finishes(
    anyio_backend: str, monitor: SignalMonitor
) -> None:
    signal = new_signal()
    test_client = local_client(monitor, anyio_backend)
    version = page_version(test_client.get("/").text)
    while_running: list[dict[str, Any]] = []

    with live(test_client, monitor, after=version) as websocket:

        def slow(sender: Any, **kwargs: Any) -> None:
            # The send was shown when this receiver was fetched.
            while_running.append(receive(websocket))

        signal.connect(slow)
        signal.send("shop")
        after_it = receive(websocket)

    (first,) = while_running[0]["rows"]
    (again,) = after_it["rows"]
    assert again["id"] == first["id"]
    assert 'class="run done"' not in first["html"]
    assert 'class="run done"' in again["html"]
    assert after_it["version"] > while_running[0]["version"]


def test_live_view_shows_a_receiver_while_it_runs(anyio_backend: str) -> None:
    # The live view runs on the app's event loop, as under uvicorn. It shows
    # a concurrent send when the send fetches its receivers, before their
    # tasks start: it must show them again once they run.
    signal = new_signal()
    release = threading.Event()

    async def slow(sender: Any, **kwargs: Any) -> None:
        await anyio.to_thread.run_sync(release.wait, WAIT)

    signal.connect(slow)

    async def endpoint(request: Request) -> Response:
        await signal.send_async("shop", _concurrent=True)
        return PlainTextResponse("sent")

    shown: list[str] = []  # the receiver's status each time the live view sent the send
    with (
        SignalMonitor() as monitor,
        local_client(app_with(monitor, Route("/", endpoint)), anyio_backend) as test_client,
        live(test_client, monitor, path="/signals/live") as websocket,
        ThreadPoolExecutor(1) as pool,
    ):
        request = pool.submit(test_client.get, "/")
        try:
            with contextlib.suppress(TimeoutError):
                while "running" not in shown:
                    sent = rows(live_html(receive(websocket))).values()
                    shown += [status_of(row) for row in sent if signal_of(row) == signal.name]
        finally:
            release.set()
            request.result(WAIT)

    assert "running" in shown, f"while it ran, the live view showed the receiver as {shown}"


def test_live_view_of_another_monitor_asks_for_a_reload(
    anyio_backend: str, monitor: SignalMonitor
) -> None:
    with live(local_client(monitor, anyio_backend), monitor, instance="another") as websocket:
        assert receive(websocket) == {"reload": True}


def test_live_view_of_a_closed_monitor_says_so(anyio_backend: str) -> None:
    with SignalMonitor() as monitor:
        pass

    with live(local_client(monitor, anyio_backend), monitor) as websocket:
        assert receive(websocket) == {"closed": True}


def test_closing_the_monitor_ends_its_live_views(anyio_backend: str) -> None:
    with (
        SignalMonitor() as monitor,
        live(local_client(monitor, anyio_backend), monitor) as websocket,
    ):
        monitor.close()
        assert receive_raw(websocket)["type"] == "websocket.close"


def test_live_rows_of_new_sends_come_in_number_order(anyio_backend: str) -> None:
    # The page's script adds a row only if its number is above the top row's:
    # each new send must come with a higher number than those shown before
    # it. A background send is made in the request, and runs (and is shown)
    # after the sends the request made meanwhile.
    later = new_signal("in-the-background")
    later.connect(done_async)
    now = new_signal("right-away")
    numbers: list[int] = []  # of the new rows, in the order they came

    with (
        SignalMonitor() as monitor,
        live(local_client(monitor, anyio_backend), monitor) as websocket,
    ):

        def read_until_shown(signal: NamedSignal) -> None:
            while True:
                shown = rows(live_html(receive(websocket)))
                numbers.extend(number for number in shown if number not in numbers)
                if any(signal_of(row) == signal.name for row in shown.values()):
                    return

        def wait_until_shown(sender: Any, **kwargs: Any) -> None:
            # On the app's event loop: the background send cannot run yet.
            in_a_thread(partial(read_until_shown, now))

        now.connect(wait_until_shown)

        async def endpoint(request: Request) -> Response:
            later.send_background("shop")
            now.send("shop")
            return PlainTextResponse("sent")

        with local_client(app_with(monitor, Route("/", endpoint)), anyio_backend) as test_client:
            test_client.get("/")
        read_until_shown(later)

    assert numbers == sorted(numbers), f"new rows came as {numbers}: the page drops late ones"


def in_a_thread(function: Callable[[], None]) -> None:
    """Call ``function`` in a thread of its own and wait for it: an event
    loop's thread cannot call into another TestClient's event loop."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(function).result(timeout=2 * WAIT)


# 8. The monitor's own requests are not shown


def test_requests_for_the_page_are_not_listed(anyio_backend: str, monitor: SignalMonitor) -> None:
    test_client = local_client(app_with(monitor, Route("/hello", hello)), anyio_backend)
    test_client.get("/signals/")
    test_client.get("/hello")

    page = test_client.get("/signals/").text

    requests = {request_of(row) for row in rows(page).values()}
    assert "GET /hello" in requests
    assert [request for request in requests if "/signals" in request] == []


def test_the_live_view_s_own_connection_is_not_listed(
    anyio_backend: str, monitor: SignalMonitor
) -> None:
    test_client = local_client(app_with(monitor, Route("/hello", hello)), anyio_backend)
    version = page_version(test_client.get("/signals/").text)

    with live(test_client, monitor, after=version, path="/signals/live") as websocket:
        test_client.get("/hello")
        message = receive(websocket)
    page = test_client.get("/signals/").text

    requests = {request_of(row) for row in rows(live_html(message)).values()}
    assert "GET /hello" in requests
    assert [request for request in requests if "/signals" in request] == []
    assert [row for row in rows(page).values() if "/signals" in request_of(row)] == []


# 9. The connected receivers


def test_connected_receivers_are_listed_in_calling_order_with_kind_and_senders(
    anyio_backend: str, monitor: SignalMonitor
) -> None:
    signal = new_signal(doc="Sent when an order is placed.\n\nWith the order.")
    shop = Shown("Shop(1)")
    signal.connect(done)
    signal.connect(done_async, "alice")
    signal.connect(fails, shop, to_thread=True)
    signal.connect(fails, "bob", to_thread=True)

    row = connected(local_client(monitor, anyio_backend).get("/").text)[signal.name]

    assert '<div class="doc">Sent when an order is placed.</div>' in row
    listed = re.findall(
        r'<span class="name">([^<]*)</span> <span class="kind">([^<]*)</span> '
        r'<span class="doc">for ([^<]*)</span>',
        row,
    )
    assert listed == [
        (name_of(done), "sync", "any sender"),
        (name_of(done_async), "async", "&#39;alice&#39;"),
        (name_of(fails), "thread", "&#39;bob&#39;, Shop(1)"),
    ]


def test_a_signal_without_receivers_lists_none(anyio_backend: str, monitor: SignalMonitor) -> None:
    signal = new_signal()

    row = connected(local_client(monitor, anyio_backend).get("/").text)[signal.name]

    assert '<span class="none">none</span>' in row

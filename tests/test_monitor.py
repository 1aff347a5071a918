"""asignals.monitor: requests as traces, recorded while someone looks, fed
to every view once, and shown only to whom it should be, as text.

Sections: 1. who may see the monitor (client, proxies, Host, Origin);
2. values as plain text, under a Content-Security-Policy; 3. secrets masked;
4. recording only while someone looks; 5. what a trace holds; 6. the live
views (websocket and server-sent events): snapshot, batched updates, each
send summarised once, the cap, closing; 7. traces from other workers.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from helpers import LOOPBACK, local_client
from markupsafe import Markup
from monitor_pages import (
    WAIT,
    Shown,
    app_with,
    connected,
    done,
    done_async,
    fails,
    hello,
    new_signal,
    receive,
    receive_raw,
    sends_of,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketTestSession
from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect

import asignals
import asignals.monitor
from asignals import (
    ArgumentError,
    InvalidValueError,
    NamedSignal,
    appcontext_popped,
    current_app,
    request_started,
    template_rendered,
)
from asignals.monitor import PROXY_HEADERS, SECRET_PARTS, SignalMonitor, first_sentence
from asignals.monitor._recorder import NEW_TAKEN, SENDS_KEPT

STATIC = Path(asignals.monitor.__file__).parent / "static"


def live(test_client: TestClient, host: str = "localhost", **kwargs: Any) -> WebSocketTestSession:
    """The live view of a monitor mounted at /signals (a full URL: the test
    client's websockets go to ws://testserver otherwise)."""
    return test_client.websocket_connect(f"ws://{host}/signals/live", **kwargs)


def next_update(websocket: WebSocketTestSession) -> dict[str, Any]:
    message = receive(websocket)
    assert message["type"] == "update", message
    return message


def wait_for(websocket: WebSocketTestSession, found: Any) -> dict[str, Any]:
    """Read updates until ``found(trace)`` holds for a trace in one; return
    that trace (each read bounded)."""
    for _ in range(50):
        for trace in next_update(websocket)["traces"]:
            if found(trace):
                return trace  # type: ignore[no-any-return]
    raise AssertionError("no such trace in 50 updates")


def http_trace(path: str, status: int | None = None) -> Any:
    """Whether a trace is the finished request for ``path``."""
    return lambda t: (
        t["kind"] == "http"
        and t["path"] == path
        and t["end"] is not None
        and (status is None or t["status"] == status)
    )


@pytest.fixture
def watched_app(monitor: SignalMonitor) -> Starlette:
    return app_with(monitor, Route("/", hello))


# 1. Who may see the monitor


@pytest.mark.parametrize("path", ["/signals/", "/signals/events"])
def test_loopback_clients_asking_for_localhost_may_see_the_monitor(
    anyio_backend: str, path: str
) -> None:
    monitor = SignalMonitor()
    app = app_with(monitor, Route("/", hello))
    if path.endswith("events"):
        monitor.close()  # the stream says so, and ends
    response = local_client(app, anyio_backend).get(path)

    assert response.status_code == 200


@pytest.mark.parametrize("header", PROXY_HEADERS)
@pytest.mark.parametrize("allow", ["default", "custom"])
def test_a_request_through_a_proxy_is_refused_whatever_its_client(
    anyio_backend: str, header: str, allow: str
) -> None:
    monitor = SignalMonitor() if allow == "default" else SignalMonitor(allow=lambda c: True)
    test_client = local_client(app_with(monitor, Route("/", hello)), anyio_backend)

    response = test_client.get("/signals/", headers={header: "127.0.0.1"})

    assert response.status_code == 403
    assert f"has a {header!r} header" in response.text
    assert "SignalMonitor(proxied=True, allow=...)" in response.text
    with pytest.raises(WebSocketDisconnect) as refused, live(test_client, headers={header: "x"}):
        pass
    assert (refused.value.code, refused.value.reason) == (1008, "not allowed")


def test_proxied_true_serves_requests_through_a_proxy_that_allow_lets_in(
    anyio_backend: str,
) -> None:
    monitor = SignalMonitor(proxied=True, allow=lambda c: c.headers.get("x-user") == "ada")
    test_client = local_client(app_with(monitor), anyio_backend, peer="203.0.113.9")
    forwarded = {"x-forwarded-for": "198.51.100.1"}

    assert test_client.get("/signals/", headers={**forwarded, "x-user": "ada"}).status_code == 200
    assert test_client.get("/signals/", headers=forwarded).status_code == 403


@pytest.mark.parametrize("allow", ["default", "custom"])
def test_the_host_check_holds_whatever_allow_says(anyio_backend: str, allow: str) -> None:
    monitor = SignalMonitor() if allow == "default" else SignalMonitor(allow=lambda c: True)
    test_client = local_client(app_with(monitor), anyio_backend, host="rebound.example")

    response = test_client.get("/signals/")

    assert response.status_code == 403
    assert "for 'rebound.example'" in response.text
    assert "SignalMonitor(hosts=[...])" in response.text


@pytest.mark.parametrize(
    ("hosts", "host", "allowed"),
    [
        (["monitor.example"], "monitor.example", True),
        (["monitor.example"], "localhost", False),
        (["*.example"], "a.example", True),
        (["*.example"], "example", False),
        (["*"], "anything.test", True),
    ],
)
def test_hosts_names_what_the_monitor_answers_to(
    anyio_backend: str, hosts: list[str], host: str, allowed: bool
) -> None:
    monitor = SignalMonitor(hosts=hosts)
    test_client = local_client(app_with(monitor), anyio_backend, host=host)

    assert (test_client.get("/signals/").status_code == 200) is allowed


def test_other_clients_are_refused_with_how_to_let_them_in(anyio_backend: str) -> None:
    test_client = local_client(app_with(SignalMonitor()), anyio_backend, peer="203.0.113.9")

    response = test_client.get("/signals/")

    assert response.status_code == 403
    assert "came from 203.0.113.9" in response.text
    assert "SignalMonitor(allow=...)" in response.text


def test_a_refusal_by_allow_names_allow(anyio_backend: str) -> None:
    def staff_only(connection: Any) -> bool:
        return False

    response = local_client(app_with(SignalMonitor(allow=staff_only)), anyio_backend).get(
        "/signals/"
    )

    assert response.status_code == 403
    assert "allow function (test_monitor.test_a_refusal_by_allow_names_allow.<locals>" in (
        response.text
    )


@pytest.mark.parametrize("path", ["live", "events"])
@pytest.mark.parametrize(
    ("headers", "said"),
    [
        ({"origin": "http://evil.example"}, "came from a page at http://evil.example"),
        # An image or script tag of another site's page makes a request
        # with no Origin: the browser's Sec-Fetch-Site says where it came from.
        ({"sec-fetch-site": "cross-site"}, "came from another site (cross-site)"),
    ],
    ids=["Origin", "Sec-Fetch-Site"],
)
def test_a_live_view_opened_by_another_site_s_page_is_refused(
    anyio_backend: str, path: str, headers: dict[str, str], said: str
) -> None:
    test_client = local_client(app_with(SignalMonitor()), anyio_backend)
    if path == "live":
        with pytest.raises(WebSocketDisconnect) as refused, live(test_client, headers=headers):
            pass
        assert refused.value.code == 1008
    else:
        response = test_client.get("/signals/events", headers=headers)
        assert response.status_code == 403
        assert said in response.text
    # The page itself may be opened from a link on another site.
    assert test_client.get("/signals/", headers={"sec-fetch-site": "cross-site"}).status_code == 200


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"capacity": 0}, InvalidValueError),
        ({"capacity": True}, InvalidValueError),
        ({"max_views": 0}, InvalidValueError),
        ({"allow": "everyone"}, ArgumentError),
        ({"hosts": "localhost"}, ArgumentError),
        ({"hosts": [""]}, ArgumentError),
        ({"secrets": "password"}, ArgumentError),
        ({"secrets": ["password", ""]}, ArgumentError),
        ({"bridge": "redis://localhost"}, ArgumentError),
    ],
)
def test_bad_options_are_refused_with_what_to_pass(options: dict[str, Any], error: type) -> None:
    with pytest.raises(error) as raised:
        SignalMonitor(**options)

    assert str(raised.value)


# 2. Values as plain text, under a Content-Security-Policy


def page_of(test_client: TestClient) -> tuple[str, str]:
    """The monitor's page and its nonce (checked to be the CSP's)."""
    response = test_client.get("/signals/")
    policy = response.headers["content-security-policy"]
    nonce = re.search(r"script-src 'nonce-([\w-]+)'", policy)
    assert nonce is not None, policy
    assert f"style-src 'nonce-{nonce[1]}'" in policy
    assert "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    return response.text, nonce[1]


def test_the_page_s_only_script_and_style_carry_the_policy_s_nonce(
    anyio_backend: str, watched_app: Starlette
) -> None:
    page, nonce = page_of(local_client(watched_app, anyio_backend))

    assert re.findall(r"<script[^>]*>", page) == [f'<script nonce="{nonce}">']
    assert re.findall(r"<style[^>]*>", page) == [f'<style nonce="{nonce}">']
    assert not re.search(r"\son[a-z]+\s*=", page), "an inline event handler"
    assert " style=" not in page


def test_the_page_s_script_never_turns_data_into_html() -> None:
    script = (STATIC / "monitor.js").read_text()

    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "Function(",
        "srcdoc",
        "createContextualFragment",
        "DOMParser",
    ):
        assert sink not in script
    assert not re.search(r"\.(href|src|action)\s*=", script)
    # Timers take functions, never code as text.
    assert re.findall(r"setTimeout\((\w+)", script) == ["connect"]
    # Attributes set are fixed names with fixed or computed-not-data values.
    assert sorted(set(re.findall(r'setAttribute\("([\w-]+)"', script))) == ["aria-pressed", "role"]
    # Data reaches the page through textContent (in el()) and text nodes only.
    assert "textContent = String(text)" in script


class Hostile(str):
    """A str that says it is markup: a template would trust it."""

    def __html__(self) -> str:
        return str(self)


HOSTILE = '<img src=x onerror="window.pwned=1">'


def test_values_that_say_they_are_markup_are_kept_as_plain_str(monitor: SignalMonitor) -> None:
    signal = NamedSignal(Hostile(f"hostile-{HOSTILE}"))

    def receiver(sender: Any, **kwargs: Any) -> None:
        pass

    receiver.__qualname__ = Hostile(HOSTILE)
    signal.connect(receiver)
    signal.send(Hostile(HOSTILE), **{Hostile("key" + HOSTILE): Markup(HOSTILE)})

    [trace] = [t for t in monitor._recorder.traces.values() if t.data["sends"]]
    [send] = trace.data["sends"]

    def strings(value: Any) -> Iterator[Any]:
        if isinstance(value, dict):
            for key, item in value.items():
                yield key
                yield from strings(item)
        elif isinstance(value, list):
            for item in value:
                yield from strings(item)
        elif isinstance(value, str):
            yield value

    found = list(strings(trace.data))
    assert found
    assert all(type(s) is str for s in found)
    assert send["signal"] == f"hostile-{HOSTILE}"
    assert send["receivers"][0]["name"].endswith(HOSTILE)
    assert send["args"][0][0] == "key" + HOSTILE


def test_the_connected_receivers_table_shows_markup_as_text(
    anyio_backend: str, watched_app: Starlette
) -> None:
    signal = NamedSignal(Hostile(f"hostile-{next(iter('x'))}-{id(object())}"), Markup(HOSTILE))

    def receiver(sender: Any, **kwargs: Any) -> None:
        pass

    receiver.__qualname__ = Hostile(HOSTILE)
    signal.connect(receiver, sender=Hostile(HOSTILE))

    page, _ = page_of(local_client(watched_app, anyio_backend))

    assert HOSTILE not in page
    assert "&lt;img src=x onerror=&#34;window.pwned=1&#34;&gt;" in page
    assert signal.connected_to  # (kept alive to here)


@pytest.mark.parametrize(
    ("doc", "sentence"),
    [
        ("Sent when a thing happens. More about it.", "Sent when a thing happens."),
        (
            "Sent right before the response,\nwith ``response``. It has more.",
            "Sent right before the response, with response.",
        ),
        ("Sent (when this; or that) then. More.", "Sent (when this; or that) then."),
        ("One line only", "One line only"),
        ("First paragraph\nwraps here.\n\nSecond one.", "First paragraph wraps here."),
        (None, ""),
    ],
)
def test_a_signal_s_description_is_its_doc_s_first_sentence(doc: str | None, sentence: str) -> None:
    assert first_sentence(doc) == sentence


def test_the_connected_receivers_table_lists_lifecycle_signals_with_whole_sentences(
    anyio_backend: str, watched_app: Starlette
) -> None:
    page, _ = page_of(local_client(watched_app, anyio_backend))

    row = connected(page)["request-finished"]
    assert (
        "Sent right before the response starts to go to the client, with response: it has "
        ".status_code and .headers (a Starlette MutableHeaders), and headers a receiver "
        "sets reach the client.</div>"
    ) in row
    row = connected(page)["got-background-exception"]
    assert "Sent when a receiver of a background send raised, with exception: the" in row


# 3. Secrets masked


def test_values_under_secret_looking_names_are_masked(monitor: SignalMonitor) -> None:
    signal = new_signal()
    signal.connect(done)
    signal.send(
        "shop",
        password="hunter2",
        api_key="k-123",
        form={"user": "ada", "session_id": "s-1", "nested": {"Authorization": "Bearer t"}},
        url="redis://user:pw@host/0",
        note="fine",
    )

    [send] = sends_of(monitor, signal)
    text = json.dumps(send.data)
    for secret in ("hunter2", "k-123", "s-1", "Bearer t", ":pw@"):
        assert secret not in text
    assert send.arguments["password"] == "***"
    assert send.arguments["note"] == "'fine'"
    assert "'user': 'ada'" in send.arguments["form"]


def test_secrets_sets_the_names_that_are_masked() -> None:
    signal = new_signal()
    signal.connect(done)
    with SignalMonitor(secrets=(*SECRET_PARTS, "ssn")) as monitor:
        signal.send("shop", ssn="078-05-1120", person={"SSN": "078-05-1120"}, token="t")
    with SignalMonitor(secrets=["pin"]) as only_pins:
        signal.send("shop", pin="1234", token="t")

    [send] = sends_of(monitor, signal)
    assert (send.arguments["ssn"], send.arguments["token"]) == ("***", "***")
    assert "078-05-1120" not in send.arguments["person"]
    [send] = sends_of(only_pins, signal)
    assert (send.arguments["pin"], send.arguments["token"]) == ("***", "'t'")


def test_a_template_s_context_is_summarised_and_masked(
    anyio_backend: str, monitor: SignalMonitor, tmp_path: Path
) -> None:
    from asignals.templating import Jinja2Templates

    (tmp_path / "page.html").write_text("{{ user }}")
    templates = Jinja2Templates(directory=tmp_path)

    async def page(request: Request) -> Response:
        return templates.TemplateResponse(
            request, "page.html", {"user": "ada", "password": "hunter2", "rows": list(range(10**5))}
        )

    with template_rendered.connected_to(done):
        local_client(app_with(monitor, Route("/page", page)), anyio_backend).get("/page")

    [send] = sends_of(monitor, "template-rendered")
    context = send.arguments["context"]
    assert "hunter2" not in context
    assert "'password': ***" in context
    assert "'rows': [0, 1, 2, 3, 4, 5, 6, 7, ...]" in context
    assert len(context) <= 400


@pytest.mark.parametrize(
    "value",
    [
        b"x" * 100_000_000,
        {i: i for i in range(1_000_000)},
        set(range(1_000_000)),
        "y" * 50_000_000,
    ],
    ids=["100 MB of bytes", "a dict of 1M keys", "a set of 1M items", "50M characters"],
)
def test_huge_arguments_are_summarised_in_a_few_hundred_characters(
    monitor: SignalMonitor, value: Any
) -> None:
    signal = new_signal()
    signal.connect(done)
    signal.send("shop", value=value)

    [send] = sends_of(monitor, signal)
    assert len(send.arguments["value"]) <= 400


def test_deep_nesting_is_summarised_a_few_levels_down(monitor: SignalMonitor) -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    signal = new_signal()
    signal.connect(done)
    signal.send("shop", deep=deep)

    [send] = sends_of(monitor, signal)
    assert send.arguments["deep"] == "[[[[...]]]]"


# 4. Recording only while someone looks


def test_a_mounted_monitor_records_nothing_while_nobody_looks(anyio_backend: str) -> None:
    monitor = SignalMonitor()
    test_client = local_client(app_with(monitor, Route("/", hello)), anyio_backend)

    assert test_client.get("/").text == "hello"

    assert not monitor.is_recording
    assert monitor.traces() == []
    assert request_started._observers is None


def test_a_live_view_records_while_it_is_open(anyio_backend: str) -> None:
    monitor = SignalMonitor()
    test_client = local_client(app_with(monitor, Route("/", hello)), anyio_backend)
    test_client.get("/")
    with live(test_client) as ws:
        assert receive(ws)["traces"] == []
        assert monitor.is_recording
        test_client.get("/")
        trace = wait_for(ws, http_trace("/"))

    assert (trace["method"], trace["status"]) == ("GET", 200)
    assert not monitor.is_recording
    assert request_started._observers is None
    test_client.get("/")
    assert len(monitor.traces()) == 1  # the request made while the view was open


def test_recording_records_during_the_block_only() -> None:
    signal = new_signal()
    signal.connect(done)
    monitor = SignalMonitor()
    signal.send("before")
    with monitor.recording():
        signal.send("during")
    signal.send("after")

    assert [send.sender for send in sends_of(monitor, signal)] == ["'during'"]
    assert not monitor.is_recording


def test_record_always_records_until_closed() -> None:
    signal = new_signal()
    signal.connect(done)
    monitor = SignalMonitor(record_always=True)
    try:
        signal.send("shop")
        assert monitor.is_recording
    finally:
        monitor.close()
    signal.send("closed")

    assert [send.sender for send in sends_of(monitor, signal)] == ["'shop'"]
    assert not monitor.is_recording


def test_a_lease_from_another_worker_ends_at_the_next_send_after_it_ran_out() -> None:
    signal = new_signal()
    signal.connect(done)
    monitor = SignalMonitor()
    monitor._watched_from("another-worker")
    assert monitor.is_recording
    signal.send("leased")
    monitor._remote_until = 0.0  # the lease ran out

    signal.send("after")

    assert not monitor.is_recording
    assert [send.sender for send in sends_of(monitor, signal)] == ["'leased'"]


# 5. What a trace holds


def test_a_request_is_a_trace_of_its_sends_with_method_path_status_and_duration(
    anyio_backend: str, monitor: SignalMonitor
) -> None:
    with request_started.connected_to(done):
        local_client(app_with(monitor, Route("/", hello)), anyio_backend).get("/?q=1")

    [trace] = monitor.traces()
    assert (trace["kind"], trace["method"], trace["path"], trace["status"]) == (
        "http",
        "GET",
        "/",
        200,
    )
    assert trace["worker"] == monitor.worker
    assert trace["start"] <= trace["end"]
    assert not trace["failed"]
    signals = [send["signal"] for send in trace["sends"]]
    assert signals[0] == "appcontext-pushed"
    assert signals[-1] == "appcontext-popped"
    assert "request-started" in signals
    assert "request-finished" in signals
    [started] = [send for send in trace["sends"] if send["signal"] == "request-started"]
    assert started["sender"] == "Starlette"
    assert started["receivers"][0]["status"] == "done"


def test_a_request_that_failed_is_a_failed_trace_with_its_exception(
    anyio_backend: str, monitor: SignalMonitor
) -> None:
    async def boom(request: Request) -> Response:
        raise RuntimeError("out of stock")

    app = app_with(monitor, Route("/boom", boom))
    assert (
        local_client(app, anyio_backend, raise_server_exceptions=False).get("/boom").status_code
        == 500
    )

    [trace] = monitor.traces()
    assert (trace["status"], trace["failed"]) == (500, True)
    assert trace["error"] == "RuntimeError: out of stock"


def test_a_failed_receiver_makes_its_trace_failed(
    anyio_backend: str, monitor: SignalMonitor
) -> None:
    signal = new_signal()
    signal.connect(fails)

    async def endpoint(request: Request) -> Response:
        with contextlib.suppress(ValueError):
            signal.send("shop")
        return PlainTextResponse("ok")

    local_client(app_with(monitor, Route("/", endpoint)), anyio_backend).get("/")

    [trace] = monitor.traces()
    assert (trace["status"], trace["failed"]) == (200, True)
    [send] = [s for s in trace["sends"] if s["signal"] == signal.name]
    assert send["receivers"][0]["error"] == "ValueError: boom"
    assert send["error"] == "ValueError: boom"


def test_a_websocket_is_a_trace(anyio_backend: str, monitor: SignalMonitor) -> None:
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close()

    test_client = local_client(app_with(monitor, WebSocketRoute("/ws", echo)), anyio_backend)
    with test_client.websocket_connect("/ws") as websocket:
        assert receive_raw(websocket)["text"] == "hi"

    [trace] = [t for t in monitor.traces() if t["kind"] == "websocket"]
    assert (trace["method"], trace["path"]) == ("WS", "/ws")
    assert trace["sends"][-1]["signal"] == "appcontext-popped"


def test_a_background_send_and_what_its_receivers_send_are_in_the_request_s_trace(
    anyio_backend: str, monitor: SignalMonitor
) -> None:
    report, audit = new_signal("report"), new_signal("audit")
    audit.connect(done)

    released: list[anyio.Event] = []

    async def write_report(sender: Any, **kwargs: Any) -> None:
        # Until the request is over.
        with anyio.fail_after(WAIT):
            await released[0].wait()
        audit.send("report")

    report.connect(write_report)

    async def endpoint(request: Request) -> Response:
        released.append(anyio.Event())
        report.send_background(current_app._get_current_object(), n=1)
        return PlainTextResponse("queued")

    async def release() -> None:
        released[0].set()

    with local_client(app_with(monitor, Route("/", endpoint)), anyio_backend) as test_client:
        assert test_client.get("/").text == "queued"
        test_client.portal.call(release)  # type: ignore[union-attr]
    # (Leaving the client ran the lifespan's end, which waits for the send.)

    [trace] = [t for t in monitor.traces() if t["kind"] == "http"]
    [sent] = [s for s in trace["sends"] if s["signal"] == report.name]
    [audited] = [s for s in trace["sends"] if s["signal"] == audit.name]
    assert sent["mode"] == "background"
    assert sent["receivers"][0]["status"] == "done"
    assert audited["parent"] == sent["n"]
    assert audited["receivers"][0]["status"] == "done"
    # The background context's own sends are there too, made by the send.
    pushed = [s for s in trace["sends"] if s["parent"] == sent["n"]]
    assert "appcontext-pushed" in [s["signal"] for s in pushed]
    assert sent["end"] >= sent["receivers"][0]["end"]
    # The request ended when its own context was popped, not the send's.
    [popped] = [
        s for s in trace["sends"] if s["signal"] == "appcontext-popped" and s["parent"] is None
    ]
    assert trace["end"] == popped["end"]


def test_a_send_outside_any_request_is_a_trace_of_its_own(monitor: SignalMonitor) -> None:
    signal = new_signal()
    signal.connect(done_async)

    async def main() -> None:
        await signal.send_async(Shown("job"), _concurrent=True)

    anyio.run(main)

    [trace] = monitor.traces()
    assert trace["kind"] == "send"
    assert [s["signal"] for s in trace["sends"]] == [signal.name]
    assert trace["end"] is not None


def test_a_trace_keeps_its_first_sends_and_counts_the_rest(monitor: SignalMonitor) -> None:
    signal = new_signal()
    signal.connect(done)
    with asignals.app_context(Starlette()):
        for n in range(SENDS_KEPT + 5):
            signal.send("shop", n=n)

    [trace] = [t for t in monitor.traces() if any(s["signal"] == signal.name for s in t["sends"])]
    assert len(trace["sends"]) == SENDS_KEPT
    assert trace["more"] >= 5


def test_only_the_last_capacity_traces_are_kept() -> None:
    signal = new_signal()
    signal.connect(done)
    with SignalMonitor(capacity=3) as monitor:
        for n in range(5):
            signal.send(n)

    assert [t["sends"][0]["sender"] for t in monitor.traces()] == ["2", "3", "4"]


def test_requests_for_the_monitor_itself_are_not_traced(anyio_backend: str) -> None:
    monitor = SignalMonitor()
    test_client = local_client(app_with(monitor, Route("/", hello)), anyio_backend)
    test_client.get("/signals/")  # the monitor learns where it is mounted
    with live(test_client) as ws:
        receive(ws)
        test_client.get("/signals/")
        test_client.get("/")
        trace = wait_for(ws, http_trace("/"))

    assert trace["path"] == "/"
    assert [t["path"] for t in monitor.traces()] == ["/"]


def test_appcontext_popped_ends_the_request_it_belongs_to(
    anyio_backend: str, monitor: SignalMonitor
) -> None:
    with appcontext_popped.connected_to(done):
        local_client(app_with(monitor, Route("/", hello)), anyio_backend).get("/")

    [trace] = monitor.traces()
    assert trace["sends"][-1]["signal"] == "appcontext-popped"
    assert trace["end"] == trace["sends"][-1]["end"]


# 6. The live views


def test_a_live_view_gets_what_is_kept_then_the_changes(anyio_backend: str) -> None:
    monitor = SignalMonitor()
    test_client = local_client(app_with(monitor, Route("/", hello)), anyio_backend)
    with monitor.recording():
        test_client.get("/")
        with live(test_client) as ws:
            snapshot = receive(ws)
            assert snapshot["type"] == "snapshot"
            assert [t["path"] for t in snapshot["traces"]] == ["/"]
            assert (snapshot["worker"], snapshot["bridged"]) == (monitor.worker, False)
            test_client.get("/?again")
            trace = wait_for(ws, http_trace("/"))
    assert trace["id"] != snapshot["traces"][0]["id"]


def test_changes_made_together_come_in_one_update(anyio_backend: str) -> None:
    monitor = SignalMonitor()
    signal = new_signal()
    signal.connect(done)
    test_client = local_client(app_with(monitor), anyio_backend)
    with live(test_client) as ws:
        receive(ws)

        def twenty_sends() -> None:  # on the event loop, with no await between
            for n in range(20):
                signal.send(n)

        ws.portal.call(_in_loop, twenty_sends)
        update = next_update(ws)

    assert len(update["traces"]) == 20


def test_under_load_a_batch_takes_the_newest_new_traces_and_every_change(
    anyio_backend: str,
) -> None:
    monitor = SignalMonitor()
    signal = new_signal()
    signal.connect(done)
    test_client = local_client(app_with(monitor), anyio_backend)
    with live(test_client) as ws:
        receive(ws)
        ws.portal.call(_in_loop, lambda: signal.send("first"))
        [first] = next_update(ws)["traces"]

        def many_sends() -> None:  # on the event loop, with no await between
            for n in range(NEW_TAKEN + 10):
                signal.send(n)
            monitor._recorder.traces[first["id"]].data["failed"] = True
            monitor._recorder._touch(monitor._recorder.traces[first["id"]])

        ws.portal.call(_in_loop, many_sends)
        update = next_update(ws)

    senders = [t["sends"][0]["sender"] for t in update["traces"] if t["id"] != first["id"]]
    assert senders == [str(n) for n in range(10, NEW_TAKEN + 10)]
    assert update["left_out"] == 10
    # The trace the page had, changed, came again.
    [again] = [t for t in update["traces"] if t["id"] == first["id"]]
    assert again["failed"] is True


async def _in_loop(function: Any) -> None:
    function()


def test_each_send_is_summarised_once_whatever_the_number_of_views(anyio_backend: str) -> None:
    summarised: list[int] = []

    class Counted:
        def __repr__(self) -> str:
            summarised.append(1)
            return "Counted()"

    monitor = SignalMonitor()
    signal = new_signal()
    signal.connect(done)
    test_client = local_client(app_with(monitor), anyio_backend)
    with live(test_client) as one, live(test_client) as two, live(test_client) as three:
        for view in (one, two, three):
            receive(view)
        signal.send("shop", value=Counted())
        texts = []
        for view in (one, two, three):
            # (Each view is served on an event loop of its own by the test
            # client: one may get the send half done first.)
            trace = wait_for(view, lambda t: t["end"] is not None)
            texts.append(json.dumps(trace))
        with live(test_client) as late:
            [kept] = receive(late)["traces"]

    assert len(summarised) == 1
    assert texts[0] == texts[1] == texts[2] == json.dumps(kept)
    assert kept["sends"][0]["args"] == [["value", "Counted()"]]


def test_views_beyond_max_views_are_refused_with_what_to_do(anyio_backend: str) -> None:
    monitor = SignalMonitor(max_views=1)
    test_client = local_client(app_with(monitor), anyio_backend)
    with live(test_client) as first:
        receive(first)
        with live(test_client) as second:
            refused = receive(second)

    assert refused["type"] == "refused"
    assert "at most 1 open pages at once" in refused["message"]
    assert "SignalMonitor(max_views=...)" in refused["message"]


def test_closing_the_monitor_ends_its_views_which_say_so(anyio_backend: str) -> None:
    monitor = SignalMonitor()
    test_client = local_client(app_with(monitor), anyio_backend)
    with live(test_client) as ws:
        receive(ws)
        monitor.close()
        assert receive(ws) == {"type": "closed"}
    with live(test_client) as ws:
        assert receive(ws) == {"type": "closed"}
    assert 'data-closed="yes"' in test_client.get("/signals/").text


def test_the_page_says_when_it_shows_this_worker_only(
    anyio_backend: str, watched_app: Starlette, monitor: SignalMonitor
) -> None:
    page, _ = page_of(local_client(watched_app, anyio_backend))

    assert "This worker only (" in page
    assert "SignalMonitor(bridge=...)" in page


@pytest.mark.anyio
async def test_server_sent_events_feed_a_view_without_websockets() -> None:
    """The /events stream, driven as a server without websockets would: a
    snapshot, an update, and the end when the browser goes away."""
    monitor = SignalMonitor()
    signal = new_signal()
    signal.connect(done)
    sent: list[Message] = []
    arrived = anyio.Event()
    gone = anyio.Event()

    async def receive_message() -> Message:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send_message(message: Message) -> None:
        sent.append(message)
        arrived.set()

    async def next_event() -> dict[str, Any]:
        nonlocal arrived
        while True:
            bodies = [m for m in sent if m["type"] == "http.response.body" and m["body"]]
            if bodies:
                body = bodies[0]["body"]
                sent.remove(bodies[0])
                assert body.startswith(b"data: ")
                assert body.endswith(b"\n\n")
                return json.loads(body[6:])  # type: ignore[no-any-return]
            await arrived.wait()
            arrived = anyio.Event()

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/events",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"localhost")],
        "client": (LOOPBACK, 50000),
        "server": ("localhost", 80),
        "scheme": "http",
    }
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(monitor, scope, receive_message, send_message)
            assert (await next_event())["type"] == "snapshot"
            start = sent[0]
            assert start["type"] == "http.response.start"
            assert start["status"] == 200
            headers = dict(start["headers"])
            assert headers[b"content-type"] == b"text/event-stream; charset=utf-8"
            assert b"content-length" not in headers
            signal.send("shop")
            update = await next_event()
            assert update["traces"][0]["sends"][0]["signal"] == signal.name
            gone.set()
    assert not monitor.is_recording


# 7. Traces from other workers


THEIRS: dict[str, Any] = {
    "id": "other:1:ab/1",
    "worker": "other:1:ab",
    "kind": "http",
    "method": "GET",
    "path": "/there",
    "status": 200,
    "error": None,
    "start": 1.0,
    "end": 2.0,
    "failed": False,
    "from": None,
    "more": 0,
    "sends": [
        {
            "n": 1,
            "signal": "request-started",
            "sender": "Starlette",
            "mode": "sync",
            "start": 1.0,
            "end": 1.5,
            "args": [["n", "1"]],
            "status": "done",
            "error": None,
            "parent": None,
            "published": None,
            "receivers": [
                {
                    "name": "app.started",
                    "kind": "sync",
                    "status": "done",
                    "start": 1.1,
                    "end": 1.2,
                    "error": None,
                }
            ],
            "more_receivers": 0,
        }
    ],
}


def test_traces_from_another_worker_are_kept_and_shown(anyio_backend: str) -> None:
    monitor = SignalMonitor()
    test_client = local_client(app_with(monitor), anyio_backend)
    theirs = THEIRS
    with live(test_client) as ws:
        receive(ws)
        ws.portal.call(_in_loop, lambda: monitor._received("other:1:ab", json.dumps([theirs])))
        update = next_update(ws)

    assert update["traces"] == [theirs]


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        json.dumps({"id": "x"}),
        json.dumps([{"id": "other:1:ab/1", "worker": "other:1:ab"}]),
        json.dumps([{**THEIRS, "id": "mine/1"}]),
        json.dumps([{**THEIRS, "start": float("nan")}]),
        json.dumps([{**THEIRS, "sends": [1]}]),
        json.dumps([{**THEIRS, "kind": "bridged", "from": [1, "x"]}]),
        json.dumps([{**THEIRS, "sends": [{**THEIRS["sends"][0], "args": [["a"]]}]}]),
        json.dumps([{**THEIRS, "sends": [{**THEIRS["sends"][0], "receivers": [{"name": 1}]}]}]),
    ],
    ids=[
        "not JSON",
        "not a list",
        "fields missing",
        "another worker's id",
        "NaN",
        "a send that is not one",
        "a bad link",
        "a bad argument",
        "a bad receiver",
    ],
)
def test_malformed_traces_from_another_worker_are_dropped_and_logged(
    text: str, caplog: pytest.LogCaptureFixture
) -> None:
    monitor = SignalMonitor()

    with monitor.recording():  # as with a page open
        monitor._received("other:1:ab", text)

    assert monitor.traces() == []
    assert "The signal monitor dropped" in caplog.text


def test_traces_from_another_worker_are_not_read_while_no_page_is_open() -> None:
    monitor = SignalMonitor()

    monitor._received("other:1:ab", json.dumps([THEIRS]))
    assert monitor.traces() == []
    with monitor.recording():
        monitor._received("other:1:ab", json.dumps([THEIRS]))
    assert monitor.traces() == [THEIRS]


# 8. The docs' examples

DOCS = Path(__file__).parent.parent / "docs" / "monitor.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.DOTALL)


@pytest.mark.parametrize("number", range(len(EXAMPLES)))
def test_the_docs_examples_run(number: int) -> None:
    """Each in a fresh interpreter: one shares the monitor's signals through
    a bridge, which then keeps them for the process."""
    assert len(EXAMPLES) == 4
    done = subprocess.run(
        [sys.executable, "-c", EXAMPLES[number]],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=DOCS.parent.parent,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_the_monitor_s_own_sends_from_other_workers_leave_no_trace(
    anyio_backend: str, monitor: SignalMonitor
) -> None:
    """A worker asked for its traces runs the monitor's own receiver as a
    background send (as the bridge hands it one): neither that send nor the
    sends of its context are traced, or they would crowd out the requests."""

    async def endpoint(request: Request) -> Response:
        asignals.monitor.pages_open.send_background("another-worker")
        return PlainTextResponse("asked")

    with local_client(app_with(monitor, Route("/", endpoint)), anyio_backend) as test_client:
        assert test_client.get("/").text == "asked"

    traces = [t for t in monitor.traces() if t["kind"] != "lifespan"]
    assert [t["kind"] for t in traces] == ["http"]
    assert not any(s["parent"] is not None for s in traces[0]["sends"])


# 9. What the review found


def test_each_change_is_encoded_once_whatever_the_number_of_views(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each view gets the same batches; a trace is encoded once per batch it
    is in, not once per view. (The test client serves each websocket on an
    event loop of its own, so a batch may catch the send half done.)"""
    encoded: list[str] = []
    encode = asignals.monitor._recorder._json

    def counting(data: dict[str, Any]) -> str:
        encoded.append(data["id"])
        return encode(data)

    monkeypatch.setattr(asignals.monitor._recorder, "_json", counting)
    monitor = SignalMonitor()
    signal = new_signal()
    signal.connect(done)
    test_client = local_client(app_with(monitor), anyio_backend)
    with live(test_client) as one, live(test_client) as two, live(test_client) as three:
        for view in (one, two, three):
            receive(view)
        one.portal.call(_in_loop, lambda: signal.send("shop"))
        got = []
        for view in (one, two, three):
            updates = [next_update(view)]
            while updates[-1]["traces"][0]["end"] is None:
                updates.append(next_update(view))
            got.append(updates)

    assert got[0] == got[1] == got[2]
    assert encoded == [update["traces"][0]["id"] for update in got[0]]


def test_a_context_that_outlives_its_trace_starts_another(monitor: SignalMonitor) -> None:
    """The lifespan, a long websocket, an app context held open: once its
    trace was cleared (or let go beyond capacity), its next sends make a new
    trace rather than vanish."""
    signal = new_signal()
    signal.connect(done)
    with asignals.app_context(Starlette()):
        signal.send("before")
        monitor.clear()
        signal.send("after")
        signal.send("again")

    [trace] = [t for t in monitor.traces() if t["kind"] == "context"]
    assert [s["sender"] for s in trace["sends"] if s["signal"] == signal.name] == [
        "'after'",
        "'again'",
    ]


@pytest.mark.anyio
async def test_a_cancelled_send_is_cancelled_not_failed(monitor: SignalMonitor) -> None:
    signal = new_signal()
    started = anyio.Event()

    async def waits(sender: Any, **kwargs: Any) -> None:
        started.set()
        await anyio.sleep_forever()

    signal.connect(waits)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(signal.send_async, "shop")
            await started.wait()
            tasks.cancel_scope.cancel()

    [trace] = monitor.traces()
    [send] = trace["sends"]
    assert (send["status"], send["receivers"][0]["status"]) == ("cancelled", "cancelled")
    assert trace["failed"] is False


def test_secrets_in_exception_messages_are_masked(monitor: SignalMonitor) -> None:
    signal = new_signal()

    def refuses(sender: Any, **kwargs: Any) -> None:
        raise ValueError("login failed: password=hunter2, token: abc123 for redis://u:pw@host/0")

    signal.connect(refuses)
    with pytest.raises(ValueError, match="hunter2"):
        signal.send("shop")

    [send] = sends_of(monitor, signal)
    error = send.receivers[0].error
    assert error is not None
    assert error.startswith("ValueError: login failed: password=***")
    for secret in ("hunter2", "abc123", ":pw@"):
        assert secret not in error
    assert send.error == error


def test_a_send_keeps_its_first_arguments_and_receivers_and_counts_the_rest(
    monitor: SignalMonitor,
) -> None:
    from asignals.monitor._recorder import ARGUMENTS_KEPT, RECEIVERS_KEPT

    signal = new_signal()
    receivers = []
    for n in range(RECEIVERS_KEPT + 3):

        def receiver(sender: Any, n: int = n, **kwargs: Any) -> int:
            return n

        receivers.append(receiver)
        signal.connect(receiver)
    signal.connect(fails)
    with pytest.raises(ValueError, match="boom"):
        signal.send("shop", **{f"a{n}": n for n in range(ARGUMENTS_KEPT + 5)})

    [trace] = monitor.traces()
    [send] = trace["sends"]
    assert len(send["args"]) == ARGUMENTS_KEPT + 1
    assert send["args"][-1] == ["…", "5 more arguments"]
    assert len(send["receivers"]) == RECEIVERS_KEPT
    assert send["more_receivers"] == 4
    assert trace["failed"] is True  # the failing receiver is beyond those kept


def test_a_send_handed_over_by_a_bridge_is_linked_with_its_context_s_sends(
    anyio_backend: str, monitor: SignalMonitor
) -> None:
    """As a bridge hands a send from another process to the receivers here
    (``_tracing.handing`` set while the background send starts)."""
    from asignals import _tracing

    cleared, audit = new_signal("cleared"), new_signal("audit")
    audit.connect(done)

    async def clear(sender: Any, **kwargs: Any) -> None:
        audit.send("cleared")

    cleared.connect(clear)

    async def endpoint(request: Request) -> Response:
        token = _tracing.handing.set(("other:1:ab", 7))
        try:
            cleared.send_background("demo")
        finally:
            _tracing.handing.reset(token)
        return PlainTextResponse("handed")

    with local_client(app_with(monitor, Route("/", endpoint)), anyio_backend) as test_client:
        assert test_client.get("/").text == "handed"

    [bridged] = [t for t in monitor.traces() if t["kind"] == "bridged"]
    assert bridged["from"] == ["other:1:ab", 7]
    signals = [(s["signal"], s["parent"]) for s in bridged["sends"]]
    assert signals[0] == (cleared.name, None)
    assert (audit.name, 1) in signals
    assert ("appcontext-pushed", 1) in signals
    [request] = [t for t in monitor.traces() if t["kind"] == "http"]
    assert cleared.name not in [s["signal"] for s in request["sends"]]


def test_a_request_found_to_be_the_monitor_s_own_is_taken_back_from_the_views() -> None:
    monitor = SignalMonitor()
    signal = new_signal()
    signal.connect(done)
    with monitor.recording(), asignals.app_context(Starlette()):
        signal.send("shop")
        [sent], _, _ = monitor._recorder.take()
        monitor._recorder.forget_current()
        assert monitor._recorder.take() == ([], 0, [json.loads(sent)["id"]])
    assert monitor.traces() == []


BRIDGED_CHUNKS = """
import json
from asignals.bridge import RedisBridge
from asignals.monitor import SignalMonitor, traces_changed
import asignals

bridge = RedisBridge("redis://127.0.0.1:1/0", max_message_bytes=6_000)
monitor = SignalMonitor(bridge=bridge)
signal = asignals.signal("big")
signal.connect(lambda sender, **kwargs: None)
with monitor.recording():
    for n in range(30):
        signal.send(n, text="x" * 300, more="y" * 300)
    signal.send("huge", **{f"a{n}": "z" * 1000 for n in range(20)})
sent = []
traces_changed.connect(lambda sender, traces: sent.append(traces), weak=False)
monitor._watched_from("another-worker", full=True)
messages = [message for _, _, message, _ in bridge._queue]
assert all(len(message) <= 6_000 for message in messages), [len(m) for m in messages]
got = [trace for text in sent for trace in json.loads(text)]
assert len(sent) > 1, len(sent)
senders = sorted(t["sends"][0]["sender"] for t in got)
assert senders == sorted(str(n) for n in range(30)), senders
print("ok", len(sent))
"""


def test_traces_sent_to_other_workers_fit_the_bridge_s_messages() -> None:
    """In a fresh interpreter: the monitor's signals, once shared through a
    bridge, stay with it for the process. The bridge is not started: its
    queue holds what it would publish. The trace too large for a message
    is left out, and logged."""
    done = subprocess.run(
        [sys.executable, "-c", BRIDGED_CHUNKS],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok ")
    assert "left out a trace of" in done.stderr

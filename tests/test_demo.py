"""The demo app (examples/demo/app.py), in process with Starlette's
TestClient: its form and flash messages, its custom signals and their
receivers, its sync endpoint, background send and failing request, its
request_finished header, and the monitor it mounts at /signals.

The end-to-end test, under uvicorn in a browser, is test_demo_browser.py."""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
import threading
import urllib.request
from collections.abc import Coroutine, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import pytest
from helpers import LOOPBACK, Gate, ReleasedAtShutdown, client
from markupsafe import escape
from monitor_pages import SendView, all_sends
from serving import DEMO_APP, uvicorn_process
from starlette.testclient import TestClient

from asignals import got_request_exception
from asignals.testing import record_signals

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo" / "app.py"
# How a client on this machine asks for the monitor: from a loopback address,
# for a loopback host. Anyone else is refused.
LOCAL: dict[str, Any] = {"peer": LOOPBACK, "host": "localhost"}
REFUSED: dict[str, dict[str, Any]] = {
    "another-machine": {"peer": "192.0.2.1", "host": "localhost"},
    "another-host-name": {"peer": LOOPBACK, "host": "example.com"},
}
# The bound of every wait in these tests: reached only when they fail.
WAIT = 10.0
FLASH = re.compile(r'<p class="flash ([^"]*)" role="status">(.*?)</p>', re.DOTALL)


@pytest.fixture(scope="module")
def demo() -> Iterator[ModuleType]:
    """The demo module, loaded from its file, its monitor recording (every
    signal is watched until it is closed). Importing it gives the ``demo``
    and ``asignals`` loggers a handler: both are undone at the end."""
    loggers = [logging.getLogger(name) for name in ("demo", "asignals")]
    saved = [(logger, list(logger.handlers), logger.level) for logger in loggers]
    spec = importlib.util.spec_from_file_location("asignals_demo_app", DEMO)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        with module.monitor.recording():
            yield module
    finally:
        monitor = getattr(module, "monitor", None)
        if monitor is not None:
            monitor.close()
        for logger, handlers, level in saved:
            logger.handlers[:] = handlers
            logger.setLevel(level)


def flashes(page: str) -> list[tuple[str, str]]:
    """The flashed messages on a page, as (category, text) pairs, the text
    as it is in the HTML (escaped)."""
    return [(category, text) for category, text in FLASH.findall(page)]


def listed(page: str, list_id: str) -> str:
    """The HTML of the ``<ul id=list_id>`` list on a page."""
    match = re.search(rf'<ul id="{list_id}">(.*?)</ul>', page, re.DOTALL)
    assert match is not None, f"no list {list_id!r} on the page"
    return match.group(1)


def sends_of(demo: ModuleType, signal: str, after: int = 0) -> list[SendView]:
    """The sends of ``signal`` that the demo's monitor kept, after the first
    ``after`` sends it kept, oldest first."""
    return [s for s in all_sends(demo.monitor)[after:] if s.signal == signal]


def last_number(demo: ModuleType) -> int:
    """How many sends the demo's monitor kept."""
    return len(all_sends(demo.monitor))


def runs(send: SendView) -> dict[str, tuple[str, str]]:
    """A watched send's receivers: short name -> (kind, status)."""
    return {run.name.rsplit(".", 1)[-1]: (run.kind, run.status) for run in send.receivers}


class Overlap:
    """Stands in for the demo module's ``anyio``, whose ``sleep`` only its
    slow receivers call: instead of sleeping, a receiver notes that it entered
    and waits until all of ``together`` entered (for at most WAIT seconds),
    then notes that it left. Receivers that run one after another leave
    before the next enters."""

    def __init__(self, demo: ModuleType, *together: str) -> None:
        self.demo = demo
        self.together = set(together)
        self.entered: set[str] = set()
        self.events: list[tuple[str, str]] = []
        self.while_all_in: dict[str, tuple[str, str]] | None = None
        self.all_in: anyio.Event | None = None

    def sleep(self, delay: float) -> Coroutine[Any, Any, None]:
        # Called (not yet awaited) in the receiver's own frame.
        return self.hold(sys._getframe(1).f_code.co_name)

    async def hold(self, name: str) -> None:
        if self.all_in is None:
            self.all_in = anyio.Event()
        self.events.append(("enter", name))
        self.entered.add(name)
        if self.together <= self.entered:
            # What the monitor says of the send while they all are in.
            self.while_all_in = runs(sends_of(self.demo, "message-posted")[-1])
            self.all_in.set()
        with anyio.move_on_after(WAIT):
            await self.all_in.wait()
        self.events.append(("leave", name))


# The form and its flash messages


def test_posted_form_flashes_across_the_redirect(demo: ModuleType, anyio_backend: str) -> None:
    browser = client(demo.app, anyio_backend)
    name = f"Ada {anyio_backend}"

    posted = browser.post(
        "/messages", data={"name": name, "message": "Hello!"}, follow_redirects=False
    )
    first = browser.get("/")
    second = browser.get("/")

    assert posted.status_code == 303
    assert posted.headers["location"] == "/"
    assert ("success", f"Thanks, {name}: your message was posted.") in flashes(first.text)
    assert flashes(second.text) == []


def test_posted_message_is_listed_on_the_home_page(demo: ModuleType, anyio_backend: str) -> None:
    browser = client(demo.app, anyio_backend)
    name = f"Grace {anyio_backend}"

    browser.post("/messages", data={"name": name, "message": "Listed, please."})
    page = browser.get("/").text

    assert f"<li><strong>{name}</strong>: Listed, please.</li>" in listed(page, "messages")


def test_empty_message_flashes_an_error_and_posts_nothing(
    demo: ModuleType, anyio_backend: str
) -> None:
    browser = client(demo.app, anyio_backend)

    with record_signals(demo.message_posted) as sent:
        posted = browser.post(
            "/messages", data={"name": "Ada", "message": "  \n "}, follow_redirects=False
        )
    page = browser.get("/").text

    assert posted.status_code == 303
    assert flashes(page) == [("error", "Write a message first.")]
    assert sent == []


# The custom signal and its receivers


def test_message_posted_runs_notify_audit_and_store(demo: ModuleType, anyio_backend: str) -> None:
    browser = client(demo.app, anyio_backend)
    before = last_number(demo)

    browser.post("/messages", data={"name": "Ada", "message": "Hello!"}, follow_redirects=False)
    page = browser.get("/").text

    [send] = sends_of(demo, "message-posted", before)
    assert runs(send) == {
        "notify": ("async", "done"),
        "audit": ("async", "done"),
        "store": ("sync", "done"),
    }
    # And the endpoint got each one's return value.
    [(_, report)] = [f for f in flashes(page) if f[0] == "message"]
    assert report.startswith(
        "message-posted ran notify (notified), audit (audited), store (stored) in "
    )


def test_message_posted_runs_notify_and_audit_concurrently(
    demo: ModuleType, anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    overlap = Overlap(demo, "notify", "audit")
    monkeypatch.setattr(demo, "anyio", overlap)

    response = client(demo.app, anyio_backend).post(
        "/messages", data={"name": "Ada", "message": "Hello!"}, follow_redirects=False
    )

    assert response.status_code == 303
    # Both entered before either left: they ran at the same time.
    assert sorted(overlap.events[:2]) == [("enter", "audit"), ("enter", "notify")]
    assert sorted(overlap.events[2:]) == [("leave", "audit"), ("leave", "notify")]
    # And the monitor saw them both running, after the sync one.
    assert overlap.while_all_in == {
        "notify": ("async", "running"),
        "audit": ("async", "running"),
        "store": ("sync", "done"),
    }


# The sync endpoint


def test_sync_page_sends_page_viewed_from_a_worker_thread(
    demo: ModuleType, anyio_backend: str
) -> None:
    seen: list[tuple[str, bool]] = []

    def note_thread(sender: Any, **kwargs: Any) -> None:
        try:
            anyio.from_thread.check_cancelled()  # only anyio's worker threads can
        except RuntimeError:
            worker = False
        else:
            worker = True
        seen.append((threading.current_thread().name, worker))

    with demo.page_viewed.connected_to(note_thread):
        page = client(demo.app, anyio_backend).get("/sync").text

    [(thread, worker)] = seen
    assert worker
    assert f'<code id="thread">{escape(thread)}</code>' in page


def test_sync_page_runs_page_vieweds_async_receiver(demo: ModuleType, anyio_backend: str) -> None:
    before = last_number(demo)
    views = demo.counts["sync views"]

    response = client(demo.app, anyio_backend).get("/sync")

    assert response.status_code == 200
    [send] = sends_of(demo, "page-viewed", before)
    assert runs(send) == {"count_view": ("async", "done")}
    assert demo.counts["sync views"] == views + 1
    assert f"Sync page views so far: {views + 1}." in response.text


# The background send


def test_report_is_built_in_the_background_and_drained_at_shutdown(
    demo: ModuleType, anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The report's receiver is held until the shutdown begins.
    gate = Gate()
    monkeypatch.setattr(demo, "anyio", gate)
    app = ReleasedAtShutdown(demo.app, gate)
    name = f"the {anyio_backend} reporter"

    with TestClient(app, backend=anyio_backend) as browser:  # type: ignore[arg-type]
        response = browser.post("/reports", data={"name": name}, follow_redirects=False)
        started = gate.entered.wait(WAIT)
        built_before_shutdown = [line for line in demo.reports if f"report for {name}:" in line]
    built = [line for line in demo.reports if f"report for {name}:" in line]

    assert response.status_code == 303
    assert started
    assert built_before_shutdown == []
    assert len(built) == 1


# The failing request


def test_failing_request_answers_500_and_sends_got_request_exception(
    demo: ModuleType, anyio_backend: str
) -> None:
    with record_signals(got_request_exception) as sent:
        response = client(demo.app, anyio_backend, raise_server_exceptions=False).get("/fail")

    assert response.status_code == 500
    assert "This request failed" in response.text
    [failure] = sent
    assert failure.sender is demo.app
    exception = failure.kwargs["exception"]
    assert isinstance(exception, RuntimeError)
    assert str(exception) == "this request fails on purpose"


# The request_finished receiver's header


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/", 200),
        ("POST", "/messages", 303),
        ("GET", "/sync", 200),
        ("POST", "/reports", 303),
        ("GET", "/fail", 500),
        ("GET", "/missing", 404),
        ("GET", "/signals/", 200),
    ],
)
def test_every_response_says_how_long_it_took(
    demo: ModuleType, anyio_backend: str, method: str, path: str, status: int
) -> None:
    with client(demo.app, anyio_backend, raise_server_exceptions=False, **LOCAL) as browser:
        response = browser.request(
            method, path, data={"name": "Ada", "message": "Hi"}, follow_redirects=False
        )

    assert response.status_code == status
    assert re.fullmatch(r"\d+\.\dms", response.headers.get("x-handled-in", ""))


def test_refused_monitor_response_says_how_long_it_took(
    demo: ModuleType, anyio_backend: str
) -> None:
    response = client(demo.app, anyio_backend, **REFUSED["another-machine"]).get("/signals/")

    assert response.status_code == 403
    assert re.fullmatch(r"\d+\.\dms", response.headers.get("x-handled-in", ""))


# The monitor


def test_monitor_is_mounted_at_signals_for_loopback_clients(
    demo: ModuleType, anyio_backend: str
) -> None:
    browser = client(demo.app, anyio_backend, **LOCAL)
    browser.post("/messages", data={"name": "Ada", "message": "Hello!"}, follow_redirects=False)
    [send] = sends_of(demo, "message-posted")[-1:]

    response = browser.get("/signals/")

    assert response.status_code == 200
    assert 'id="live-status"' in response.text
    assert send.request == "POST /messages"


@pytest.mark.parametrize("who", REFUSED)
def test_monitor_refuses_others(demo: ModuleType, anyio_backend: str, who: str) -> None:
    response = client(demo.app, anyio_backend, **REFUSED[who]).get("/signals/")

    assert response.status_code == 403
    said = "clients on this machine only" if who == "another-machine" else "for 'example.com'"
    assert said in response.text
    assert 'id="requests"' not in response.text


# Markup in what visitors post


MARKUP_NAME = "<b>Mallory</b>"
MARKUP_MESSAGE = "<script>alert('hi')</script> & <i>more</i>"


def test_flash_escapes_markup(demo: ModuleType, anyio_backend: str) -> None:
    browser = client(demo.app, anyio_backend)

    # Following the redirect to the page that shows the flash.
    page = browser.post("/messages", data={"name": MARKUP_NAME, "message": MARKUP_MESSAGE}).text

    assert ("success", f"Thanks, {escape(MARKUP_NAME)}: your message was posted.") in flashes(page)
    assert MARKUP_NAME not in page


def test_messages_and_audit_trail_escape_markup(demo: ModuleType, anyio_backend: str) -> None:
    browser = client(demo.app, anyio_backend)

    page = browser.post("/messages", data={"name": MARKUP_NAME, "message": MARKUP_MESSAGE}).text

    name = escape(MARKUP_NAME)
    assert f"<li><strong>{name}</strong>: {escape(MARKUP_MESSAGE)}</li>" in listed(page, "messages")
    assert re.search(
        rf"<li>[\d:]+ {re.escape(name)} posted {len(MARKUP_MESSAGE)} characters</li>",
        listed(page, "audit"),
    )
    assert MARKUP_NAME not in page
    assert "<script>alert" not in page


def test_monitor_escapes_markup_that_visitors_posted(demo: ModuleType, anyio_backend: str) -> None:
    browser = client(demo.app, anyio_backend, **LOCAL)
    browser.post("/messages", data={"name": MARKUP_NAME, "message": MARKUP_MESSAGE})

    page = browser.get("/signals/").text

    # The page has no data in it: its script shows the traces as text (see
    # test_demo_browser.py). They are plain strs, as they were posted.
    assert MARKUP_NAME not in page
    assert "<script>alert" not in page
    [send] = sends_of(demo, "message-posted")[-1:]
    assert send.sender == repr(MARKUP_NAME)
    assert send.arguments["message"] == repr(MARKUP_MESSAGE)
    # As recorded, before any JSON: plain strs.
    recorded = [
        s
        for trace in demo.monitor._recorder.traces.values()
        for s in trace.data["sends"]
        if s["signal"] == "message-posted"
    ][-1]
    assert type(recorded["sender"]) is str
    assert all(type(part) is str for pair in recorded["args"] for part in pair)


# Under uvicorn, as test_demo_browser.py serves it


def test_demo_under_uvicorn_serves_its_page_and_the_monitor_to_this_machine() -> None:
    with uvicorn_process(DEMO_APP) as server:
        with urllib.request.urlopen(f"{server.url}/", timeout=10) as page:
            page_status, handled_in = page.status, page.headers.get("x-handled-in", "")
        with urllib.request.urlopen(f"{server.url}/signals/", timeout=10) as monitor:
            monitor_status, monitor_page = monitor.status, monitor.read().decode()

    assert page_status == 200
    assert re.fullmatch(r"\d+\.\dms", handled_in)
    assert monitor_status == 200
    assert 'id="live-status"' in monitor_page
    assert server.process.returncode is not None

"""The demo end to end: served by uvicorn on 127.0.0.1, driven in headless
Chromium (Debian's ``chromium``) with Playwright for Python.

Each test starts its own server: they post the guestbook's form and see the
flash after the redirect; they open the monitor beforehand (never reloaded),
see each request arrive live and open its waterfall; they check that values
a visitor posted show as text and run no script, that the page breaks none
of its Content-Security-Policy, that search, pause and clear work, that the
page works at 420 px wide and over server-sent events where uvicorn serves
no websockets. Two take screenshots (1400 and 420 px wide), and with
``ASIGNALS_SCREENSHOT=1`` keep them as docs/monitor.png and
docs/monitor-narrow.png.

Run only these tests with ``python -m pytest tests/test_demo_browser.py``
(or ``-k browser``)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from chromium import WAIT_MS, launched
from playwright.sync_api import Browser, BrowserContext, Locator, Page, ViewportSize, expect
from serving import DEMO_APP, ROOT, UvicornProcess, uvicorn_process

VIEWPORT: ViewportSize = {"width": 1400, "height": 900}

NAME = "Ada"
MESSAGE = "Hello from the browser, in <b>bold</b>?"


@pytest.fixture
def server() -> Iterator[UvicornProcess]:
    """The demo, serving. Its output is printed at the end (pytest shows it
    for a failed test)."""
    with uvicorn_process(DEMO_APP) as demo:
        yield demo


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched() as chromium:
        yield chromium


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A browser context with JavaScript, its waits bounded."""
    expect.set_options(timeout=WAIT_MS)
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(WAIT_MS)
    try:
        yield context
    finally:
        context.close()


def open_live_monitor(context: BrowserContext, server: UvicornProcess) -> Page:
    """The monitor in a new page, once its live view connected. The page
    notes that it loaded once (a reload would forget it), and keeps what the
    browser said about it (any Content-Security-Policy violation)."""
    monitor = context.new_page()
    said: list[str] = []
    monitor.on("console", lambda message: said.append(f"{message.type}: {message.text}"))
    monitor.on("pageerror", lambda error: said.append(f"pageerror: {error}"))
    monitor.goto(f"{server.url}/signals/")
    expect(monitor.locator("#live-status")).to_have_text("live")
    monitor.evaluate("window.loadedOnce = true")
    monitor.said = said  # type: ignore[attr-defined]
    return monitor


def was_not_reloaded(monitor: Page) -> bool:
    return monitor.evaluate("window.loadedOnce === true") is True


def nothing_said(monitor: Page) -> None:
    """The browser reported no error on the page: no script error, no
    Content-Security-Policy violation."""
    assert monitor.said == []  # type: ignore[attr-defined]


def post_message(page: Page, server: UvicornProcess, name: str, message: str) -> None:
    """Post the guestbook's form from ``page``, and follow the redirect."""
    page.goto(f"{server.url}/")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Message").fill(message)
    with page.expect_navigation():
        page.get_by_role("button", name="Post", exact=True).click()
    assert page.url == f"{server.url}/"


def request_row(monitor: Page, request: str, status: str | None = None) -> Locator:
    """The monitor's row for ``request`` ("POST /messages"), once done (with
    ``status``, if given)."""
    method, path = request.split(" ", 1)
    rows = monitor.locator("#requests tbody tr").filter(
        has=monitor.locator("td.what", has_text=re.compile(f"^{re.escape(method + path)}$"))
    )
    if status is not None:
        rows = rows.filter(has=monitor.locator("td.status", has_text=re.compile(f"^{status}$")))
    return rows


def send_rows(monitor: Page, signal: str) -> Locator:
    """The waterfall's rows for the sends of ``signal``."""
    return monitor.locator("#waterfall .row.send").filter(
        has=monitor.locator(".signal", has_text=re.compile(f"^{re.escape(signal)}$"))
    )


def receiver_rows(monitor: Page, name: str) -> Locator:
    return monitor.locator("#waterfall .row.receiver").filter(
        has=monitor.locator(".name", has_text=re.compile(rf"\.{re.escape(name)}$"))
    )


def open_trace(monitor: Page, request: str, status: str) -> None:
    row = request_row(monitor, request, status)
    expect(row).to_have_count(1)
    row.click()
    expect(monitor.locator("#detail-title")).to_have_text(request)


def test_browser_page_has_the_x_handled_in_header(
    context: BrowserContext, server: UvicornProcess
) -> None:
    page = context.new_page()

    response = page.goto(f"{server.url}/")

    assert response is not None
    assert response.status == 200
    assert re.fullmatch(r"\d+\.\dms", response.headers.get("x-handled-in", ""))


def test_browser_guestbook_flashes_after_the_redirect(
    context: BrowserContext, server: UvicornProcess
) -> None:
    page = context.new_page()

    post_message(page, server, NAME, MESSAGE)

    expect(page.locator("p.flash.success")).to_have_text(
        f"Thanks, {NAME}: your message was posted."
    )
    # The message shows as text, its markup not made into elements.
    expect(page.locator("#messages li")).to_have_text([f"{NAME}: {MESSAGE}"])
    expect(page.locator("#messages b")).to_have_count(0)
    # The flash is gone from the next page.
    page.reload()
    expect(page.locator("p.flash")).to_have_count(0)


def test_browser_monitor_shows_a_post_as_a_waterfall_live(
    context: BrowserContext, server: UvicornProcess
) -> None:
    monitor = open_live_monitor(context, server)
    expect(monitor.locator("#requests tbody tr")).to_have_count(0)

    post_message(context.new_page(), server, NAME, MESSAGE)

    # The requests made after the page loaded came live: the form's page,
    # the post, the redirect's page.
    expect(request_row(monitor, "GET /", "200")).to_have_count(2)
    open_trace(monitor, "POST /messages", "303")
    posted = send_rows(monitor, "message-posted")
    expect(posted).to_have_count(1)
    expect(posted.locator(".meta")).to_have_text("'Ada' · concurrent · 3 receivers")
    for name in ("notify", "audit", "store"):
        expect(receiver_rows(monitor, name).locator(".badge.done")).to_have_count(1)
    # Concurrent receivers side by side in time: the slow two overlap.
    notify = receiver_rows(monitor, "notify").locator(".bar").bounding_box()
    audit = receiver_rows(monitor, "audit").locator(".bar").bounding_box()
    assert notify is not None
    assert audit is not None
    assert audit["x"] < notify["x"] + notify["width"]
    assert notify["x"] < audit["x"] + audit["width"]
    # Sends with no receiver are hidden until asked for.
    expect(send_rows(monitor, "appcontext-pushed")).to_have_count(0)
    monitor.get_by_label("sends with no receiver").check()
    expect(send_rows(monitor, "appcontext-pushed")).to_have_count(1)
    expect(send_rows(monitor, "message-flashed")).to_have_count(2)
    # The arguments, collapsed, then shown.
    arguments = posted.locator("details.args")
    expect(arguments.locator("dd")).to_be_hidden()
    arguments.locator("summary").click()
    expect(arguments.locator("dd")).to_have_text([repr(MESSAGE)])
    assert was_not_reloaded(monitor)
    nothing_said(monitor)


HOSTILE_NAME = '<img src=x onerror="window.pwned = 1">'
HOSTILE_MESSAGE = "<script>window.pwned = 2</script><b>bold</b>"


def test_browser_values_a_visitor_posted_show_as_text_and_run_no_script(
    context: BrowserContext, server: UvicornProcess
) -> None:
    monitor = open_live_monitor(context, server)

    post_message(context.new_page(), server, HOSTILE_NAME, HOSTILE_MESSAGE)

    open_trace(monitor, "POST /messages", "303")
    posted = send_rows(monitor, "message-posted")
    posted.locator("details.args summary").click()
    expect(posted.locator("dd")).to_have_text([repr(HOSTILE_MESSAGE)])
    expect(posted.locator(".meta")).to_contain_text(repr(HOSTILE_NAME))
    expect(monitor.locator("#waterfall img, #waterfall script, #waterfall b")).to_have_count(0)
    assert monitor.evaluate("window.pwned") is None
    nothing_said(monitor)


def test_browser_a_failed_request_is_red_with_its_exception(
    context: BrowserContext, server: UvicornProcess
) -> None:
    monitor = open_live_monitor(context, server)

    context.new_page().goto(f"{server.url}/fail")

    row = request_row(monitor, "GET /fail", "500")
    expect(row).to_have_class(re.compile(r"\bfailed\b"))
    assert row.locator("td.status").evaluate("e => getComputedStyle(e).color") == "rgb(198, 40, 40)"
    open_trace(monitor, "GET /fail", "500")
    expect(monitor.locator("#detail-error")).to_have_text(
        "RuntimeError: this request fails on purpose"
    )
    expect(send_rows(monitor, "got-request-exception")).to_have_count(1)
    nothing_said(monitor)


def test_browser_a_background_send_is_in_the_request_that_made_it(
    context: BrowserContext, server: UvicornProcess
) -> None:
    monitor = open_live_monitor(context, server)
    guestbook = context.new_page()
    guestbook.goto(f"{server.url}/")

    with guestbook.expect_navigation():
        guestbook.get_by_role("button", name="Build a report in the background").click()

    expect(guestbook.locator("p.flash")).to_contain_text("Report requested")
    open_trace(monitor, "POST /reports", "303")
    report = send_rows(monitor, "report-requested")
    expect(report.locator(".meta")).to_contain_text("background · 1 receiver")
    # It ran after the response went out, and is still shown in its request.
    expect(receiver_rows(monitor, "build_report").locator(".badge.done")).to_have_count(1)
    nothing_said(monitor)


def test_browser_search_pause_and_clear(context: BrowserContext, server: UvicornProcess) -> None:
    monitor = open_live_monitor(context, server)
    guestbook = context.new_page()
    post_message(guestbook, server, NAME, MESSAGE)
    guestbook.goto(f"{server.url}/fail")
    expect(request_row(monitor, "GET /fail", "500")).to_have_count(1)
    rows = monitor.locator("#requests tbody tr")

    search = monitor.get_by_label("Search by signal, path or status")
    search.fill("message_posted")  # a signal, with _ or -
    expect(rows).to_have_count(1)
    expect(request_row(monitor, "POST /messages")).to_have_count(1)
    search.fill("500")
    expect(rows).to_have_count(1)
    expect(request_row(monitor, "GET /fail")).to_have_count(1)
    search.fill("/fai")
    expect(rows).to_have_count(1)
    search.fill("")
    expect(request_row(monitor, "POST /messages")).to_have_count(1)
    expect(request_row(monitor, "GET /fail")).to_have_count(1)

    shown = rows.count()
    monitor.get_by_role("button", name="Pause").click()
    expect(monitor.locator("#live-status")).to_have_text("paused")
    guestbook.goto(f"{server.url}/sync")
    expect(monitor.locator("#live-status")).to_contain_text("updates waiting")
    expect(rows).to_have_count(shown)
    monitor.get_by_role("button", name="Resume").click()
    expect(request_row(monitor, "GET /sync", "200")).to_have_count(1)

    monitor.get_by_role("button", name="Clear").click()
    expect(rows).to_have_count(0)
    guestbook.goto(f"{server.url}/sync")
    expect(rows).to_have_count(1)
    expect(request_row(monitor, "GET /sync", "200")).to_have_count(1)
    assert was_not_reloaded(monitor)
    nothing_said(monitor)


def test_browser_monitor_says_it_needs_javascript_without_it(
    browser: Browser, server: UvicornProcess
) -> None:
    static = browser.new_context(java_script_enabled=False, viewport=VIEWPORT)
    try:
        static.set_default_timeout(WAIT_MS)
        plain = static.new_page()

        plain.goto(f"{server.url}/signals/")

        expect(plain.get_by_text("needs JavaScript for it")).to_be_visible()
    finally:
        static.close()


def test_browser_monitor_goes_live_over_server_sent_events_without_websockets(
    context: BrowserContext,
) -> None:
    with uvicorn_process(DEMO_APP, "--ws", "none") as server:
        monitor = open_live_monitor(context, server)
        context.new_page().goto(f"{server.url}/sync")
        expect(request_row(monitor, "GET /sync", "200")).to_have_count(1)
        said = list(monitor.said)  # type: ignore[attr-defined]
        monitor.close()
    # The browser reports the websocket it could not open, then uses events.
    assert said, "the browser said nothing of the websocket it could not open"
    assert all("WebSocket" in line for line in said), said
    assert '"GET /signals/events HTTP/1.1" 200' in server.output


def test_browser_monitor_at_420_px_wide_has_no_sideways_scroll(
    context: BrowserContext, server: UvicornProcess
) -> None:
    monitor = open_live_monitor(context, server)
    monitor.set_viewport_size({"width": 420, "height": 900})
    post_message(context.new_page(), server, NAME, MESSAGE)

    open_trace(monitor, "POST /messages", "303")

    assert monitor.evaluate("document.documentElement.scrollWidth") <= 420
    expect(send_rows(monitor, "message-posted")).to_be_in_viewport()
    nothing_said(monitor)


def screenshot_of_a_real_run(
    context: BrowserContext, server: UvicornProcess, width: int, tmp_path: Path, name: str
) -> None:
    """The monitor as a newcomer sees it, unfiltered: the demo's page, a
    post and its redirect, a failed request, a report; the post open."""
    monitor = open_live_monitor(context, server)
    monitor.set_viewport_size({"width": width, "height": 900})
    guestbook = context.new_page()
    post_message(guestbook, server, NAME, "Hello from the browser!")
    guestbook.goto(f"{server.url}/fail")
    guestbook.goto(f"{server.url}/")
    with guestbook.expect_navigation():
        guestbook.get_by_role("button", name="Build a report in the background").click()
    expect(request_row(monitor, "POST /reports", "303")).to_have_count(1)
    open_trace(monitor, "POST /messages", "303")
    expect(receiver_rows(monitor, "notify").locator(".badge.done")).to_have_count(1)
    send_rows(monitor, "message-posted").locator("details.args summary").click()
    assert was_not_reloaded(monitor)
    nothing_said(monitor)

    monitor.bring_to_front()
    shot = monitor.screenshot(path=tmp_path / name, animations="disabled", full_page=True)

    assert shot.startswith(b"\x89PNG\r\n\x1a\n")
    assert (tmp_path / name).read_bytes() == shot
    if os.environ.get("ASIGNALS_SCREENSHOT") == "1":
        docs = ROOT / "docs"
        docs.mkdir(exist_ok=True)
        (docs / name).write_bytes(shot)


def test_browser_screenshot_of_the_monitor_1400_px_wide(
    context: BrowserContext, server: UvicornProcess, tmp_path: Path
) -> None:
    screenshot_of_a_real_run(context, server, 1400, tmp_path, "monitor.png")


def test_browser_screenshot_of_the_monitor_420_px_wide(
    context: BrowserContext, server: UvicornProcess, tmp_path: Path
) -> None:
    screenshot_of_a_real_run(context, server, 420, tmp_path, "monitor-narrow.png")

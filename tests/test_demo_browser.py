"""The demo end to end: served by uvicorn on 127.0.0.1, driven in headless
Chromium (Debian's ``chromium``) with Playwright for Python.

Each test starts its own server: they post the guestbook's form and see the
flash after the redirect, and see the monitor, opened beforehand and never
reloaded, receive the rows of the sends live over its websocket; they use
the monitor's filter and its view without JavaScript. One takes a screenshot
of the monitor, and with ``ASIGNALS_SCREENSHOT=1`` keeps it as
docs/monitor.png (the README's image).

Run only these tests with ``python -m pytest tests/test_demo_browser.py``
(or ``-k browser``)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving import DEMO_APP, ROOT, UvicornProcess, uvicorn_process

HOW_TO_RUN = (
    "the demo's browser test needs Debian's Chromium and Playwright for Python: "
    "run `apt-get install chromium` and `pip install -e '.[test]'`"
)

try:
    from playwright.sync_api import (
        Browser,
        BrowserContext,
        Locator,
        Page,
        ViewportSize,
        expect,
        sync_playwright,
    )
except ImportError:
    pytest.skip(f"Playwright is not installed; {HOW_TO_RUN}", allow_module_level=True)

CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip(f"chromium is not installed; {HOW_TO_RUN}", allow_module_level=True)

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# A bound, reached only when something hangs.
WAIT_MS = 15_000
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
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=WAIT_MS
        )
        try:
            yield chromium
        finally:
            chromium.close()


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


def open_live_monitor(context: BrowserContext, server: UvicornProcess, query: str = "") -> Page:
    """The monitor in a new page, once its websocket connected. The page
    notes that it loaded once (a reload would forget it)."""
    monitor = context.new_page()
    monitor.goto(f"{server.url}/signals/{query}")
    expect(monitor.locator("#live-status")).to_have_text("live")
    monitor.evaluate("window.loadedOnce = true")
    return monitor


def was_not_reloaded(monitor: Page) -> bool:
    return monitor.evaluate("window.loadedOnce === true") is True


def post_message(page: Page, server: UvicornProcess, name: str, message: str) -> None:
    """Post the guestbook's form from ``page``, and follow the redirect."""
    page.goto(f"{server.url}/")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Message").fill(message)
    with page.expect_navigation():
        page.get_by_role("button", name="Post", exact=True).click()
    assert page.url == f"{server.url}/"


def rows_of(page: Page, signal: str, request: str | None = None) -> Locator:
    """The monitor's rows for the sends of ``signal`` (made by ``request``,
    such as "POST /messages", if given)."""
    rows = page.locator("tbody#sends tr.send").filter(
        has=page.locator("td.signal", has_text=re.compile(f"^{re.escape(signal)}$"))
    )
    if request is not None:
        rows = rows.filter(
            has=page.locator("td.request", has_text=re.compile(f"^{re.escape(request)}$"))
        )
    return rows


def wait_until_done(page: Page, posts: int) -> None:
    """Wait until the monitor shows the guestbook's own sends for ``posts``
    posts: each message-posted with its three receivers done, and the two
    messages flashed after it."""
    posted = rows_of(page, "message-posted")
    expect(posted).to_have_count(posts)
    expect(posted.locator("li.run.done")).to_have_count(3 * posts)
    expect(rows_of(page, "message-flashed")).to_have_count(2 * posts)


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


def test_browser_monitor_receives_the_rows_of_a_post_live(
    context: BrowserContext, server: UvicornProcess
) -> None:
    monitor = open_live_monitor(context, server)
    expect(rows_of(monitor, "message-posted")).to_have_count(0)

    post_message(context.new_page(), server, NAME, MESSAGE)

    # Rows of requests made after the page loaded: they came live.
    expect(rows_of(monitor, "request-started", "POST /messages")).to_have_count(1)
    expect(rows_of(monitor, "message-flashed", "POST /messages")).to_have_count(2)
    expect(rows_of(monitor, "template-rendered", "GET /").first).to_be_visible()
    wait_until_done(monitor, 1)
    posted = rows_of(monitor, "message-posted")
    names = posted.locator("li.run span.name").all_text_contents()
    assert sorted(name.rsplit(".", 1)[-1] for name in names) == ["audit", "notify", "store"]
    assert posted.locator("li.run span.status").all_text_contents() == ["done"] * 3
    # The arguments, markup as text.
    expect(posted.locator("td.arguments")).to_contain_text(repr(MESSAGE))
    expect(posted.locator("td.arguments b")).to_have_count(0)
    assert was_not_reloaded(monitor)


def test_browser_monitor_shows_the_background_send_live(
    context: BrowserContext, server: UvicornProcess
) -> None:
    monitor = open_live_monitor(context, server)
    guestbook = context.new_page()
    guestbook.goto(f"{server.url}/")

    with guestbook.expect_navigation():
        guestbook.get_by_role("button", name="Build a report in the background").click()

    expect(guestbook.locator("p.flash")).to_contain_text("Report requested")
    report = rows_of(monitor, "report-requested")
    expect(report.locator("li.run.done")).to_have_count(1)
    expect(report.locator("li.run span.name")).to_have_text(re.compile(r"\.build_report$"))
    assert was_not_reloaded(monitor)
    # The receiver's work is done: the next page shows the report.
    guestbook.reload()
    expect(guestbook.locator("#reports li").first).to_contain_text("report for the guestbook: ")


def test_browser_monitor_filter_shows_only_matching_signals(
    context: BrowserContext, server: UvicornProcess
) -> None:
    guestbook = context.new_page()
    post_message(guestbook, server, NAME, MESSAGE)
    monitor = open_live_monitor(context, server)

    monitor.locator("#signal-filter").fill("message")
    with monitor.expect_navigation():
        monitor.locator("#signal-filter").press("Enter")
    expect(monitor.locator("#live-status")).to_have_text("live")
    monitor.evaluate("window.loadedOnce = true")
    loaded = monitor.locator("tbody#sends td.signal").all_text_contents()
    # And the sends of a second post, live: the request's other signals,
    # sent before message-posted, would have come first.
    post_message(guestbook, server, "Grace", "A second message.")
    wait_until_done(monitor, 2)
    live = monitor.locator("tbody#sends td.signal").all_text_contents()

    assert monitor.url == f"{server.url}/signals/?signal=message"
    assert sorted(set(loaded)) == ["message-flashed", "message-posted"]
    assert sorted(set(live)) == ["message-flashed", "message-posted"]
    assert len(live) == 2 * len(loaded)
    assert was_not_reloaded(monitor)


def test_browser_monitor_lists_sends_without_javascript(
    browser: Browser, context: BrowserContext, server: UvicornProcess
) -> None:
    post_message(context.new_page(), server, NAME, MESSAGE)
    static = browser.new_context(java_script_enabled=False, viewport=VIEWPORT)
    try:
        static.set_default_timeout(WAIT_MS)
        plain = static.new_page()

        plain.goto(f"{server.url}/signals/")

        expect(plain.locator("#live-status")).to_have_text("not live: reload to see new sends")
        for signal in ("request-started", "message-flashed", "template-rendered"):
            expect(rows_of(plain, signal).first).to_be_visible()
        expect(rows_of(plain, "message-posted").locator("li.run.done")).to_have_count(3)
    finally:
        static.close()


def test_browser_screenshot_of_the_live_monitor(
    context: BrowserContext, server: UvicornProcess, tmp_path: Path
) -> None:
    """The README's picture: the monitor, filtered to the guestbook's own
    signals, as the rows of two posts arrived live."""
    monitor = open_live_monitor(context, server, "?signal=message")
    guestbook = context.new_page()
    post_message(guestbook, server, NAME, MESSAGE)
    post_message(guestbook, server, "Grace", "Is it live? It is.")
    wait_until_done(monitor, 2)
    assert was_not_reloaded(monitor)

    monitor.bring_to_front()
    shot = monitor.screenshot(path=tmp_path / "monitor.png", animations="disabled")

    assert shot.startswith(b"\x89PNG\r\n\x1a\n")
    assert (tmp_path / "monitor.png").read_bytes() == shot
    if os.environ.get("ASIGNALS_SCREENSHOT") == "1":
        docs = ROOT / "docs"
        docs.mkdir(exist_ok=True)
        (docs / "monitor.png").write_bytes(shot)

"""The documentation site, built with ``mkdocs build --strict`` and read in
headless Chromium (Debian's ``chromium``, driven by Playwright): every page
loads without an error, search finds what it should, and a phone-wide
screen does not scroll sideways. With ``ASIGNALS_SCREENSHOT=1`` two
screenshots are kept as docs/site-home.png and docs/site-getting-started.png.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from chromium import WAIT_MS, launched
from playwright.sync_api import Browser, Page, expect

ROOT = Path(__file__).resolve().parent.parent


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The site, built from this checkout and served on 127.0.0.1."""
    built = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", built],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=True,
        timeout=300,
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(built)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched() as chromium:
        yield chromium


def _pages() -> list[str]:
    """The path of each page in the navigation, from mkdocs.yml."""
    nav = (ROOT / "mkdocs.yml").read_text()
    sources = re.findall(r": (\S+\.md)$", nav, re.MULTILINE)
    return ["" if s == "index.md" else s.removesuffix(".md") + "/" for s in sources]


def _open(browser: Browser, url: str, width: int = 1280) -> tuple[Page, list[str]]:
    """The page at ``url`` and the errors it met: script errors, and
    requests to this site that failed. (Requests to other hosts, such as
    the repository's, fail here, offline, and are not the site's.)"""
    parts = urllib.parse.urlsplit(url)
    site = f"{parts.scheme}://{parts.netloc}/"
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"script error: {error}"))
    page.on(
        "requestfailed",
        lambda request: (
            errors.append(f"failed: {request.url}") if request.url.startswith(site) else None
        ),
    )
    page.on(
        "response",
        lambda response: (
            errors.append(f"{response.status}: {response.url}") if response.status >= 400 else None
        ),
    )
    page.goto(url)
    page.wait_for_load_state("load")
    return page, errors


@pytest.mark.parametrize("path", _pages())
def test_every_page_loads_without_an_error(browser: Browser, site: str, path: str) -> None:
    page, errors = _open(browser, f"{site}/{path}")
    try:
        expect(page.locator("article h1")).to_have_count(1)
        assert page.locator("article").inner_text().strip()
        assert errors == []
    finally:
        page.close()


def test_search_finds_the_pages_about_a_name(browser: Browser, site: str) -> None:
    page, errors = _open(browser, f"{site}/")
    try:
        page.locator(".md-search__input").click()
        page.keyboard.type("send_background")
        results = page.locator(".md-search-result__item")
        expect(results.first).to_be_visible()
        expect(
            page.locator(".md-search-result__item", has_text="Background sends")
        ).not_to_have_count(0)
        assert errors == []
    finally:
        page.close()


@pytest.mark.parametrize("path", ["", "getting-started/", "starlette/", "errors/"])
def test_a_phone_wide_screen_does_not_scroll_sideways(
    browser: Browser, site: str, path: str
) -> None:
    """Wide code and tables scroll inside themselves, not the page."""
    page, errors = _open(browser, f"{site}/{path}", width=400)
    try:
        assert page.evaluate("document.documentElement.scrollWidth") <= 400
        assert errors == []
    finally:
        page.close()


def test_the_first_page_warns_about_starlette_s_templates(browser: Browser, site: str) -> None:
    page, _ = _open(browser, f"{site}/")
    try:
        warning = page.locator(".admonition.warning")
        expect(warning).to_contain_text("asignals.templating.Jinja2Templates")
        expect(warning).to_contain_text("send no template signals")
    finally:
        page.close()


@pytest.mark.parametrize(
    ("path", "name", "anchor"),
    [
        ("", "site-home.png", None),
        ("getting-started/", "site-getting-started.png", "a-fastapi-app-walked-through"),
    ],
)
def test_screenshots(
    browser: Browser, site: str, tmp_path: Path, path: str, name: str, anchor: str | None
) -> None:
    """What a newcomer sees first, and the FastAPI example quoted in getting
    started (a quoted section, rendered)."""
    page, errors = _open(browser, f"{site}/{path}" + (f"#{anchor}" if anchor else ""))
    try:
        if anchor:
            expect(page.locator("code", has_text="asignals.install(")).not_to_have_count(0)
        shot = page.screenshot(path=tmp_path / name, animations="disabled")
        assert shot.startswith(b"\x89PNG\r\n\x1a\n")
        assert errors == []
        if os.environ.get("ASIGNALS_SCREENSHOT") == "1":
            (ROOT / "docs" / name).write_bytes(shot)
    finally:
        page.close()

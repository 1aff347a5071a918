"""The FastAPI example (examples/fastapi_app.py), which the getting-started
page walks through section by section: in process with Starlette's
TestClient (its lifecycle receivers, custom signal, templates, flash
messages and background send), in a fresh interpreter (no bridge, and no
coredis, without REDIS_URL), and under real uvicorn (its home page and form;
two servers on one redis-server, whose cache-cleared signal crosses between
them)."""

from __future__ import annotations

import ast
import http.cookiejar
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Coroutine
from types import ModuleType
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
from helpers import Gate, ReleasedAtShutdown
from redis_server import RedisServer
from serving import ROOT, SERVER_START, UvicornProcess, uvicorn_process
from starlette.testclient import TestClient

from asignals import before_render_template, lifecycle, message_flashed, template_rendered
from asignals.testing import record_signals

EXAMPLE = ROOT / "examples" / "fastapi_app.py"
APP = "examples.fastapi_app:app"  # as the docs run it, from the repository's root
# The sections that docs/getting-started.md quotes, in the file's order.
SECTIONS = ["install", "lifecycle", "custom", "templates", "flash", "background", "bridge"]
# The bound of every wait in these tests: reached only when they fail.
WAIT = 10.0
FLASH = re.compile(r'<p class="flash ([^"]*)" role="status">(.*?)</p>', re.DOTALL)
HANDLED_IN = re.compile(r"\d+\.\dms")


@pytest.fixture(scope="module")
def shop() -> ModuleType:
    """The example module, loaded from its file without REDIS_URL (so
    without a bridge), under a name of its own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("REDIS_URL", raising=False)
        spec = importlib.util.spec_from_file_location("asignals_fastapi_example", EXAMPLE)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    assert module.bridge is None
    return module


def flashes(page: str) -> list[tuple[str, str]]:
    """The flashed messages on a page, as (category, text) pairs."""
    return [(category, text) for category, text in FLASH.findall(page)]


class Together:
    """Stands in for the example's ``anyio``, whose ``sleep`` only its slow
    receivers call: instead of sleeping, a receiver notes that it entered and
    waits until ``count`` receivers entered (for at most WAIT seconds), then
    notes that it left. Receivers that run one after another leave before
    the next enters."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.events: list[tuple[str, str]] = []
        self.all_in: anyio.Event | None = None

    def sleep(self, delay: float) -> Coroutine[Any, Any, None]:
        # Called (not yet awaited) in the receiver's own frame.
        return self._hold(sys._getframe(1).f_code.co_name)

    async def _hold(self, name: str) -> None:
        if self.all_in is None:
            self.all_in = anyio.Event()
        self.events.append(("enter", name))
        if sum(event == "enter" for event, _ in self.events) == self.count:
            self.all_in.set()
        with anyio.move_on_after(WAIT):
            await self.all_in.wait()
        self.events.append(("leave", name))


class NoWait:
    """Stands in for the example's ``anyio``: ``sleep`` does not wait."""

    async def sleep(self, delay: float) -> None:
        await anyio.lowlevel.checkpoint()


# The file, as the docs quote it


def test_the_sections_the_docs_quote_cover_the_file_after_its_imports() -> None:
    """Every line but the docstring, the imports and blank lines is in
    exactly one section; sections do not overlap and are each closed."""
    text = EXAMPLE.read_text()
    lines = text.splitlines()
    head: set[int] = set()  # the docstring's and the imports' line numbers (from 1)
    for node in ast.parse(text).body:
        is_docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        if is_docstring or isinstance(node, ast.Import | ast.ImportFrom):
            assert node.end_lineno is not None
            head.update(range(node.lineno, node.end_lineno + 1))
    marker = re.compile(r"# --8<-- \[(start|end):([a-z]+)\]")
    opened: str | None = None
    names: list[str] = []
    outside: list[str] = []
    for number, line in enumerate(lines, 1):
        if found := marker.fullmatch(line):
            kind, name = found.groups()
            if kind == "start":
                assert opened is None, f"line {number}: {name} starts inside {opened}"
                opened = name
                names.append(name)
            else:
                assert opened == name, f"line {number}: {name} ends, but {opened} is open"
                opened = None
        elif "8<-" in line:
            pytest.fail(f"line {number}: a malformed marker: {line!r}")
        elif opened is None and line.strip() and number not in head:
            outside.append(f"{number}: {line}")
    assert opened is None
    assert names == SECTIONS
    assert outside == []


# Lifecycle receivers and templates


def test_home_page_sends_flasks_signals_in_order_and_says_how_long_it_took(
    shop: ModuleType, anyio_backend: str
) -> None:
    with record_signals(*lifecycle.values()) as sent:
        response = TestClient(shop.app, backend=anyio_backend).get("/")  # type: ignore[arg-type]

    assert response.status_code == 200
    assert [s.signal.name for s in sent] == [  # type: ignore[attr-defined]
        "appcontext-pushed",
        "request-started",
        "before-render-template",
        "template-rendered",
        "request-finished",
        "request-tearing-down",
        "appcontext-tearing-down",
        "appcontext-popped",
    ]
    assert all(s.sender is shop.app for s in sent)
    # The async request_finished receiver's header, timed from request_started's g.
    assert HANDLED_IN.fullmatch(response.headers["x-handled-in"])
    # The template signals: index.html, whose context before_render_template's
    # receiver gave the shop's name, which the page shows.
    [before] = sent.of(before_render_template)
    [rendered] = sent.of(template_rendered)
    assert rendered.kwargs["template"].name == "index.html"
    assert rendered.kwargs["context"] is before.kwargs["context"]
    assert rendered.kwargs["context"]["shop"] == "Shop"
    assert "<title>Shop</title>" in response.text
    assert 'action="/orders"' in response.text
    assert flashes(response.text) == []


def test_every_response_gets_the_header(shop: ModuleType, anyio_backend: str) -> None:
    browser = TestClient(shop.app, backend=anyio_backend)  # type: ignore[arg-type]

    responses = [
        browser.post("/orders", data={"customer": "Ada"}),  # no product: FastAPI's 422
        browser.get("/missing"),
        browser.get("/cache"),
    ]

    assert [r.status_code for r in responses] == [422, 404, 200]
    assert all(HANDLED_IN.fullmatch(r.headers["x-handled-in"]) for r in responses)


# The custom signal, and the flash across the redirect


def test_an_order_sends_order_placed_and_flashes_across_the_redirect_once(
    shop: ModuleType, anyio_backend: str
) -> None:
    browser = TestClient(shop.app, backend=anyio_backend)  # type: ignore[arg-type]
    customer = f"Ada {anyio_backend}"
    sold = shop.sold["coffee"]

    with record_signals(shop.order_placed, message_flashed) as sent:
        posted = browser.post(
            "/orders", data={"customer": customer, "product": "coffee"}, follow_redirects=False
        )
    first = browser.get("/")
    second = browser.get("/")

    assert posted.status_code == 303
    assert posted.headers["location"] == "/"
    message = f"Thanks, {customer}: your coffee is on its way."
    assert [(s.signal, s.sender, s.kwargs) for s in sent] == [
        (shop.order_placed, shop.app, {"customer": customer, "product": "coffee"}),
        (message_flashed, shop.app, {"message": message, "category": "success"}),
    ]
    assert shop.sold["coffee"] == sold + 1  # the sync receiver ran
    assert flashes(first.text) == [("success", message)]
    assert flashes(second.text) == []


def test_an_unknown_product_flashes_an_error_and_places_no_order(
    shop: ModuleType, anyio_backend: str
) -> None:
    browser = TestClient(shop.app, backend=anyio_backend)  # type: ignore[arg-type]

    with record_signals(shop.order_placed) as sent:
        posted = browser.post(
            "/orders", data={"customer": "Ada", "product": "tulips"}, follow_redirects=False
        )
    page = browser.get("/").text

    assert posted.status_code == 303
    assert sent == []
    assert flashes(page) == [("error", "Sorry, we sell no tulips.")]


def test_order_placeds_async_receivers_run_concurrently(
    shop: ModuleType, anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    together = Together(2)
    monkeypatch.setattr(shop, "anyio", together)

    posted = TestClient(shop.app, backend=anyio_backend).post(  # type: ignore[arg-type]
        "/orders", data={"customer": "Ada", "product": "tea"}, follow_redirects=False
    )

    assert posted.status_code == 303
    # Both entered before either left: they ran at the same time.
    assert sorted(together.events[:2]) == [
        ("enter", "mail_confirmation"),
        ("enter", "reserve_stock"),
    ]
    assert sorted(together.events[2:]) == [
        ("leave", "mail_confirmation"),
        ("leave", "reserve_stock"),
    ]


# The background send


def test_a_report_is_built_after_the_response_and_done_when_the_app_shuts_down(
    shop: ModuleType, anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The report's receiver is held until the lifespan's shutdown begins.
    gate = Gate()
    monkeypatch.setattr(shop, "anyio", gate)
    reports = len(shop.reports)

    with record_signals(shop.report_requested) as sent:
        with TestClient(
            ReleasedAtShutdown(shop.app, gate),
            backend=anyio_backend,  # type: ignore[arg-type]
        ) as browser:
            posted = browser.post("/reports", follow_redirects=False)
            page = browser.get("/").text
            started = gate.entered.wait(WAIT)
            built_before_shutdown = shop.reports[reports:]
        built = shop.reports[reports:]

    assert posted.status_code == 303
    assert flashes(page) == [("message", "Your report is being built: see /reports in a second.")]
    [send] = sent
    assert send.sender is shop.app
    assert re.fullmatch(r"\d\d:\d\d:\d\d", send.kwargs["requested_at"])
    # The response came back while the receiver was still running, ...
    assert started
    assert built_before_shutdown == []
    # ... and the shutdown waited for it.
    assert len(built) == 1
    assert built[0].startswith(f"requested at {send.kwargs['requested_at']}: ")


def test_a_failing_background_receiver_is_logged_by_got_background_exception(
    shop: ModuleType,
    anyio_backend: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(shop, "anyio", NoWait())

    def out_of_paper(sender: Any, **kwargs: Any) -> None:
        raise OSError("the printer is out of paper")

    with (
        shop.report_requested.connected_to(out_of_paper),
        TestClient(shop.app, backend=anyio_backend) as browser,  # type: ignore[arg-type]
    ):
        response = browser.get("/reports")
        posted = browser.post("/reports", follow_redirects=False)

    assert response.status_code == 200
    assert posted.status_code == 303
    [logged] = [r for r in caplog.records if r.name == "shop"]
    assert logged.levelno == logging.ERROR
    assert logged.getMessage() == (
        "a background receiver failed: OSError('the printer is out of paper')"
    )


# The cache, without a bridge


def test_without_a_bridge_a_clear_clears_this_processs_cache(
    shop: ModuleType, anyio_backend: str
) -> None:
    browser = TestClient(shop.app, backend=anyio_backend)  # type: ignore[arg-type]

    cleared = browser.post("/cache/clear").json()
    status = browser.get("/cache").json()

    assert cleared == {"worker": os.getpid(), "shared": False}
    assert status["worker"] == os.getpid()
    assert status["entries"] == 0
    assert status["cleared_by"][-1] == os.getpid()


# In a fresh interpreter, and under uvicorn


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``code`` run by a fresh interpreter in the repository's root, with
    ``env`` added to this environment, without REDIS_URL unless given."""
    environment = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=SERVER_START,
        check=False,
    )


def test_without_redis_url_there_is_no_bridge_and_coredis_is_never_imported() -> None:
    result = run_python(
        "import sys\n"
        "import examples.fastapi_app as shop\n"
        "print(shop.bridge, 'coredis' in sys.modules, 'asignals.bridge' in sys.modules)\n"
    )

    assert result.stderr == ""
    # And the import printed nothing.
    assert result.stdout == "None False False\n"


def test_with_redis_url_the_bridge_shares_cache_cleared(redis_server: RedisServer) -> None:
    result = run_python(
        "import examples.fastapi_app as shop\n"
        "print(type(shop.bridge).__name__, [s.name for s in shop.bridge.shared])\n",
        REDIS_URL=redis_server.url,
    )

    assert result.stderr == ""
    assert result.stdout == "RedisBridge ['cache-cleared']\n"


def call(url: str, method: str = "GET") -> Any:
    request = urllib.request.Request(url, method=method, headers={"Connection": "close"})
    with urllib.request.urlopen(request, timeout=SERVER_START) as response:
        return json.loads(response.read())


def until_cleared(server: UvicornProcess, clears: int) -> Any:
    """The server's cache status once ``clears`` clears reached it. Another
    process's state can only be asked for: asked every 50 ms, for at most
    SERVER_START seconds."""
    deadline = time.monotonic() + SERVER_START
    while len((status := call(f"{server.url}/cache"))["cleared_by"]) < clears:
        if time.monotonic() > deadline:
            pytest.fail(f"{clears} clears did not reach the server:\n{server.output}")
        time.sleep(0.05)
    return status


def test_a_clear_in_one_process_clears_the_cache_of_another_through_redis(
    redis_server: RedisServer,
) -> None:
    """Two servers of the example on one redis-server, as two workers would
    be: a clear sent in one runs the other's receiver, through the bridge."""
    servers = [UvicornProcess(APP, env={"REDIS_URL": redis_server.url}) for _ in range(2)]
    try:
        for server in servers:
            # Serving once its lifespan started the bridge, subscribed.
            server.wait_until_serving()
        here, there = servers

        sent = call(f"{here.url}/cache/clear", "POST")
        status = until_cleared(there, 1)
        # Then one the other way: once it arrived, here's own send would
        # have come back too, had it come back.
        answer = call(f"{there.url}/cache/clear", "POST")
        own = until_cleared(here, 2)

        assert sent == {"worker": here.process.pid, "shared": True}
        assert answer == {"worker": there.process.pid, "shared": True}
        assert status == {"worker": there.process.pid, "entries": 0, "cleared_by": [sent["worker"]]}
        # The sender's own receiver ran once, as it sent: its send did not come back.
        assert own == {
            "worker": here.process.pid,
            "entries": 0,
            "cleared_by": [sent["worker"], answer["worker"]],
        }
    finally:
        for server in servers:
            server.stop()
            print(f"A server's output:\n{server.output}")


def test_uvicorn_serves_the_home_page_and_the_order_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    # A browser: it keeps the session cookie and follows the 303.
    browser = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )

    with uvicorn_process(APP) as server:
        with browser.open(f"{server.url}/", timeout=SERVER_START) as response:
            status, handled_in, page = (
                response.status,
                response.headers["x-handled-in"],
                response.read().decode(),
            )
        form = urllib.parse.urlencode({"customer": "Grace", "product": "cocoa"}).encode()
        with browser.open(f"{server.url}/orders", data=form, timeout=SERVER_START) as response:
            after_order = (response.status, response.url, response.read().decode())

    assert status == 200
    assert HANDLED_IN.fullmatch(handled_in)
    assert "<title>Shop</title>" in page
    assert after_order[:2] == (200, f"{server.url}/")
    assert flashes(after_order[2]) == [("success", "Thanks, Grace: your cocoa is on its way.")]
    assert "<li>1 cocoa</li>" in after_order[2]

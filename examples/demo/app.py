"""The asignals demo: a small guestbook that sends signals, and the monitor
that shows them. From the project's root, after ``pip install -e '.[demo]'``
(``'.[demo,redis]'`` for the bridge, below)::

    uvicorn examples.demo.app:app

then open http://127.0.0.1:8000/ and, beside it, http://127.0.0.1:8000/signals/.

What it shows, all through asignals itself:

- the lifecycle signals of every request (``install(app)``), with a
  ``request_started`` receiver that starts a clock and a ``request_finished``
  receiver that logs the request and adds an ``x-handled-in`` header;
- pages rendered with ``asignals.templating`` (``template_rendered``);
- a form that flashes a message across a redirect (``message_flashed``);
- a custom signal, ``message-posted``, whose two async receivers (a slow
  "notify" and an "audit") run concurrently, and a sync receiver;
- a sync endpoint, which sends from its worker thread;
- a background send, which runs after the response went out;
- a request that fails on purpose (``got_request_exception``);
- the live monitor, mounted at ``/signals``;
- with ``REDIS_URL`` set (``redis://127.0.0.1:6379/0``), a signal that
  crosses worker processes through a bridge: ``REDIS_URL=...
  DEMO_SECRET_KEY=... uvicorn examples.demo.app:app --workers 2`` (one
  secret key, so that a session made in one worker is read in the other),
  then ``POST /cache/clear`` in one worker clears the cache of every worker
  (``GET /cache`` says which worker answered and what it cleared).
"""

from __future__ import annotations

import html
import logging
import os
import secrets
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

import asignals
from asignals import (
    Namespace,
    flash,
    g,
    got_background_exception,
    got_request_exception,
    request,
    request_finished,
    request_started,
)
from asignals.monitor import SignalMonitor
from asignals.templating import Jinja2Templates

logger = logging.getLogger("demo")
if not logger.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(levelname)s:     [%(name)s] %(message)s"))
    for name in ("demo", "asignals"):
        logging.getLogger(name).addHandler(_handler)
    logger.setLevel(logging.INFO)

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")

signals = Namespace()
message_posted = signals.signal(
    "message-posted", "Sent when a visitor posts a message.", concurrent=True
)
page_viewed = signals.signal("page-viewed", "Sent by the sync page, from its worker thread.")
report_requested = signals.signal(
    "report-requested", "Sent in the background when a visitor asks for a report."
)
cache_cleared = signals.signal(
    "cache-cleared",
    "Sent when a visitor clears the cache; with REDIS_URL set, it reaches every worker.",
)

# What the receivers keep, shown on the home page. (Per process, in memory.)
messages: deque[tuple[str, str]] = deque(maxlen=10)
audit_log: deque[str] = deque(maxlen=10)
reports: deque[str] = deque(maxlen=5)
counts = {"messages": 0, "sync views": 0}
counts_lock = threading.Lock()


# How long the two async receivers below take.
NOTIFY_SECONDS = 0.3
AUDIT_SECONDS = 0.2

# The custom signal's receivers. It is concurrent, so the two async ones run
# as concurrent tasks: the send takes about as long as the slower one.


@message_posted.connect
async def notify(sender: str, message: str, **extra: Any) -> str:
    """Tells the team. The wait stands in for a call to a mail service."""
    await anyio.sleep(NOTIFY_SECONDS)
    logger.info("notify: told the team that %s posted a message", sender)
    return "notified"


@message_posted.connect
async def audit(sender: str, message: str, **extra: Any) -> str:
    """Keeps an audit trail. The wait stands in for a database write."""
    await anyio.sleep(AUDIT_SECONDS)
    audit_log.appendleft(f"{time.strftime('%H:%M:%S')} {sender} posted {len(message)} characters")
    return "audited"


@message_posted.connect
def store(sender: str, message: str, **extra: Any) -> str:
    """A sync receiver, as written for blinker: runs inline, first."""
    messages.appendleft((sender, message))
    with counts_lock:
        counts["messages"] += 1
    return "stored"


@page_viewed.connect
async def count_view(sender: str, thread: str, **extra: Any) -> None:
    """An async receiver of a send made by sync code in a worker thread: it
    runs on the event loop."""
    with counts_lock:
        counts["sync views"] += 1
    logger.info("page-viewed: the sync page was rendered in thread %s", thread)


@report_requested.connect
async def build_report(sender: str, **extra: Any) -> None:
    """Runs in the background, after the response went out."""
    await anyio.sleep(1)  # stands in for slow work
    with counts_lock:
        summary = f"{counts['messages']} messages, {counts['sync views']} sync views"
    reports.appendleft(f"{time.strftime('%H:%M:%S')} report for {sender}: {summary}")
    logger.info("report-requested: report for %s is ready", sender)


# The endpoints.


async def home(request: Request) -> Response:
    return await templates.render_response(
        request,
        "index.html",
        {"messages": messages, "audit_log": audit_log, "reports": reports, "counts": counts},
    )


async def post_message(request: Request) -> Response:
    form = await request.form()
    name = str(form.get("name", "")).strip() or "anonymous"
    text = str(form.get("message", "")).strip()
    if not text:
        flash("Write a message first.", "error")
        return RedirectResponse("/", status_code=303)
    start = time.perf_counter()
    results = await message_posted.send_async(name, message=text)
    took = (time.perf_counter() - start) * 1000
    flash(f"Thanks, {name}: your message was posted.", "success")
    ran = ", ".join(f"{receiver.__name__} ({value})" for receiver, value in results)
    in_turn = (NOTIFY_SECONDS + AUDIT_SECONDS) * 1000
    flash(
        f"message-posted ran {ran} in {took:.0f} ms, "
        f"not the {in_turn:.0f} ms of running them one by one."
    )
    return RedirectResponse("/", status_code=303)


def sync_page(request: Request) -> Response:
    """A sync endpoint: Starlette runs it in a worker thread."""
    thread = threading.current_thread().name
    page_viewed.send("sync-page", thread=thread)
    return templates.TemplateResponse(request, "sync.html", {"thread": thread, "counts": counts})


async def request_report(request: Request) -> Response:
    form = await request.form()
    name = str(form.get("name", "")).strip() or "anonymous"
    report_requested.send_background(name)
    flash("Report requested: it is built in the background, in about a second. Reload to see it.")
    return RedirectResponse("/", status_code=303)


async def fail(request: Request) -> Response:
    raise RuntimeError("this request fails on purpose")


async def server_error(request: Request, exc: Exception) -> Response:
    """Starlette's handler for unhandled exceptions: as in Flask, the request
    still counts as failed (got_request_exception, then request_finished with
    this response), and the exception goes on to the server, which logs it."""
    return HTMLResponse(
        "<!doctype html><title>Failed</title><h1>This request failed</h1>"
        f"<p>{html.escape(repr(exc))}</p><p>The monitor shows its "
        '<code>got-request-exception</code> signal. <a href="/">Back</a></p>',
        status_code=500,
    )


# Signals across workers: with REDIS_URL set, cache-cleared crosses every
# worker process (and host) that shares it, through Redis.
bridge = None
if os.environ.get("REDIS_URL"):
    from asignals.bridge import RedisBridge, origin

    bridge = RedisBridge(os.environ["REDIS_URL"], mode="pubsub")
    bridge.share(cache_cleared)
else:

    def origin() -> str | None:
        return None


# This worker's cache, and where each clear came from (None: this worker).
cache: dict[str, Any] = {"entries": 3, "cleared": []}


@cache_cleared.connect
def clear_cache(sender: str, **extra: Any) -> None:
    cache["entries"] = 0
    cache["cleared"].append({"by": extra.get("worker"), "origin": origin()})


async def clear(request: Request) -> Response:
    await cache_cleared.send_async("demo", worker=os.getpid())
    return JSONResponse({"worker": os.getpid(), "bridge": bridge is not None})


async def cache_status(request: Request) -> Response:
    return JSONResponse({"worker": os.getpid(), **cache})


# With a bridge, each worker's monitor shows the requests of every worker.
monitor = SignalMonitor(bridge=bridge)

app = asignals.install(
    Starlette(
        routes=[
            Route("/", home),
            Route("/messages", post_message, methods=["POST"]),
            Route("/sync", sync_page),
            Route("/reports", request_report, methods=["POST"]),
            Route("/fail", fail),
            Route("/cache", cache_status),
            Route("/cache/clear", clear, methods=["POST"]),
            Mount("/signals", app=monitor),
        ],
        exception_handlers={500: server_error},
        middleware=[
            # A new key at each start: sessions (and flashed messages) do not
            # outlive the process. Set DEMO_SECRET_KEY to keep them.
            Middleware(
                SessionMiddleware,
                secret_key=os.environ.get("DEMO_SECRET_KEY") or secrets.token_hex(16),
            )
        ],
    ),
    bridge=bridge,
)


# Receivers of the lifecycle signals, connected for this app.


@request_started.connect_via(app)
def start_clock(sender: Any, **extra: Any) -> None:
    g.started = time.perf_counter()


@request_finished.connect_via(app)
def log_request(sender: Any, response: asignals.ResponseHead, **extra: Any) -> None:
    took = (time.perf_counter() - g.started) * 1000
    response.headers["x-handled-in"] = f"{took:.1f}ms"
    if not request.url.path.startswith("/signals"):
        path, status = request.url.path, response.status_code
        logger.info("%s %s -> %d in %.1f ms", request.method, path, status, took)


@got_request_exception.connect_via(app)
def log_failure(sender: Any, exception: BaseException, **extra: Any) -> None:
    logger.warning("%s %s failed: %r", request.method, request.url.path, exception)


@got_background_exception.connect_via(app)
def log_background_failure(sender: Any, exception: BaseException, **extra: Any) -> None:
    logger.warning("a background receiver failed: %r", exception)

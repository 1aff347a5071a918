"""A small shop on FastAPI that sends Flask's signals through asignals. From the
project's root, after ``pip install -e '.[fastapi]'``: ``uvicorn examples.fastapi_app:app``.

Across workers, after ``pip install -e '.[fastapi,redis]'``, with a Redis server:
``REDIS_URL=redis://127.0.0.1:6379/0 SECRET_KEY=some-secret uvicorn examples.fastapi_app:app
--workers 2``; then ``POST /cache/clear`` in one worker clears every worker's cache.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Template
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware

import asignals
from asignals import (
    Namespace,
    before_render_template,
    flash,
    g,
    got_background_exception,
    request_finished,
    request_started,
)
from asignals.templating import Jinja2Templates

# --8<-- [start:install]
# Sessions (which carry flashed messages) are signed cookies. Without
# SECRET_KEY, each worker process makes its own key at import, and a cookie
# signed by one worker is void in another: set SECRET_KEY when you run
# several workers.
secret_key = os.environ.get("SECRET_KEY") or secrets.token_urlsafe(32)

# With REDIS_URL set, a bridge on Redis carries the signals it shares to
# every worker process (see the cache, at the end). Without it, there is no
# bridge, and coredis is never imported.
bridge = None
if os.environ.get("REDIS_URL"):
    from asignals.bridge import RedisBridge

    bridge = RedisBridge(os.environ["REDIS_URL"])

app = asignals.install(
    FastAPI(
        title="Shop",
        middleware=[Middleware(SessionMiddleware, secret_key=secret_key)],
    ),
    bridge=bridge,  # None, or the bridge the app's lifespan starts and stops
)


# --8<-- [end:install]
# --8<-- [start:lifecycle]
@request_started.connect_via(app)
def start_clock(sender: FastAPI, **extra: Any) -> None:  # a Flask receiver, unchanged
    g.started = time.perf_counter()


@request_finished.connect_via(app)
async def add_timing(sender: FastAPI, response: asignals.ResponseHead, **extra: Any) -> None:
    # An async receiver works too. Headers set here reach the client.
    took = (time.perf_counter() - g.started) * 1000
    response.headers["x-handled-in"] = f"{took:.1f}ms"


# --8<-- [end:lifecycle]
# --8<-- [start:custom]
logger = logging.getLogger("shop")
signals = Namespace()
order_placed = signals.signal(
    "order-placed",
    "Sent when a customer orders a product, with `customer` and `product`.",
    concurrent=True,  # send_async() runs its async receivers as concurrent tasks
)
PRODUCTS = ("tea", "coffee", "cocoa")
sold: Counter[str] = Counter()  # per worker process, in memory


@order_placed.connect
def count_sale(sender: FastAPI, customer: str, product: str, **extra: Any) -> None:
    sold[product] += 1  # a sync receiver, as written for blinker


@order_placed.connect
async def reserve_stock(sender: FastAPI, customer: str, product: str, **extra: Any) -> None:
    await anyio.sleep(0.2)  # stands in for a call to the warehouse
    logger.info("reserved one %s for %s", product, customer)


@order_placed.connect
async def mail_confirmation(sender: FastAPI, customer: str, product: str, **extra: Any) -> None:
    await anyio.sleep(0.2)  # stands in for a call to the mail service
    logger.info("mailed %s: your %s is on its way", customer, product)


# --8<-- [end:custom]
# --8<-- [start:templates]
# asignals' Jinja2Templates, a drop-in for Starlette's that also sends the
# template signals; its templates can call get_flashed_messages(). The folder is found next to this
# file, wherever uvicorn runs.
templates = Jinja2Templates(directory=Path(__file__).parent / "fastapi_templates")


@before_render_template.connect_via(app)
def add_shop_name(
    sender: FastAPI, template: Template, context: dict[str, Any], **extra: Any
) -> None:
    # On every page, as a Flask context processor would.
    context["shop"] = sender.title


@app.get("/", response_class=HTMLResponse)
async def home(request: Request) -> HTMLResponse:
    context = {"products": PRODUCTS, "sold": sold}
    return await templates.render_response(request, "index.html", context)


# --8<-- [end:templates]
# --8<-- [start:flash]
@app.post("/orders")
async def place_order(
    customer: Annotated[str, Form()], product: Annotated[str, Form()]
) -> RedirectResponse:
    if product not in PRODUCTS:
        flash(f"Sorry, we sell no {product}.", "error")
    else:
        # Both async receivers wait at once: about 0.2 s in all, not 0.4 s.
        await order_placed.send_async(app, customer=customer, product=product)
        flash(f"Thanks, {customer}: your {product} is on its way.", "success")
    # The message waits in the session; the page the browser is sent to
    # shows it, once.
    return RedirectResponse("/", status_code=303)


# --8<-- [end:flash]
# --8<-- [start:background]
report_requested = signals.signal("report-requested", "Sent to build a sales report.")
reports: list[str] = []


@report_requested.connect
async def build_report(sender: FastAPI, requested_at: str, **extra: Any) -> None:
    # Stands in for slow work, done after the response went out.
    await anyio.sleep(1)
    summary = ", ".join(f"{count} {product}" for product, count in sold.items())
    reports.append(f"requested at {requested_at}: {summary or 'nothing sold yet'}")


@got_background_exception.connect_via(app)
def log_failure(sender: FastAPI, exception: BaseException, **extra: Any) -> None:
    logger.error("a background receiver failed: %r", exception)


@app.post("/reports")
async def request_report() -> RedirectResponse:
    report_requested.send_background(app, requested_at=time.strftime("%H:%M:%S"))
    flash("Your report is being built: see /reports in a second.")
    return RedirectResponse("/", status_code=303)


@app.get("/reports")
async def list_reports() -> list[str]:
    return reports


# --8<-- [end:background]
# --8<-- [start:bridge]
# Each worker keeps its own cache in memory (of product pages, say).
cache = {product: f"the {product} page" for product in PRODUCTS}
# The process id of each worker whose clear reached this one.
cleared_by: list[int] = []
cache_cleared = signals.signal("cache-cleared", "Sent to clear the cache of every worker.")
if bridge is not None:
    # Its sends now run the receivers of every worker, once.
    bridge.share(cache_cleared)


@cache_cleared.connect
def clear_cache(sender: FastAPI, worker: int, **extra: Any) -> None:
    # Runs in the worker that sends, as it sends; in the others, through Redis.
    cache.clear()
    cleared_by.append(worker)


@app.post("/cache/clear")
async def clear_every_cache() -> dict[str, Any]:
    await cache_cleared.send_async(app, worker=os.getpid())
    return {"worker": os.getpid(), "shared": bridge is not None}


@app.get("/cache")
async def cache_status() -> dict[str, Any]:
    return {
        "worker": os.getpid(),
        "entries": len(cache),
        "cleared_by": cleared_by,
    }


# --8<-- [end:bridge]

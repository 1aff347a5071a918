"""Contexts follow the code that runs for them: into worker threads and into
the tasks a request starts."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
from context_apps import App, bound, connected, make_app
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import Message

from asignals import app_context, current_app, g, request, request_tearing_down

# Context propagation: worker threads and tasks


@pytest.mark.anyio
async def test_worker_thread_started_in_a_context_sees_it() -> None:
    app = App("a")

    def look() -> tuple[Any, Any]:
        return bound(current_app), bound(g)

    async with app_context(app):
        assert await anyio.to_thread.run_sync(look) == (app, g._get_current_object())


@pytest.mark.anyio
async def test_g_set_in_a_worker_thread_is_seen_back_in_the_context() -> None:
    def set_user() -> None:
        g.user = "ada"

    async with app_context(App("a")):
        await anyio.to_thread.run_sync(set_user)
        assert g.user == "ada"


@pytest.mark.anyio
async def test_task_started_in_a_context_sees_it_and_shares_g() -> None:
    app = App("a")
    seen: list[Any] = []

    async def child() -> None:
        seen.append(current_app._get_current_object())
        seen.append(g._get_current_object())
        g.from_child = True

    async with app_context(app):
        async with anyio.create_task_group() as tg:
            tg.start_soon(child)
        assert seen == [app, g._get_current_object()]
        assert g.from_child is True


@pytest.mark.anyio
async def test_context_pushed_in_a_task_does_not_change_its_parent() -> None:
    outer, inner = App("outer"), App("inner")
    pushed, checked = anyio.Event(), anyio.Event()
    seen: list[Any] = []

    async def child() -> None:
        async with app_context(inner):
            pushed.set()
            await checked.wait()
            seen.append(current_app._get_current_object())

    async with app_context(outer), anyio.create_task_group() as tg:
        tg.start_soon(child)
        await pushed.wait()
        seen.append(current_app._get_current_object())
        checked.set()

    assert seen == [outer, inner]


@pytest.mark.anyio
async def test_concurrent_contexts_do_not_see_each_other() -> None:
    a, b = App("a"), App("b")
    a_pushed, b_done = anyio.Event(), anyio.Event()
    seen: dict[str, tuple[Any, Any]] = {}

    async def run_a() -> None:
        async with app_context(a):
            g.name = "a"
            a_pushed.set()
            await b_done.wait()
            seen["a"] = (current_app._get_current_object(), g.name)

    async def run_b() -> None:
        await a_pushed.wait()
        async with app_context(b):
            assert "name" not in g
            g.name = "b"
            seen["b"] = (current_app._get_current_object(), g.name)
        b_done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_a)
        tg.start_soon(run_b)

    assert seen == {"a": (a, "a"), "b": (b, "b")}


@pytest.mark.anyio
async def test_task_started_after_the_context_exited_does_not_see_it() -> None:
    seen: list[Any] = []

    async def child() -> None:
        seen.append(bound(current_app))

    async with anyio.create_task_group() as tg:
        async with app_context(App("a")):
            pass
        tg.start_soon(child)

    assert seen == [None]


@pytest.mark.anyio
async def test_task_started_before_the_context_does_not_see_it() -> None:
    pushed, checked = anyio.Event(), anyio.Event()
    seen: list[Any] = []

    async def child() -> None:
        await pushed.wait()
        seen.append(bound(current_app))
        checked.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(child)
        async with app_context(App("a")):
            pushed.set()
            await checked.wait()

    assert seen == [None]


@pytest.mark.anyio
async def test_worker_thread_started_after_the_context_exited_does_not_see_it() -> None:
    async with app_context(App("a")):
        pass

    assert await anyio.to_thread.run_sync(bound, current_app) is None


def test_sync_endpoint_sees_the_contexts(anyio_backend: str) -> None:
    seen: dict[str, Any] = {}

    def endpoint(req: Request) -> PlainTextResponse:
        seen.update(
            app=current_app._get_current_object(),
            path=request.url.path,
            same_scope=request.scope is req.scope,
        )
        return PlainTextResponse("ok")

    app = make_app(Route("/sync", endpoint))
    TestClient(app, backend=anyio_backend).get("/sync")

    assert seen == {"app": app, "path": "/sync", "same_scope": True}


def test_g_set_in_a_sync_endpoint_is_seen_by_teardown_receivers(anyio_backend: str) -> None:
    seen: list[Any] = []

    def endpoint(req: Request) -> PlainTextResponse:
        g.user = "ada"
        return PlainTextResponse("ok")

    def on_tearing_down(sender: Any, exc: BaseException | None) -> None:
        seen.append(g.get("user"))

    with connected((request_tearing_down, on_tearing_down)):
        TestClient(make_app(Route("/", endpoint)), backend=anyio_backend).get("/")

    assert seen == ["ada"]


def test_g_set_in_a_worker_thread_is_seen_back_in_the_request(anyio_backend: str) -> None:
    def set_user() -> None:
        g.user = "ada"

    async def endpoint(req: Request) -> JSONResponse:
        before = g._get_current_object()
        await anyio.to_thread.run_sync(set_user)
        return JSONResponse({"user": g.get("user"), "same": g._get_current_object() is before})

    response = TestClient(make_app(Route("/", endpoint)), backend=anyio_backend).get("/")

    assert response.json() == {"user": "ada", "same": True}


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_background_task_sees_the_request_contexts(anyio_backend: str, kind: str) -> None:
    seen: dict[str, Any] = {}

    def look() -> None:
        seen.update(
            app=current_app._get_current_object(), path=request.url.path, user=g.get("user")
        )

    async def look_async() -> None:
        look()

    async def endpoint(req: Request) -> PlainTextResponse:
        g.user = "ada"
        task = BackgroundTask(look if kind == "sync" else look_async)
        return PlainTextResponse("ok", background=task)

    app = make_app(Route("/bg", endpoint))
    TestClient(app, backend=anyio_backend).get("/bg")

    assert seen == {"app": app, "path": "/bg", "user": "ada"}


async def call_asgi(app: Starlette, path: str) -> list[Message]:
    """Make one GET request to ``app`` directly, as a server would."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "client": ("testclient", 50000),
        "server": ("testserver", 80),
    }
    messages: list[Message] = [
        {"type": "http.request", "body": b"", "more_body": False},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0) if len(messages) > 1 else messages[0]

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


@pytest.mark.anyio
async def test_concurrent_requests_do_not_see_each_other() -> None:
    first_in, second_done = anyio.Event(), anyio.Event()
    seen: dict[str, tuple[str, Any]] = {}

    async def first(req: Request) -> PlainTextResponse:
        g.name = "first"
        first_in.set()
        await second_done.wait()
        seen["first"] = (request.url.path, g.name)
        return PlainTextResponse("ok")

    async def second(req: Request) -> PlainTextResponse:
        await first_in.wait()
        seen["second"] = (request.url.path, g.get("name"))
        second_done.set()
        return PlainTextResponse("ok")

    app = make_app(Route("/first", first), Route("/second", second))
    async with anyio.create_task_group() as tg:
        tg.start_soon(call_asgi, app, "/first")
        tg.start_soon(call_asgi, app, "/second")

    assert seen == {"first": ("/first", "first"), "second": ("/second", None)}

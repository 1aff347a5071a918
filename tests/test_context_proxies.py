"""current_app, g and request forward to the objects of the current context:
attributes, items, operators, and what they say when no context is there."""

from __future__ import annotations

from typing import Any

import pytest
from context_apps import App, bound, connected, make_app
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from asignals import app_context, current_app, g, request, request_started
from asignals._requests import Connection


class Config(dict[str, Any]):
    """A mapping app, hashable by identity like most apps."""

    __hash__ = object.__hash__  # type: ignore[assignment]


# Forwarding through the proxies


def test_current_app_forwards_attribute_access() -> None:
    app = App("a")

    with app_context(app):
        current_app.version = 2
        assert app.version == 2  # type: ignore[attr-defined]
        assert current_app.version == 2
        del current_app.version
        assert not hasattr(app, "version")
        with pytest.raises(AttributeError, match="missing"):
            _ = current_app.missing


def test_current_app_forwards_item_access_and_container_operations() -> None:
    app = Config(debug=True)

    with app_context(app):
        assert current_app["debug"] is True
        current_app["name"] = "demo"
        del current_app["debug"]
        assert "name" in current_app
        assert "debug" not in current_app
        assert list(current_app) == ["name"]
        assert len(current_app) == 1
    assert app == {"name": "demo"}


def test_current_app_forwards_calls() -> None:
    def app(*args: Any, **kwargs: Any) -> tuple[Any, ...]:
        return args, kwargs

    with app_context(app):
        assert current_app(1, key=2) == ((1,), {"key": 2})


def test_current_app_forwards_truth() -> None:
    with app_context(Config()):
        assert bool(current_app) is False
    with app_context(Config(debug=True)):
        assert bool(current_app) is True


def test_current_app_forwards_equality_and_hashing() -> None:
    app, other = App("a"), App("b")

    with app_context(app):
        assert current_app == app
        assert not current_app != app  # noqa: SIM202 (forwarding of __ne__)
        assert current_app != other
        assert not current_app == other  # noqa: SIM201 (forwarding of __eq__)
        assert hash(current_app) == hash(app)
        assert current_app in {app}
        assert {app: 1}[current_app] == 1


def test_current_app_compares_with_the_app_own_equality() -> None:
    with app_context(Config(debug=True)):
        assert current_app == {"debug": True}
        assert not current_app != {"debug": True}  # noqa: SIM202 (forwarding of __ne__)
        assert current_app != {"debug": False}


def test_current_app_forwards_repr_str_and_dir() -> None:
    app = App("a")

    with app_context(app):
        assert repr(current_app) == "<App a>"
        assert str(current_app) == "<App a>"
        assert "name" in dir(current_app)


def test_current_app_in_a_request_is_the_installed_app(anyio_backend: str) -> None:
    seen: list[Any] = []

    async def endpoint(req: Request) -> PlainTextResponse:
        seen.append(current_app._get_current_object())
        return PlainTextResponse("ok")

    app = make_app(Route("/", endpoint))
    TestClient(app, backend=anyio_backend).get("/")

    assert seen == [app]


def test_request_is_a_starlette_request_over_the_endpoint_scope(anyio_backend: str) -> None:
    seen: dict[str, Any] = {}

    async def endpoint(req: Request) -> PlainTextResponse:
        seen.update(
            is_request=isinstance(request, Request),
            method=request.method,
            path=request.url.path,
            query=request.query_params["q"],
            same_scope=request.scope is req.scope,
            own_object=request._get_current_object() is req,
        )
        return PlainTextResponse("ok")

    client = TestClient(
        make_app(Route("/items", endpoint, methods=["POST"])), backend=anyio_backend
    )
    client.post("/items?q=1")

    assert seen == {
        "is_request": True,
        "method": "POST",
        "path": "/items",
        "query": "1",
        "same_scope": True,
        "own_object": False,
    }


def test_request_has_the_path_params_of_the_route(anyio_backend: str) -> None:
    seen: list[Any] = []

    async def endpoint(req: Request) -> PlainTextResponse:
        seen.append(request.path_params)
        return PlainTextResponse("ok")

    client = TestClient(make_app(Route("/items/{item_id:int}", endpoint)), backend=anyio_backend)
    client.get("/items/3")

    assert seen == [{"item_id": 3}]


def test_request_forwards_item_access_over_the_scope(anyio_backend: str) -> None:
    seen: dict[str, Any] = {}

    async def endpoint(req: Request) -> PlainTextResponse:
        seen.update(
            type=request["type"],
            path=request["path"],
            has_method="method" in request,
            has_nonsense="nonsense" in request,
            keys=list(request) == list(req.scope),
            length=len(request) == len(req.scope),
        )
        return PlainTextResponse("ok")

    TestClient(make_app(Route("/items", endpoint)), backend=anyio_backend).get("/items")

    assert seen == {
        "type": "http",
        "path": "/items",
        "has_method": True,
        "has_nonsense": False,
        "keys": True,
        "length": True,
    }


def test_request_state_is_shared_with_the_endpoint_request(anyio_backend: str) -> None:
    seen: dict[str, Any] = {}

    async def endpoint(req: Request) -> PlainTextResponse:
        req.state.user = "ada"
        request.state.theme = "dark"
        seen.update(user=request.state.user, theme=req.state.theme)
        return PlainTextResponse("ok")

    TestClient(make_app(Route("/", endpoint)), backend=anyio_backend).get("/")

    assert seen == {"user": "ada", "theme": "dark"}


def test_request_state_set_by_a_request_started_receiver_reaches_the_endpoint(
    anyio_backend: str,
) -> None:
    seen: list[Any] = []

    def on_started(sender: Any) -> None:
        request.state.user = "ada"

    async def endpoint(req: Request) -> PlainTextResponse:
        seen.append(req.state.user)
        return PlainTextResponse("ok")

    with connected((request_started, on_started)):
        TestClient(make_app(Route("/", endpoint)), backend=anyio_backend).get("/")

    assert seen == ["ada"]


def test_request_forwards_equality_and_hashing(anyio_backend: str) -> None:
    seen: dict[str, Any] = {}

    async def endpoint(req: Request) -> PlainTextResponse:
        obj = request._get_current_object()
        seen.update(
            same=obj is request._get_current_object(),
            equal=request == obj,
            hash=hash(request) == hash(obj),
            # Starlette compares connections by identity, not by scope.
            endpoint_request=request != req,
        )
        return PlainTextResponse("ok")

    TestClient(make_app(Route("/", endpoint)), backend=anyio_backend).get("/")

    assert seen == {"same": True, "equal": True, "hash": True, "endpoint_request": True}


def test_request_in_a_websocket_is_an_http_connection(anyio_backend: str) -> None:
    seen: dict[str, Any] = {}

    async def handler(websocket: WebSocket) -> None:
        await websocket.accept()
        seen.update(
            type=type(request._get_current_object()),
            is_connection=isinstance(request, HTTPConnection),
            is_request=isinstance(request, Request),
            path=request.url.path,
            scope_type=request["type"],
            app=current_app._get_current_object(),
        )
        await websocket.close()

    app = make_app(WebSocketRoute("/ws", handler))
    with TestClient(app, backend=anyio_backend).websocket_connect("/ws"):
        pass

    assert seen == {
        "type": Connection,  # Starlette's HTTPConnection, answering Flask's names too
        "is_connection": True,
        "is_request": False,
        "path": "/ws",
        "scope_type": "websocket",
        "app": app,
    }


def test_each_request_gets_a_fresh_g(anyio_backend: str) -> None:
    seen: list[Any] = []

    async def endpoint(req: Request) -> PlainTextResponse:
        seen.append(g.get("visits"))
        g.visits = 1
        return PlainTextResponse("ok")

    client = TestClient(make_app(Route("/", endpoint)), backend=anyio_backend)
    client.get("/")
    client.get("/")

    assert seen == [None, None]


def test_request_is_unbound_after_the_request(anyio_backend: str) -> None:
    ctxs: list[HTTPConnection] = []

    async def endpoint(req: Request) -> PlainTextResponse:
        ctxs.append(request._get_current_object())
        return PlainTextResponse("ok")

    TestClient(make_app(Route("/", endpoint)), backend=anyio_backend).get("/")

    assert len(ctxs) == 1
    assert bound(request) is None
    assert bound(current_app) is None

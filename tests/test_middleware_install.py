"""The ways an app gets SignalMiddleware (install(), wrapping, add_middleware,
the middleware list, FastAPI), installed twice, and mounted sub-apps: the same
signals in the same order each way."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from fastapi import HTTPException as FastAPIHTTPException
from helpers import Boom, client
from middleware_apps import NORMAL, TEARDOWN, UNHANDLED, Events, failing_app, hello_app
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from asignals import ResponseHead, SignalMiddleware, current_app, install, request_finished


async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A plain ASGI app, not Starlette."""
    await PlainTextResponse("raw")(scope, receive, send)


async def raw_failing_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise Boom("raw app failed")


# The ways to install the middleware


def test_install_returns_the_app_itself() -> None:
    app = hello_app()

    assert install(app) is app


def test_install_keeps_routes_and_state(anyio_backend: str) -> None:
    async def state(request: Request) -> Response:
        return PlainTextResponse(request.app.state.greeting)

    app = Starlette(routes=[Route("/", state)])
    app.state.greeting = "kept"
    routes = app.routes

    installed = install(app)

    assert installed.routes is routes
    assert installed.state.greeting == "kept"
    assert client(installed, anyio_backend).get("/").text == "kept"


def test_install_is_idempotent() -> None:
    app = install(hello_app())
    build = app.build_middleware_stack

    assert install(app) is app
    assert app.build_middleware_stack is build


def test_install_again_with_another_receiver_errors_is_refused() -> None:
    app = install(hello_app())

    with pytest.raises(ValueError, match="receiver_errors='raise'"):
        install(app, receiver_errors="log")


def test_install_refuses_an_app_that_is_not_starlette() -> None:
    with pytest.raises(TypeError, match="SignalMiddleware"):
        install(raw_app)  # type: ignore[type-var]


def test_install_refuses_an_app_that_served_a_request(anyio_backend: str) -> None:
    app = hello_app()
    client(app, anyio_backend).get("/")

    with pytest.raises(RuntimeError, match="before the app handles its first request"):
        install(app)


def test_install_refuses_an_app_that_ran_its_lifespan(anyio_backend: str) -> None:
    app = hello_app()
    with client(app, anyio_backend):
        pass

    with pytest.raises(RuntimeError, match="before the app handles its first request"):
        install(app)


def test_signal_middleware_around_a_starlette_app(anyio_backend: str, events: Events) -> None:
    app = hello_app(events)

    response = client(SignalMiddleware(app), anyio_backend).get("/")

    assert response.text == "hello"
    assert events.names == [*NORMAL[:2], "endpoint", *NORMAL[2:]]
    assert events.senders == [app] * len(NORMAL)


def test_signal_middleware_around_a_raw_asgi_app(anyio_backend: str, events: Events) -> None:
    response = client(SignalMiddleware(raw_app), anyio_backend).get("/")

    assert response.text == "raw"
    assert events.names == NORMAL
    assert events.senders == [raw_app] * len(NORMAL)


def add_middleware_form(app: Starlette) -> Starlette:
    app.add_middleware(SignalMiddleware)
    return app


def middleware_list_form(app: Starlette) -> Starlette:
    return Starlette(routes=app.routes, middleware=[Middleware(SignalMiddleware)])


INSIDE_FORMS = pytest.mark.parametrize(
    "form", [add_middleware_form, middleware_list_form], ids=["add_middleware", "middleware_list"]
)


@INSIDE_FORMS
def test_middleware_inside_starlette_order(
    anyio_backend: str, events: Events, form: Callable[[Starlette], Starlette]
) -> None:
    app = form(hello_app(events))

    response = client(app, anyio_backend).get("/")

    assert response.text == "hello"
    assert events.names == [*NORMAL[:2], "endpoint", *NORMAL[2:]]
    assert events.senders == [app] * len(NORMAL)


@INSIDE_FORMS
def test_middleware_inside_starlette_has_no_request_finished_on_unhandled_exception(
    anyio_backend: str, events: Events, form: Callable[[Starlette], Starlette]
) -> None:
    error = Boom("endpoint failed")
    app = form(failing_app(error))

    response = client(app, anyio_backend, raise_server_exceptions=False).get("/")

    assert response.status_code == 500
    assert events.names == [
        "appcontext-pushed",
        "request-started",
        "got-request-exception",
        *TEARDOWN,
    ]
    assert events.one("got-request-exception") == {"exception": error}
    assert events.one("request-tearing-down") == {"exc": error}
    assert events.one("appcontext-tearing-down") == {"exc": error}
    assert events.senders == [app] * 6


def test_signal_middleware_around_starlette_app_gives_flasks_order_on_an_error(
    anyio_backend: str, events: Events
) -> None:
    error = Boom("endpoint failed")
    app = failing_app(error)

    response = client(SignalMiddleware(app), anyio_backend, raise_server_exceptions=False).get("/")

    assert response.status_code == 500
    assert events.names == [
        "appcontext-pushed",
        "request-started",
        "got-request-exception",
        "request-finished",
        *TEARDOWN,
    ]
    assert events.one("request-finished")["response"].status_code == 500
    assert events.one("got-request-exception") == {"exception": error}
    assert events.one("request-tearing-down") == {"exc": error}


def test_signal_middleware_around_a_starlette_app_that_served_already_hooks_it(
    anyio_backend: str, events: Events
) -> None:
    error = Boom("endpoint failed")
    app = failing_app(error)
    client(app, anyio_backend, raise_server_exceptions=False).get("/")  # builds its stack
    events.clear()

    response = client(SignalMiddleware(app), anyio_backend, raise_server_exceptions=False).get("/")

    assert response.status_code == 500
    assert events.names == [
        "appcontext-pushed",
        "request-started",
        "got-request-exception",
        "request-finished",
        *TEARDOWN,
    ]


def test_signal_middleware_around_raw_asgi_app_on_unhandled_exception(
    anyio_backend: str, events: Events
) -> None:
    app = SignalMiddleware(raw_failing_app)

    with pytest.raises(Boom) as raised:
        client(app, anyio_backend).get("/")

    assert events.names == [
        "appcontext-pushed",
        "request-started",
        "got-request-exception",
        *TEARDOWN,
    ]
    assert events.one("got-request-exception") == {"exception": raised.value}
    assert events.one("request-tearing-down") == {"exc": raised.value}


@pytest.mark.parametrize(
    "wrap",
    [install, SignalMiddleware, add_middleware_form, middleware_list_form],
    ids=["install", "SignalMiddleware", "add_middleware", "middleware_list"],
)
def test_unhandled_exception_propagates_whatever_the_form(
    anyio_backend: str, events: Events, wrap: Callable[[Starlette], Any]
) -> None:
    error = Boom("endpoint failed")
    app = wrap(failing_app(error))

    with pytest.raises(Boom) as raised:
        client(app, anyio_backend).get("/")

    assert raised.value is error
    assert events.names[-3:] == TEARDOWN


# Installed twice, and mounted sub-apps


def test_install_twice_sends_each_signal_once(anyio_backend: str, events: Events) -> None:
    app = install(install(hello_app()))

    client(app, anyio_backend).get("/")

    assert events.names == NORMAL


def test_install_and_add_middleware_send_each_signal_once(
    anyio_backend: str, events: Events
) -> None:
    app = hello_app()
    app.add_middleware(SignalMiddleware)
    install(app)

    client(app, anyio_backend).get("/")

    assert events.names == NORMAL


def test_install_and_add_middleware_send_each_signal_once_on_unhandled_exception(
    anyio_backend: str, events: Events
) -> None:
    app = failing_app()
    app.add_middleware(SignalMiddleware)
    install(app)

    client(app, anyio_backend, raise_server_exceptions=False).get("/")

    assert events.names == UNHANDLED


def test_nested_signal_middleware_sends_each_signal_once(
    anyio_backend: str, events: Events
) -> None:
    app = hello_app()

    client(SignalMiddleware(SignalMiddleware(app)), anyio_backend).get("/")

    assert events.names == NORMAL
    assert events.senders == [app] * len(NORMAL)


@pytest.mark.parametrize("sub_form", ["plain", "install", "add_middleware"])
def test_mounted_sub_app_keeps_the_outer_app_as_sender(
    anyio_backend: str, events: Events, sub_form: str
) -> None:
    async def hello(request: Request) -> Response:
        return PlainTextResponse("sub")

    sub = Starlette(routes=[Route("/", hello)])
    if sub_form == "install":
        install(sub)
    elif sub_form == "add_middleware":
        sub.add_middleware(SignalMiddleware)
    app = install(Starlette(routes=[Mount("/sub", app=sub)]))

    response = client(app, anyio_backend).get("/sub/")

    assert response.text == "sub"
    assert events.names == NORMAL
    assert events.senders == [app] * len(NORMAL)


def test_current_app_in_a_mounted_sub_app_is_the_outer_app(anyio_backend: str) -> None:
    seen: list[Any] = []

    async def hello(request: Request) -> Response:
        seen.append(current_app._get_current_object())
        return PlainTextResponse("sub")

    sub = install(Starlette(routes=[Route("/", hello)]))
    app = install(Starlette(routes=[Mount("/sub", app=sub)]))

    client(app, anyio_backend).get("/sub/")

    assert seen == [app]


def test_unhandled_exception_in_an_installed_sub_app_is_reported_once(
    anyio_backend: str, events: Events
) -> None:
    error = Boom("sub failed")
    sub = install(failing_app(error))
    app = install(Starlette(routes=[Mount("/sub", app=sub)]))

    response = client(app, anyio_backend, raise_server_exceptions=False).get("/sub/")

    assert response.status_code == 500
    assert events.names == UNHANDLED
    assert events.one("got-request-exception") == {"exception": error}
    assert events.senders == [app] * len(UNHANDLED)


@pytest.mark.parametrize("form", ["install", "SignalMiddleware"])
@pytest.mark.parametrize("framework", ["starlette", "fastapi", "nested"])
def test_unhandled_exception_in_a_mounted_app_keeps_flasks_order(
    anyio_backend: str, events: Events, framework: str, form: str
) -> None:
    """A mounted app makes its own 500; got_request_exception comes first."""
    error = Boom("mounted app failed")

    async def fail(request: Request) -> Response:
        raise error

    if framework == "fastapi":
        mounted: Starlette = FastAPI()
        mounted.add_route("/", fail)
    else:
        mounted = Starlette(routes=[Route("/", fail)])
    if framework == "nested":
        mounted = Starlette(routes=[Mount("/inner", app=mounted)])
    path = "/sub/inner/" if framework == "nested" else "/sub/"
    outer = Starlette(routes=[Mount("/sub", app=mounted)])
    app: Any = install(outer) if form == "install" else SignalMiddleware(outer)

    response = client(app, anyio_backend, raise_server_exceptions=False).get(path)

    assert response.status_code == 500
    assert events.names == UNHANDLED
    assert events.one("got-request-exception") == {"exception": error}
    assert events.one("request-tearing-down") == {"exc": error}


@pytest.mark.parametrize("form", ["install", "SignalMiddleware"])
def test_failing_request_finished_receiver_on_a_mounted_apps_500_is_logged(
    anyio_backend: str, caplog: pytest.LogCaptureFixture, form: str
) -> None:
    error = Boom("mounted app failed")

    def fail_on_500(sender: Any, response: ResponseHead) -> None:
        if response.status_code == 500:
            raise KeyError("receiver failed")

    outer = Starlette(routes=[Mount("/sub", app=failing_app(error))])
    app: Any = install(outer) if form == "install" else SignalMiddleware(outer)
    caplog.set_level(logging.ERROR, logger="asignals")
    with request_finished.connected_to(fail_on_500), pytest.raises(Boom) as raised:
        client(app, anyio_backend).get("/sub/")

    assert raised.value is error
    assert "fail_on_500" in caplog.text


# FastAPI


def fastapi_app(events: Events) -> FastAPI:
    app = FastAPI()

    async def user() -> str:
        events.note("dependency")
        return "ada"

    @app.get("/")
    async def index() -> dict[str, str]:
        events.note("endpoint")
        return {"hello": "world"}

    @app.get("/sync")
    def sync_index() -> dict[str, bool]:
        events.note("endpoint")
        return {"app": current_app._get_current_object() is app}

    @app.get("/user")
    async def with_user(name: str = Depends(user)) -> dict[str, str]:
        events.note("endpoint")
        return {"user": name}

    @app.get("/teapot")
    async def teapot() -> None:
        raise FastAPIHTTPException(status_code=418)

    @app.get("/fail")
    async def fail() -> None:
        raise Boom("fastapi endpoint failed")

    return install(app)


def test_fastapi_normal_order(anyio_backend: str, events: Events) -> None:
    app = fastapi_app(events)

    response = client(app, anyio_backend).get("/")

    assert response.json() == {"hello": "world"}
    assert events.names == [*NORMAL[:2], "endpoint", *NORMAL[2:]]
    assert events.senders == [app] * len(NORMAL)


def test_fastapi_http_exception(anyio_backend: str, events: Events) -> None:
    app = fastapi_app(events)

    response = client(app, anyio_backend).get("/teapot")

    assert response.status_code == 418
    assert events.names == NORMAL
    assert events.one("request-finished")["response"].status_code == 418
    assert events.one("request-tearing-down") == {"exc": None}
    assert events.senders == [app] * len(NORMAL)


def test_fastapi_unhandled_exception(anyio_backend: str, events: Events) -> None:
    app = fastapi_app(events)

    response = client(app, anyio_backend, raise_server_exceptions=False).get("/fail")

    assert response.status_code == 500
    assert events.names == UNHANDLED
    error = events.one("got-request-exception")["exception"]
    assert isinstance(error, Boom)
    assert events.one("request-finished")["response"].status_code == 500
    assert events.one("request-tearing-down") == {"exc": error}
    assert events.senders == [app] * len(UNHANDLED)


def test_fastapi_dependency(anyio_backend: str, events: Events) -> None:
    app = fastapi_app(events)

    response = client(app, anyio_backend).get("/user")

    assert response.json() == {"user": "ada"}
    assert events.names == [*NORMAL[:2], "dependency", "endpoint", *NORMAL[2:]]
    assert events.senders == [app] * len(NORMAL)


def test_fastapi_sync_endpoint(anyio_backend: str, events: Events) -> None:
    app = fastapi_app(events)

    response = client(app, anyio_backend).get("/sync")

    assert response.json() == {"app": True}
    assert events.names == [*NORMAL[:2], "endpoint", *NORMAL[2:]]
    assert events.senders == [app] * len(NORMAL)

"""flash() and get_flashed_messages(): Flask's flash messages, kept in the
session of Starlette's SessionMiddleware, in apps that asignals.install() set
up, with the message_flashed signal."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio.lowlevel
import jinja2
import pytest
from helpers import Boom, client
from markupsafe import Markup
from raw_asgi import http_scope
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.middleware.sessions import Session, SessionMiddleware
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.types import Message, Scope
from starlette.websockets import WebSocket

import asignals
from asignals import (
    ResponseHead,
    SignalMiddleware,
    app_context,
    flash,
    g,
    get_flashed_messages,
    got_request_exception,
    install,
    lifecycle,
    message_flashed,
    request_finished,
    request_started,
    request_tearing_down,
)
from asignals.templating import Jinja2Templates
from asignals.testing import record_signals

Endpoint = Callable[[Request], Any]


# Apps, endpoints and clients


async def read_messages(request: Request) -> Response:
    """The messages waiting in the session, as [category, message] pairs."""
    return JSONResponse(get_flashed_messages(with_categories=True))


def flash_app(*routes: BaseRoute, receiver_errors: Any = "raise", **kwargs: Any) -> Starlette:
    """An app with ``routes``, a ``/read`` route that reads the messages,
    Starlette's SessionMiddleware, and asignals installed."""
    return install(session_app(*routes, **kwargs), receiver_errors=receiver_errors)


def session_app(*routes: BaseRoute, **kwargs: Any) -> Starlette:
    """:func:`flash_app` without asignals."""
    return Starlette(
        routes=[*routes, Route("/read", read_messages)],
        middleware=[Middleware(SessionMiddleware, secret_key="test")],
        **kwargs,
    )


def endpoint(kind: str, body: Callable[[Request], Response]) -> Endpoint:
    """An endpoint that runs ``body``: async (on the event loop) or sync (in
    Starlette's threadpool)."""
    if kind == "sync":

        def sync_endpoint(request: Request) -> Response:
            return body(request)

        return sync_endpoint

    async def async_endpoint(request: Request) -> Response:
        return body(request)

    return async_endpoint


def flashing(kind: str, *flashes: tuple[Any, str]) -> Endpoint:
    """An endpoint that flashes each (message, category), in order."""

    def body(request: Request) -> Response:
        for message, category in flashes:
            flash(message, category)
        return PlainTextResponse("flashed")

    return endpoint(kind, body)


def reading(kind: str, seen: list[Any], **kwargs: Any) -> Endpoint:
    """An endpoint that keeps what ``get_flashed_messages(**kwargs)`` returns
    in ``seen``."""

    def body(request: Request) -> Response:
        seen.append(get_flashed_messages(**kwargs))
        return PlainTextResponse("read")

    return endpoint(kind, body)


def attempt(errors: list[Exception], call: Callable[[], Any]) -> None:
    """Call ``call``, keeping its exception in ``errors``: an endpoint that
    catches the error returns a normal response, which saves the session, so
    what the failed call may have stored would show in the next request."""
    try:
        call()
    except Exception as exc:
        errors.append(exc)


def receiver_of(kind: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` itself, or an async receiver that calls it after a checkpoint."""
    if kind == "sync":
        return fn

    async def receiver(sender: Any, **kwargs: Any) -> Any:
        await anyio.lowlevel.checkpoint()
        return fn(sender, **kwargs)

    return receiver


@contextmanager
def recording_lifecycle(kind: str, names: list[str]) -> Iterator[list[str]]:
    """A receiver of ``kind`` (sync or async) on every lifecycle signal, that
    appends the signal's name to ``names`` (where the endpoints add notes)."""

    def recorder(name: str) -> Callable[..., Any]:
        def record(sender: Any, **kwargs: Any) -> None:
            names.append(name)

        return receiver_of(kind, record)

    with ExitStack() as stack:
        for name, signal in lifecycle.items():
            stack.enter_context(signal.connected_to(recorder(name)))
        yield names


@pytest.fixture(params=["async", "sync"])
def endpoint_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["sync", "async"])
def receiver_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


CALLS: dict[str, Callable[[], Any]] = {
    "flash": lambda: flash("hello"),
    "get_flashed_messages": get_flashed_messages,
}


@pytest.fixture(params=list(CALLS))
def call(request: pytest.FixtureRequest) -> Callable[[], Any]:
    """flash() or get_flashed_messages(): both need a request and a session."""
    return CALLS[request.param]


# Templates

TEMPLATES = {
    "messages.html": (
        "{% for message in get_flashed_messages() %}<p>{{ message }}</p>{% endfor %}"
    ),
    "categories.html": (
        "{% for category, message in get_flashed_messages(with_categories=true) %}"
        '<p class="{{ category }}">{{ message }}</p>'
        "{% endfor %}"
    ),
}


def dict_templates() -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.DictLoader(TEMPLATES), autoescape=True)
    return Jinja2Templates(env=env)


RENDERS = ["TemplateResponse-async", "TemplateResponse-sync", "render_response"]


def page(render: str, templates: Jinja2Templates, name: str) -> Endpoint:
    """An endpoint that renders template ``name``: with TemplateResponse in an
    async or a sync endpoint, or with render_response."""
    if render == "render_response":

        async def rendered(request: Request) -> Response:
            return await templates.render_response(request, name)

        return rendered
    kind = render.removeprefix("TemplateResponse-")
    return endpoint(kind, lambda request: templates.TemplateResponse(request, name))


# Flask's tests/test_basic.py: test_flashes and test_extended_flashing


def test_flashes(anyio_backend: str, endpoint_kind: str) -> None:
    seen: list[Any] = []

    def body(request: Request) -> Response:
        session: Session = request.session  # type: ignore[assignment]
        assert not session.modified
        flash("Zap")
        session.modified = False
        flash("Zip")
        seen.append(session.modified)
        seen.append(get_flashed_messages())
        return PlainTextResponse("ok")

    app = flash_app(Route("/", endpoint(endpoint_kind, body)))

    client(app, anyio_backend).get("/")

    assert seen == [True, ["Zap", "Zip"]]


EXTENDED = (
    ("Hello World", "message"),
    ("Hello World", "error"),
    (Markup("<em>Testing</em>"), "warning"),
)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({}, ["Hello World", "Hello World", Markup("<em>Testing</em>")], id="all"),
        pytest.param(
            {"with_categories": True},
            [
                ("message", "Hello World"),
                ("error", "Hello World"),
                ("warning", Markup("<em>Testing</em>")),
            ],
            id="with_categories",
        ),
        pytest.param(
            {"category_filter": ["message"], "with_categories": True},
            [("message", "Hello World")],
            id="filter",
        ),
        pytest.param(
            {"category_filter": ["message", "warning"], "with_categories": True},
            [("message", "Hello World"), ("warning", Markup("<em>Testing</em>"))],
            id="filters",
        ),
        pytest.param(
            {"category_filter": ["message", "warning"]},
            ["Hello World", Markup("<em>Testing</em>")],
            id="filters_without_returning_categories",
        ),
    ],
)
def test_extended_flashing(
    anyio_backend: str, endpoint_kind: str, kwargs: dict[str, Any], expected: list[Any]
) -> None:
    seen: list[Any] = []
    app = flash_app(
        Route("/", flashing(endpoint_kind, *EXTENDED)),
        Route("/test", reading(endpoint_kind, seen, **kwargs)),
    )
    test_client = client(app, anyio_backend)

    test_client.get("/")
    test_client.get("/test")

    assert seen == [expected]


def test_markup_message_stays_markup_in_the_next_request(
    anyio_backend: str, endpoint_kind: str
) -> None:
    seen: list[Any] = []
    app = flash_app(
        Route("/", flashing(endpoint_kind, (Markup("<em>Testing</em>"), "warning"))),
        Route("/test", reading(endpoint_kind, seen)),
    )
    test_client = client(app, anyio_backend)

    test_client.get("/")
    test_client.get("/test")

    [[message]] = seen
    assert type(message) is Markup
    assert message == "<em>Testing</em>"


# Flask's tests/test_signals.py: test_flash_signal


def test_flash_signal(anyio_backend: str, endpoint_kind: str, receiver_kind: str) -> None:
    def index(request: Request) -> Response:
        flash("This is a flash message", category="notice")
        return RedirectResponse("/other", status_code=303)

    app = flash_app(
        Route("/", endpoint(endpoint_kind, index)),
        Route("/other", reading(endpoint_kind, [])),
    )
    recorded: list[tuple[Any, str]] = []

    def record(sender: Any, message: Any, category: str) -> None:
        recorded.append((message, category))

    with message_flashed.connected_to(receiver_of(receiver_kind, record), app):
        client(app, anyio_backend, follow_redirects=False).get("/")

    assert recorded == [("This is a flash message", "notice")]


# Storing and reading


def test_messages_survive_a_redirect(anyio_backend: str, endpoint_kind: str) -> None:
    def save(request: Request) -> Response:
        flash("Saved.")
        return RedirectResponse("/read", status_code=303)

    app = flash_app(Route("/save", endpoint(endpoint_kind, save), methods=["POST"]))

    response = client(app, anyio_backend).post("/save")

    [redirect] = response.history
    assert redirect.status_code == 303
    assert redirect.headers["set-cookie"].startswith("session=")
    assert response.json() == [["message", "Saved."]]


def test_messages_are_read_once(anyio_backend: str, endpoint_kind: str) -> None:
    app = flash_app(Route("/flash", flashing(endpoint_kind, ("Saved.", "message"))))
    test_client = client(app, anyio_backend)
    test_client.get("/flash")

    first = test_client.get("/read")
    second = test_client.get("/read")

    assert first.json() == [["message", "Saved."]]
    assert second.json() == []


def test_messages_live_in_the_clients_session_cookie(anyio_backend: str) -> None:
    app = flash_app(Route("/flash", flashing("async", ("Saved.", "message"))))
    flashing_client = client(app, anyio_backend)
    other_client = client(app, anyio_backend)
    flashing_client.get("/flash")

    assert other_client.get("/read").json() == []
    assert flashing_client.get("/read").json() == [["message", "Saved."]]


def test_no_messages_is_an_empty_list(anyio_backend: str, endpoint_kind: str) -> None:
    seen: list[Any] = []
    app = flash_app(Route("/", reading(endpoint_kind, seen)))

    client(app, anyio_backend).get("/")

    assert seen == [[]]


def test_messages_accumulate_over_requests_until_read(anyio_backend: str) -> None:
    app = flash_app(
        Route("/first", flashing("async", ("first", "message"))),
        Route("/second", flashing("sync", ("second", "error"))),
    )
    test_client = client(app, anyio_backend)
    test_client.get("/first")
    test_client.get("/second")

    response = test_client.get("/read")

    assert response.json() == [["message", "first"], ["error", "second"]]


def test_later_reads_in_a_request_return_the_same_messages(
    anyio_backend: str, endpoint_kind: str
) -> None:
    seen: list[Any] = []

    def read_twice(request: Request) -> Response:
        seen.append(get_flashed_messages())
        seen.append(get_flashed_messages(with_categories=True))
        return PlainTextResponse("read")

    app = flash_app(
        Route("/flash", flashing(endpoint_kind, ("one", "message"), ("two", "error"))),
        Route("/", endpoint(endpoint_kind, read_twice)),
    )
    test_client = client(app, anyio_backend)
    test_client.get("/flash")

    test_client.get("/")

    assert seen == [["one", "two"], [("message", "one"), ("error", "two")]]


def test_category_filter_takes_every_message_out_of_the_session(
    anyio_backend: str, endpoint_kind: str
) -> None:
    seen: list[Any] = []
    app = flash_app(
        Route("/flash", flashing(endpoint_kind, ("one", "message"), ("two", "error"))),
        Route("/errors", reading(endpoint_kind, seen, category_filter=["error"])),
    )
    test_client = client(app, anyio_backend)
    test_client.get("/flash")

    test_client.get("/errors")

    assert seen == [["two"]]
    assert test_client.get("/read").json() == []


def test_a_message_flashed_after_the_first_read_shows_in_the_next_request(
    anyio_backend: str, endpoint_kind: str
) -> None:
    seen: list[Any] = []

    def read_flash_read(request: Request) -> Response:
        seen.append(get_flashed_messages())
        flash("new")
        seen.append(get_flashed_messages())
        return PlainTextResponse("ok")

    app = flash_app(
        Route("/flash", flashing(endpoint_kind, ("old", "message"))),
        Route("/", endpoint(endpoint_kind, read_flash_read)),
    )
    test_client = client(app, anyio_backend)
    test_client.get("/flash")

    test_client.get("/")

    assert seen == [["old"], ["old"]]
    assert test_client.get("/read").json() == [["message", "new"]]


def test_a_message_may_be_any_json_value(anyio_backend: str) -> None:
    message = {"text": "Saved.", "count": 2, "tags": ["a", "b"], "ok": True, "none": None}
    app = flash_app(Route("/flash", flashing("async", (message, "data"))))
    test_client = client(app, anyio_backend)
    test_client.get("/flash")

    response = test_client.get("/read")

    assert response.json() == [["data", message]]


def test_flash_keeps_the_rest_of_the_session(anyio_backend: str) -> None:
    seen: list[Any] = []

    async def login(request: Request) -> Response:
        request.session["user"] = "ada"
        return PlainTextResponse("ok")

    async def look(request: Request) -> Response:
        seen.append(request.session.get("user"))
        return PlainTextResponse("ok")

    app = flash_app(
        Route("/login", login),
        Route("/flash", flashing("async", ("hello", "message"))),
        Route("/look", look),
    )
    test_client = client(app, anyio_backend)
    test_client.get("/login")
    test_client.get("/flash")
    test_client.get("/read")

    test_client.get("/look")

    assert seen == ["ada"]


# Templates


@pytest.mark.parametrize("render", RENDERS)
def test_template_shows_the_flashed_messages(anyio_backend: str, render: str) -> None:
    app = flash_app(
        Route("/flash", flashing("async", ("one", "message"), ("two", "message"))),
        Route("/", page(render, dict_templates(), "messages.html")),
    )
    test_client = client(app, anyio_backend)
    test_client.get("/flash")

    response = test_client.get("/")

    assert response.text == "<p>one</p><p>two</p>"


@pytest.mark.parametrize("render", RENDERS)
def test_template_shows_the_messages_once(anyio_backend: str, render: str) -> None:
    app = flash_app(
        Route("/flash", flashing("async", ("one", "message"))),
        Route("/", page(render, dict_templates(), "messages.html")),
    )
    test_client = client(app, anyio_backend)
    test_client.get("/flash")
    test_client.get("/")

    response = test_client.get("/")

    assert response.text == ""


def test_template_shows_categories(anyio_backend: str) -> None:
    app = flash_app(
        Route("/flash", flashing("async", ("Saved.", "success"), ("Slow.", "warning"))),
        Route("/", page("TemplateResponse-async", dict_templates(), "categories.html")),
    )
    test_client = client(app, anyio_backend)
    test_client.get("/flash")

    response = test_client.get("/")

    assert response.text == '<p class="success">Saved.</p><p class="warning">Slow.</p>'


@pytest.mark.parametrize("render", RENDERS)
def test_template_escapes_messages(anyio_backend: str, render: str) -> None:
    app = flash_app(
        Route("/flash", flashing("async", ("<b>bold</b> & co", "message"))),
        Route("/", page(render, dict_templates(), "messages.html")),
    )
    test_client = client(app, anyio_backend)
    test_client.get("/flash")

    response = test_client.get("/")

    assert response.text == "<p>&lt;b&gt;bold&lt;/b&gt; &amp; co</p>"


def test_template_does_not_escape_a_markup_message(anyio_backend: str) -> None:
    app = flash_app(
        Route("/flash", flashing("async", (Markup("<em>Testing</em>"), "message"))),
        Route("/", page("TemplateResponse-async", dict_templates(), "messages.html")),
    )
    test_client = client(app, anyio_backend)
    test_client.get("/flash")

    response = test_client.get("/")

    assert response.text == "<p><em>Testing</em></p>"


def test_template_directory_escapes_messages_in_html_files(
    anyio_backend: str, tmp_path: Path
) -> None:
    (tmp_path / "messages.html").write_text(TEMPLATES["messages.html"])
    templates = Jinja2Templates(directory=tmp_path)
    app = flash_app(
        Route("/flash", flashing("async", ("<b>bold</b>", "message"))),
        Route("/", page("TemplateResponse-async", templates, "messages.html")),
    )
    test_client = client(app, anyio_backend)
    test_client.get("/flash")

    response = test_client.get("/")

    assert response.text == "<p>&lt;b&gt;bold&lt;/b&gt;</p>"


def test_redirect_round_trip_renders_the_message_once(
    anyio_backend: str, endpoint_kind: str
) -> None:
    """A form posts, the endpoint flashes and redirects (303), the page the
    redirect leads to shows the message; coming back shows nothing."""
    templates = dict_templates()

    def save(request: Request) -> Response:
        flash("Saved <it>.", "success")
        return RedirectResponse("/", status_code=303)

    app = flash_app(
        Route(
            "/", endpoint(endpoint_kind, lambda r: templates.TemplateResponse(r, "categories.html"))
        ),
        Route("/save", endpoint(endpoint_kind, save), methods=["POST"]),
    )
    test_client = client(app, anyio_backend)

    shown = test_client.post("/save")
    again = test_client.get("/")

    assert [r.status_code for r in shown.history] == [303]
    assert shown.text == '<p class="success">Saved &lt;it&gt;.</p>'
    assert again.text == ""


# message_flashed


def test_message_flashed_is_sent_with_the_app_message_and_category(
    anyio_backend: str, endpoint_kind: str
) -> None:
    app = flash_app(Route("/", flashing(endpoint_kind, ("hello", "info"))))

    with record_signals(message_flashed) as sent:
        client(app, anyio_backend).get("/")

    assert [(s.sender, s.kwargs) for s in sent] == [(app, {"message": "hello", "category": "info"})]


def test_message_flashed_gets_a_markup_message_as_markup(anyio_backend: str) -> None:
    app = flash_app(Route("/", flashing("async", (Markup("<em>hi</em>"), "message"))))
    received: list[Any] = []

    def record(sender: Any, message: Any, category: str) -> None:
        received.append(message)

    with message_flashed.connected_to(record, app):
        client(app, anyio_backend).get("/")

    assert received == [Markup("<em>hi</em>")]
    assert type(received[0]) is Markup


def test_a_deferred_send_is_recorded_once(anyio_backend: str) -> None:
    app = flash_app(Route("/", flashing("async", ("hello", "message"))))

    async def receiver(sender: Any, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()

    with record_signals(message_flashed) as sent, message_flashed.connected_to(receiver):
        client(app, anyio_backend).get("/")

    assert len(sent) == 1


@pytest.mark.parametrize(
    ("endpoint_kind", "receiver_kind"),
    [("async", "sync"), ("sync", "sync"), ("sync", "async")],
)
def test_message_flashed_receivers_run_inside_flash(
    anyio_backend: str, endpoint_kind: str, receiver_kind: str
) -> None:
    names: list[str] = []

    def flash_page(request: Request) -> Response:
        names.append("endpoint: before flash")
        flash("hello")
        names.append("endpoint: after flash")
        return PlainTextResponse("ok")

    app = flash_app(Route("/", endpoint(endpoint_kind, flash_page)))

    with recording_lifecycle(receiver_kind, names):
        client(app, anyio_backend).get("/")

    assert names == [
        "appcontext-pushed",
        "request-started",
        "endpoint: before flash",
        "message-flashed",
        "endpoint: after flash",
        "request-finished",
        "request-tearing-down",
        "appcontext-tearing-down",
        "appcontext-popped",
    ]


def test_async_receiver_in_an_async_endpoint_runs_before_request_finished(
    anyio_backend: str,
) -> None:
    names: list[str] = []

    async def flash_page(request: Request) -> Response:
        names.append("endpoint: before flash")
        flash("hello")
        names.append("endpoint: after flash")
        return PlainTextResponse("ok")

    app = flash_app(Route("/", flash_page))

    with recording_lifecycle("async", names):
        client(app, anyio_backend).get("/")

    assert names == [
        "appcontext-pushed",
        "request-started",
        "endpoint: before flash",
        "endpoint: after flash",
        "message-flashed",
        "request-finished",
        "request-tearing-down",
        "appcontext-tearing-down",
        "appcontext-popped",
    ]


def test_sync_receivers_run_at_once_and_async_ones_later_in_an_async_endpoint(
    anyio_backend: str,
) -> None:
    calls: list[str] = []

    async def flash_page(request: Request) -> Response:
        flash("one")
        flash("two")
        calls.append("endpoint returned")
        return PlainTextResponse("ok")

    def sync_receiver(sender: Any, message: str, category: str) -> None:
        calls.append(f"sync {message}")

    async def async_receiver(sender: Any, message: str, category: str) -> None:
        await anyio.lowlevel.checkpoint()
        calls.append(f"async {message}")

    def finished(sender: Any, response: ResponseHead) -> None:
        calls.append("request finished")

    app = flash_app(Route("/", flash_page))

    with (
        message_flashed.connected_to(async_receiver, app),
        message_flashed.connected_to(sync_receiver, app),
        request_finished.connected_to(finished, app),
    ):
        client(app, anyio_backend).get("/")

    assert calls == [
        "sync one",
        "sync two",
        "endpoint returned",
        "async one",
        "async two",
        "request finished",
    ]


@pytest.mark.parametrize(
    ("endpoint_kind", "receiver_kind"),
    [("async", "sync"), ("async", "async"), ("sync", "sync"), ("sync", "async")],
)
def test_message_flashed_receivers_see_the_request_and_g(
    anyio_backend: str, endpoint_kind: str, receiver_kind: str
) -> None:
    seen: list[Any] = []

    def flash_page(request: Request) -> Response:
        g.user = "ada"
        flash("hello")
        return PlainTextResponse("ok")

    def look(sender: Any, **kwargs: Any) -> None:
        seen.append((asignals.current_app._get_current_object(), asignals.request.url.path, g.user))

    app = flash_app(Route("/page", endpoint(endpoint_kind, flash_page)))

    with message_flashed.connected_to(receiver_of(receiver_kind, look)):
        client(app, anyio_backend).get("/page")

    assert seen == [(app, "/page", "ada")]


# Receiver errors


@pytest.mark.parametrize(
    ("endpoint_kind", "receiver_kind"),
    [("async", "sync"), ("sync", "sync"), ("sync", "async")],
)
def test_receiver_error_propagates_out_of_flash(
    anyio_backend: str, endpoint_kind: str, receiver_kind: str
) -> None:
    error = Boom("receiver failed")
    errors: list[Exception] = []

    def fail(sender: Any, **kwargs: Any) -> None:
        raise error

    def flash_page(request: Request) -> Response:
        attempt(errors, lambda: flash("hello"))
        return PlainTextResponse("ok")

    app = flash_app(Route("/", endpoint(endpoint_kind, flash_page)))

    with message_flashed.connected_to(receiver_of(receiver_kind, fail)):
        response = client(app, anyio_backend).get("/")

    assert response.status_code == 200
    assert errors == [error]


def test_message_is_stored_before_a_receiver_raises(anyio_backend: str, endpoint_kind: str) -> None:
    def fail(sender: Any, **kwargs: Any) -> None:
        raise Boom("receiver failed")

    def flash_page(request: Request) -> Response:
        attempt([], lambda: flash("hello"))
        return PlainTextResponse("ok")

    app = flash_app(Route("/", endpoint(endpoint_kind, flash_page)))
    test_client = client(app, anyio_backend)

    with message_flashed.connected_to(fail):
        test_client.get("/")

    assert test_client.get("/read").json() == [["message", "hello"]]


def test_deferred_receiver_error_fails_the_request(anyio_backend: str) -> None:
    error = Boom("receiver failed")
    names: list[str] = []
    exceptions: list[BaseException] = []

    async def fail(sender: Any, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()
        raise error

    def record(sender: Any, exception: BaseException) -> None:
        exceptions.append(exception)

    app = flash_app(Route("/", flashing("async", ("hello", "message"))))

    with (
        message_flashed.connected_to(fail),
        got_request_exception.connected_to(record, app),
        recording_lifecycle("sync", names),
    ):
        response = client(app, anyio_backend, raise_server_exceptions=False).get("/")

    assert response.status_code == 500
    assert exceptions == [error]
    assert names == [
        "appcontext-pushed",
        "request-started",
        "message-flashed",
        "got-request-exception",
        "request-finished",
        "request-tearing-down",
        "appcontext-tearing-down",
        "appcontext-popped",
    ]


def test_deferred_receiver_error_reaches_the_test_client(anyio_backend: str) -> None:
    error = Boom("receiver failed")

    async def fail(sender: Any, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()
        raise error

    app = flash_app(Route("/", flashing("async", ("hello", "message"))))

    with message_flashed.connected_to(fail), pytest.raises(Boom) as raised:
        client(app, anyio_backend).get("/")

    assert raised.value is error


@pytest.mark.parametrize(
    ("endpoint_kind", "receiver_kind"),
    [("async", "sync"), ("async", "async"), ("sync", "sync"), ("sync", "async")],
)
def test_log_mode_logs_a_receiver_error_and_the_request_goes_on(
    anyio_backend: str, endpoint_kind: str, receiver_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    def failing_receiver(sender: Any, **kwargs: Any) -> None:
        raise Boom("receiver failed")

    async def failing_async_receiver(sender: Any, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()
        raise Boom("receiver failed")

    receiver = failing_receiver if receiver_kind == "sync" else failing_async_receiver
    app = flash_app(
        Route("/", flashing(endpoint_kind, ("hello", "message"))), receiver_errors="log"
    )
    test_client = client(app, anyio_backend)
    caplog.set_level(logging.ERROR, logger="asignals")

    with message_flashed.connected_to(receiver):
        response = test_client.get("/")

    assert response.status_code == 200
    [record] = [r for r in caplog.records if r.name == "asignals"]
    assert receiver.__name__ in record.getMessage()
    assert "message-flashed" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], Boom)
    assert test_client.get("/read").json() == [["message", "hello"]]


def test_log_mode_runs_the_receivers_after_a_failing_one(
    anyio_backend: str, endpoint_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    received: list[str] = []

    def fail(sender: Any, **kwargs: Any) -> None:
        raise Boom("receiver failed")

    def record(sender: Any, message: str, category: str) -> None:
        received.append(message)

    app = flash_app(
        Route("/", flashing(endpoint_kind, ("hello", "message"))), receiver_errors="log"
    )
    caplog.set_level(logging.ERROR, logger="asignals")

    with message_flashed.connected_to(fail), message_flashed.connected_to(record):
        client(app, anyio_backend).get("/")

    assert received == ["hello"]


def failing_after_a_flash() -> Endpoint:
    """An endpoint that flashes, then raises Boom (unhandled)."""

    async def fail(request: Request) -> Response:
        flash("hello")
        raise Boom("endpoint failed")

    return fail


@pytest.fixture(params=["no request_finished receiver", "a request_finished receiver"])
def finished_receivers(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whether request_finished has a receiver: install() then sends
    got_request_exception from inside Starlette's error middleware, else from
    outside it."""
    if request.param == "no request_finished receiver":
        yield
        return

    def finished(sender: Any, response: ResponseHead) -> None:
        pass

    with request_finished.connected_to(finished):
        yield


def test_deferred_receiver_runs_before_got_request_exception(
    anyio_backend: str, finished_receivers: None
) -> None:
    calls: list[Any] = []

    async def flashed(sender: Any, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()
        calls.append("message flashed")

    def got(sender: Any, exception: BaseException) -> None:
        calls.append(exception)

    app = flash_app(Route("/", failing_after_a_flash()))

    with (
        message_flashed.connected_to(flashed),
        got_request_exception.connected_to(got, app),
    ):
        response = client(app, anyio_backend, raise_server_exceptions=False).get("/")

    assert response.status_code == 500
    assert len(calls) == 2
    assert calls[0] == "message flashed"
    assert isinstance(calls[1], Boom)


def test_deferred_receiver_error_on_a_failed_request_comes_with_the_requests_exception(
    anyio_backend: str, finished_receivers: None
) -> None:
    """The endpoint's exception stays the request's exception (for
    got_request_exception and the teardown); the receiver's error is raised
    with it, in an ExceptionGroup."""
    receiver_error = KeyError("receiver failed")
    got: list[BaseException] = []
    teardown: list[BaseException | None] = []

    async def fail(sender: Any, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()
        raise receiver_error

    def record_got(sender: Any, exception: BaseException) -> None:
        got.append(exception)

    def record_teardown(sender: Any, exc: BaseException | None) -> None:
        teardown.append(exc)

    app = flash_app(Route("/", failing_after_a_flash()))

    with (
        message_flashed.connected_to(fail),
        got_request_exception.connected_to(record_got, app),
        request_tearing_down.connected_to(record_teardown, app),
        pytest.raises(BaseExceptionGroup) as raised,
    ):
        client(app, anyio_backend).get("/")

    assert [type(error) for error in got] == [Boom]
    assert [type(error) for error in teardown] == [Boom]
    assert [type(error) for error in raised.value.exceptions] == [Boom, KeyError]
    assert raised.value.exceptions[1] is receiver_error


@pytest.mark.anyio
async def test_deferred_receiver_runs_at_the_teardown_of_a_cancelled_request() -> None:
    flashed = anyio.Event()
    names: list[str] = []

    async def flash_and_wait(request: Request) -> Response:
        flash("hello")
        flashed.set()
        await anyio.sleep_forever()
        raise AssertionError("not cancelled")

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        raise AssertionError(f"nothing should be sent, not {message}")

    app = flash_app(Route("/", flash_and_wait))
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "extensions": {},
        "state": {},
    }

    with recording_lifecycle("async", names):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(app.__call__, scope, receive, send)
            await flashed.wait()
            tasks.cancel_scope.cancel()

    assert names == [
        "appcontext-pushed",
        "request-started",
        "message-flashed",
        "request-tearing-down",
        "appcontext-tearing-down",
        "appcontext-popped",
    ]


# Where flash() cannot work


def test_flash_outside_a_request_raises(call: Callable[[], Any]) -> None:
    with pytest.raises(RuntimeError, match="outside a request"):
        call()


def test_flash_in_an_app_context_raises(call: Callable[[], Any]) -> None:
    app = flash_app()

    with app_context(app), pytest.raises(RuntimeError, match="outside a request"):
        call()


@pytest.mark.anyio
async def test_flash_in_an_async_app_context_raises(call: Callable[[], Any]) -> None:
    app = flash_app()

    async with app_context(app):
        with pytest.raises(RuntimeError, match="outside a request"):
            call()


def test_flash_in_the_lifespan_raises(anyio_backend: str, call: Callable[[], Any]) -> None:
    errors: list[Exception] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        attempt(errors, call)
        yield

    app = flash_app(lifespan=lifespan)

    with client(app, anyio_backend):
        pass

    [error] = errors
    assert isinstance(error, RuntimeError)
    assert "outside a request" in str(error)


def test_flash_without_the_middleware_raises(anyio_backend: str, call: Callable[[], Any]) -> None:
    errors: list[Exception] = []

    async def endpoint(request: Request) -> Response:
        attempt(errors, call)
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/", endpoint)],
        middleware=[Middleware(SessionMiddleware, secret_key="test")],
    )

    client(app, anyio_backend).get("/")

    [error] = errors
    assert isinstance(error, RuntimeError)
    assert "outside a request" in str(error)


def test_flash_without_session_middleware_raises(
    anyio_backend: str, endpoint_kind: str, call: Callable[[], Any]
) -> None:
    errors: list[Exception] = []

    def body(request: Request) -> Response:
        attempt(errors, call)
        return PlainTextResponse("ok")

    app = install(Starlette(routes=[Route("/", endpoint(endpoint_kind, body))]))

    client(app, anyio_backend).get("/")

    [error] = errors
    assert isinstance(error, RuntimeError)
    assert "SessionMiddleware" in str(error)


def test_flash_in_a_websocket_raises(anyio_backend: str, call: Callable[[], Any]) -> None:
    async def socket(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            call()
        except RuntimeError as exc:
            await websocket.send_text(f"RuntimeError: {exc}")
        else:
            await websocket.send_text("no error")
        await websocket.close()

    app = flash_app(WebSocketRoute("/ws", socket))

    with client(app, anyio_backend).websocket_connect("/ws") as websocket:
        text = websocket.receive_text()

    assert text.startswith("RuntimeError: ")
    assert "websocket" in text


@pytest.mark.parametrize("form", ["install", "SignalMiddleware"])
@pytest.mark.parametrize("handled", [Exception, 500])
def test_a_message_flashed_in_a_server_error_handler_is_not_silently_lost(
    anyio_backend: str, handled: Any, form: str
) -> None:
    """Starlette runs the handlers of Exception and 500 in its error
    middleware, outside SessionMiddleware, which does not save the session
    for their response: flash() there fails instead of losing the message."""
    errors: list[Exception] = []

    async def fail(request: Request) -> Response:
        raise Boom("endpoint failed")

    async def handler(request: Request, exc: Exception) -> Response:
        attempt(errors, lambda: flash("Something went wrong."))
        return PlainTextResponse("handled", status_code=500)

    routes = (Route("/", fail),)
    handlers = {handled: handler}
    app: Any = (
        flash_app(*routes, exception_handlers=handlers)
        if form == "install"
        else SignalMiddleware(session_app(*routes, exception_handlers=handlers))
    )
    test_client = client(app, anyio_backend, raise_server_exceptions=False)

    response = test_client.get("/")

    assert response.text == "handled"
    shown = test_client.get("/read").json()
    assert [type(error) for error in errors] == [RuntimeError]
    assert "unhandled exception" in str(errors[0])
    assert shown == []


# After the response started: the session was saved, so flash() must fail
# rather than lose the message.


@pytest.mark.parametrize("task_kind", ["async", "sync"])
def test_flash_in_a_background_task_raises(anyio_backend: str, task_kind: str) -> None:
    errors: list[Exception] = []

    def later() -> None:
        attempt(errors, lambda: flash("too late"))

    async def later_async() -> None:
        later()

    async def respond(request: Request) -> Response:
        task = BackgroundTask(later_async if task_kind == "async" else later)
        return PlainTextResponse("ok", background=task)

    app = flash_app(Route("/", respond))
    test_client = client(app, anyio_backend)

    test_client.get("/")

    [error] = errors
    assert isinstance(error, RuntimeError)
    assert "after the response started" in str(error)
    assert test_client.get("/read").json() == []


@pytest.mark.parametrize("when", ["before the first chunk", "after the first chunk"])
def test_flash_in_a_streaming_body_raises(anyio_backend: str, when: str) -> None:
    errors: list[Exception] = []

    async def chunks() -> AsyncIterator[bytes]:
        if when == "before the first chunk":
            attempt(errors, lambda: flash("too late"))
        yield b"one "
        if when == "after the first chunk":
            attempt(errors, lambda: flash("too late"))
        yield b"two"

    async def stream(request: Request) -> Response:
        return StreamingResponse(chunks())

    app = flash_app(Route("/", stream))
    test_client = client(app, anyio_backend)

    response = test_client.get("/")

    assert response.text == "one two"
    [error] = errors
    assert isinstance(error, RuntimeError)
    assert "after the response started" in str(error)
    assert test_client.get("/read").json() == []


def test_flash_in_a_request_finished_receiver_raises(
    anyio_backend: str, receiver_kind: str
) -> None:
    errors: list[Exception] = []

    def flash_late(sender: Any, **kwargs: Any) -> None:
        attempt(errors, lambda: flash("too late"))

    app = flash_app(Route("/", flashing("async")))
    test_client = client(app, anyio_backend)

    with request_finished.connected_to(receiver_of(receiver_kind, flash_late), app):
        test_client.get("/")

    [error] = errors
    assert isinstance(error, RuntimeError)
    assert "after the response started" in str(error)
    assert test_client.get("/read").json() == []


def test_flash_in_a_request_tearing_down_receiver_raises(
    anyio_backend: str, receiver_kind: str
) -> None:
    errors: list[Exception] = []

    def flash_late(sender: Any, **kwargs: Any) -> None:
        attempt(errors, lambda: flash("too late"))

    app = flash_app(Route("/", flashing("async")))
    test_client = client(app, anyio_backend)

    with request_tearing_down.connected_to(receiver_of(receiver_kind, flash_late), app):
        test_client.get("/")

    [error] = errors
    assert isinstance(error, RuntimeError)
    assert "after the response started" in str(error)
    assert test_client.get("/read").json() == []


def test_a_late_flash_sends_no_message_flashed(anyio_backend: str) -> None:
    async def later() -> None:
        attempt([], lambda: flash("too late"))

    async def respond(request: Request) -> Response:
        return PlainTextResponse("ok", background=BackgroundTask(later))

    app = flash_app(Route("/", respond))

    with record_signals(message_flashed) as sent:
        client(app, anyio_backend).get("/")

    assert sent == []


def late_reader(seen: list[Any], errors: list[Exception], *, read_first: bool) -> Endpoint:
    """An endpoint whose background task calls get_flashed_messages(), after
    the response started; with ``read_first``, the endpoint read them before."""

    async def later() -> None:
        attempt(errors, lambda: seen.append(get_flashed_messages()))

    async def respond(request: Request) -> Response:
        if read_first:
            seen.append(get_flashed_messages())
        return PlainTextResponse("ok", background=BackgroundTask(later))

    return respond


def test_get_flashed_messages_after_the_response_started_raises_while_messages_wait(
    anyio_backend: str,
) -> None:
    seen: list[Any] = []
    errors: list[Exception] = []
    app = flash_app(
        Route("/flash", flashing("async", ("waiting", "message"))),
        Route("/", late_reader(seen, errors, read_first=False)),
    )
    test_client = client(app, anyio_backend)
    test_client.get("/flash")

    test_client.get("/")

    assert seen == []
    [error] = errors
    assert isinstance(error, RuntimeError)
    assert "after the response started" in str(error)
    assert test_client.get("/read").json() == [["message", "waiting"]]


def test_get_flashed_messages_after_the_response_started_returns_those_read_before(
    anyio_backend: str,
) -> None:
    seen: list[Any] = []
    errors: list[Exception] = []
    app = flash_app(
        Route("/flash", flashing("async", ("waiting", "message"))),
        Route("/", late_reader(seen, errors, read_first=True)),
    )
    test_client = client(app, anyio_backend)
    test_client.get("/flash")

    test_client.get("/")

    assert errors == []
    assert seen == [["waiting"], ["waiting"]]
    assert test_client.get("/read").json() == []


def test_get_flashed_messages_after_the_response_started_returns_no_messages(
    anyio_backend: str,
) -> None:
    seen: list[Any] = []
    errors: list[Exception] = []
    app = flash_app(Route("/", late_reader(seen, errors, read_first=False)))

    client(app, anyio_backend).get("/")

    assert errors == []
    assert seen == [[]]


# Messages and categories flash() refuses, storing nothing


def refusing(kind: str, errors: list[Exception], message: Any, category: Any) -> Endpoint:
    """An endpoint that flashes "kept", then tries ``message`` in ``category``."""

    def body(request: Request) -> Response:
        flash("kept")
        attempt(errors, lambda: flash(message, category))
        return PlainTextResponse("ok")

    return endpoint(kind, body)


@pytest.mark.parametrize("category", [1, None, b"error", ["error"]])
def test_flash_with_a_category_not_a_str_raises_type_error(
    anyio_backend: str, endpoint_kind: str, category: Any
) -> None:
    errors: list[Exception] = []
    app = flash_app(Route("/", refusing(endpoint_kind, errors, "hello", category)))
    test_client = client(app, anyio_backend)

    test_client.get("/")

    [error] = errors
    assert isinstance(error, TypeError)
    assert "category" in str(error)
    assert test_client.get("/read").json() == [["message", "kept"]]


def _circular() -> list[Any]:
    circular: list[Any] = []
    circular.append(circular)
    return circular


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(object(), id="object"),
        pytest.param(b"bytes", id="bytes"),
        pytest.param({1, 2}, id="set"),
        pytest.param(["ok", object()], id="nested"),
        pytest.param(_circular(), id="circular"),
    ],
)
def test_flash_of_a_message_json_cannot_encode_raises_type_error(
    anyio_backend: str, endpoint_kind: str, message: Any
) -> None:
    errors: list[Exception] = []
    app = flash_app(Route("/", refusing(endpoint_kind, errors, message, "message")))
    test_client = client(app, anyio_backend)

    test_client.get("/")

    [error] = errors
    assert isinstance(error, TypeError)
    assert "JSON" in str(error)
    assert test_client.get("/read").json() == [["message", "kept"]]


def test_flash_of_an_unencodable_message_sends_no_message_flashed(anyio_backend: str) -> None:
    app = flash_app(Route("/", refusing("async", [], object(), "message")))

    with record_signals(message_flashed) as sent:
        client(app, anyio_backend).get("/")

    assert [s.kwargs["message"] for s in sent] == ["kept"]


def test_flash_of_a_message_too_big_for_the_cookie_raises_value_error(
    anyio_backend: str, endpoint_kind: str
) -> None:
    errors: list[Exception] = []
    app = flash_app(Route("/", refusing(endpoint_kind, errors, "x" * 4000, "message")))
    test_client = client(app, anyio_backend)

    test_client.get("/")

    [error] = errors
    assert isinstance(error, ValueError)
    assert "cookie" in str(error)
    assert test_client.get("/read").json() == [["message", "kept"]]


def test_messages_count_toward_the_cookie_size_together(anyio_backend: str) -> None:
    errors: list[Exception] = []

    def flash_twice(request: Request) -> Response:
        flash("x" * 1500)
        attempt(errors, lambda: flash("y" * 1500))
        return PlainTextResponse("ok")

    app = flash_app(Route("/", endpoint("async", flash_twice)))
    test_client = client(app, anyio_backend)

    test_client.get("/")

    assert [type(error) for error in errors] == [ValueError]
    assert test_client.get("/read").json() == [["message", "x" * 1500]]


def test_the_rest_of_the_session_counts_toward_the_cookie_size(anyio_backend: str) -> None:
    errors: list[Exception] = []

    async def fill(request: Request) -> Response:
        request.session["blob"] = "b" * 2500
        return PlainTextResponse("ok")

    app = flash_app(
        Route("/fill", fill),
        Route("/", refusing("async", errors, "x" * 1000, "message")),
    )
    test_client = client(app, anyio_backend)
    client(app, anyio_backend).get("/")
    assert errors == []  # the same message fits in an empty session

    test_client.get("/fill")
    test_client.get("/")

    assert [type(error) for error in errors] == [ValueError]


def test_a_non_ascii_message_is_measured_as_the_session_stores_it(anyio_backend: str) -> None:
    """JSON escapes "é" as \\u00e9, six bytes: 700 of them cannot fit, though
    they are only 1400 bytes of UTF-8."""
    errors: list[Exception] = []
    app = flash_app(Route("/", refusing("async", errors, "é" * 700, "message")))

    client(app, anyio_backend).get("/")

    assert [type(error) for error in errors] == [ValueError]


def test_the_longest_message_flash_accepts_fits_in_a_browser_cookie(anyio_backend: str) -> None:
    async def flash_n(request: Request) -> Response:
        try:
            flash("x" * int(request.query_params["n"]))
        except ValueError:
            return PlainTextResponse("refused", status_code=413)
        return PlainTextResponse("flashed")

    app = flash_app(Route("/", flash_n))

    def probe(n: int) -> Any:
        return client(app, anyio_backend).get("/", params={"n": n})

    accepted, refused = 0, 4096
    while refused - accepted > 1:
        middle = (accepted + refused) // 2
        if probe(middle).status_code == 200:
            accepted = middle
        else:
            refused = middle
    cookie = probe(accepted).headers["set-cookie"].split(";")[0]

    assert cookie.startswith("session=")
    assert 4096 - 64 < len(cookie) <= 4096


@pytest.mark.parametrize(
    "flashes",
    [
        pytest.param(["just a string"], id="str-entry"),
        pytest.param([["only a category"]], id="short-entry"),
        pytest.param([["message", "text", "not html"]], id="long-entry"),
        pytest.param([{"category": "message", "message": "text"}], id="dict-entry"),
        pytest.param([None], id="none-entry"),
    ],
)
def test_malformed_flashes_in_the_session_raise_value_error(
    anyio_backend: str, flashes: list[Any]
) -> None:
    errors: list[Exception] = []

    async def spoil(request: Request) -> Response:
        request.session["_flashes"] = flashes
        return PlainTextResponse("ok")

    async def read(request: Request) -> Response:
        attempt(errors, get_flashed_messages)
        return PlainTextResponse("ok")

    app = flash_app(Route("/spoil", spoil), Route("/", read))
    test_client = client(app, anyio_backend)
    test_client.get("/spoil")

    test_client.get("/")

    [error] = errors
    assert isinstance(error, ValueError)
    assert "_flashes" in str(error)


# The whole request


@pytest.mark.parametrize("render", RENDERS)
def test_signal_order_of_a_request_that_flashes_and_renders_a_template(
    anyio_backend: str, receiver_kind: str, render: str
) -> None:
    templates = dict_templates()

    def flash_and_render_sync(request: Request) -> Response:
        flash("hello")
        return templates.TemplateResponse(request, "messages.html")

    async def flash_and_render_async(request: Request) -> Response:
        flash("hello")
        if render == "render_response":
            return await templates.render_response(request, "messages.html")
        return templates.TemplateResponse(request, "messages.html")

    route = flash_and_render_sync if render == "TemplateResponse-sync" else flash_and_render_async
    app = flash_app(Route("/", route))
    names: list[str] = []

    with recording_lifecycle(receiver_kind, names):
        response = client(app, anyio_backend).get("/")

    assert response.text == "<p>hello</p>"
    assert names == [
        "appcontext-pushed",
        "request-started",
        "message-flashed",
        "before-render-template",
        "template-rendered",
        "request-finished",
        "request-tearing-down",
        "appcontext-tearing-down",
        "appcontext-popped",
    ]


# Cases review found: a cancelled request's teardown, handlers of server
# errors, request_started, mounted apps, typing, and malformed messages


@pytest.mark.anyio
async def test_flash_at_the_teardown_of_a_request_cancelled_before_responding_raises() -> None:
    """No response started, but the request ended: its session will never
    be saved, so the message would be lost."""
    started = anyio.Event()
    errors: list[Exception] = []
    stored: list[bool] = []

    async def wait(request: Request) -> Response:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("not cancelled")

    def flash_late(sender: Any, **kwargs: Any) -> None:
        attempt(errors, lambda: flash("too late"))
        stored.append("_flashes" in asignals.request.session)

    async def receive() -> Message:
        await anyio.sleep_forever()
        raise AssertionError("not cancelled")

    async def send(message: Message) -> None:
        raise AssertionError(f"nothing should be sent, not {message}")

    app = flash_app(Route("/", wait))

    with request_tearing_down.connected_to(flash_late, app):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(app.__call__, http_scope(), receive, send)
            await started.wait()
            tasks.cancel_scope.cancel()

    [error] = errors
    assert isinstance(error, RuntimeError)
    assert stored == [False]


@pytest.mark.parametrize("handled", [Exception, 500])
def test_get_flashed_messages_in_a_server_error_handler_leaves_them_for_the_next_page(
    anyio_backend: str, handled: Any
) -> None:
    """The handler runs outside SessionMiddleware, so taking the messages out
    of the session would not be saved: they would show twice."""
    seen: list[Any] = []

    async def fail(request: Request) -> Response:
        raise Boom("endpoint failed")

    async def handler(request: Request, exc: Exception) -> Response:
        seen.append(get_flashed_messages())
        return PlainTextResponse("handled", status_code=500)

    app = flash_app(
        Route("/flash", flashing("async", ("hello", "message"))),
        Route("/", fail),
        exception_handlers={handled: handler},
    )
    test_client = client(app, anyio_backend, raise_server_exceptions=False)
    test_client.get("/flash")

    response = test_client.get("/")

    assert response.text == "handled"
    assert seen == [[]]
    assert test_client.get("/read").json() == [["message", "hello"]]
    assert test_client.get("/read").json() == []


def test_flash_in_a_request_started_receiver_raises_naming_request_started(
    anyio_backend: str,
) -> None:
    """request_started is sent before SessionMiddleware runs: the error says
    so, rather than only to add the SessionMiddleware the app has."""
    errors: list[Exception] = []

    def flash_early(sender: Any) -> None:
        attempt(errors, lambda: flash("welcome"))

    app = flash_app()

    with request_started.connected_to(flash_early, app):
        client(app, anyio_backend).get("/read")

    [error] = errors
    assert isinstance(error, RuntimeError)
    assert "request_started" in str(error)


def test_flash_in_a_server_error_handler_of_a_mounted_app_within_the_session_is_kept(
    anyio_backend: str, finished_receivers: None
) -> None:
    """The mounted app has no SessionMiddleware of its own: its handlers for
    Exception run inside the outer app's, which saves the session."""
    errors: list[Exception] = []

    async def fail(request: Request) -> Response:
        raise Boom("endpoint failed")

    async def handler(request: Request, exc: Exception) -> Response:
        attempt(errors, lambda: flash("Something went wrong."))
        return PlainTextResponse("handled", status_code=500)

    mounted = Starlette(routes=[Route("/fail", fail)], exception_handlers={Exception: handler})
    app = flash_app(Mount("/mounted", mounted))
    test_client = client(app, anyio_backend, raise_server_exceptions=False)

    response = test_client.get("/mounted/fail")

    assert response.text == "handled"
    assert errors == []
    assert test_client.get("/read").json() == [["message", "Something went wrong."]]


def read_as(with_categories: bool) -> list[Any]:
    """get_flashed_messages() with a bool that is not a literal (mypy --strict
    checks this file)."""
    return get_flashed_messages(with_categories=with_categories)


@pytest.mark.parametrize("with_categories", [False, True])
def test_with_categories_may_be_a_bool_variable(anyio_backend: str, with_categories: bool) -> None:
    seen: list[Any] = []

    async def read(request: Request) -> Response:
        seen.append(read_as(with_categories))
        return PlainTextResponse("read")

    app = flash_app(Route("/flash", flashing("async", ("hello", "info"))), Route("/", read))
    test_client = client(app, anyio_backend)
    test_client.get("/flash")

    test_client.get("/")

    assert seen == [[("info", "hello")] if with_categories else ["hello"]]


@pytest.mark.parametrize(
    "flashes",
    [pytest.param(42, id="int"), pytest.param("just a string", id="str")],
)
def test_malformed_flashes_stay_in_the_session_after_the_value_error(
    anyio_backend: str, call: Callable[[], Any], flashes: Any
) -> None:
    errors: list[Exception] = []
    kept: list[Any] = []

    async def spoil(request: Request) -> Response:
        request.session["_flashes"] = flashes
        return PlainTextResponse("ok")

    async def use(request: Request) -> Response:
        attempt(errors, call)
        kept.append(request.session.get("_flashes"))
        return PlainTextResponse("ok")

    app = flash_app(Route("/spoil", spoil), Route("/", use))
    test_client = client(app, anyio_backend)
    test_client.get("/spoil")

    test_client.get("/")

    [error] = errors
    assert isinstance(error, ValueError)
    assert "_flashes" in str(error)
    assert kept == [flashes]

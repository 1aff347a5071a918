"""asignals.templating.Jinja2Templates: Starlette's Jinja2 templates, which
send Flask's before_render_template and template_rendered around each render,
with the app as sender."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio.lowlevel
import jinja2
import pytest
import starlette.templating
from fastapi import FastAPI
from helpers import Boom, client, receiver_of
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route

import asignals
from asignals import (
    before_render_template,
    current_app,
    flash,
    g,
    got_request_exception,
    install,
    lifecycle,
    message_flashed,
    request_started,
    template_rendered,
)
from asignals.templating import Jinja2Templates
from asignals.testing import record_signals

TEMPLATES = {
    # Flask's tests/templates/simple_template.html
    "simple_template.html": "<h1>{{ whiskey }}</h1>",
    "hello.html": "Hello {{ name }}",
    "path.html": "{{ request.url.path }}",
    "url.html": "{{ url_for('page') }}",
    "value.html": "{{ value }}",
    "flashes.html": "{% for message in get_flashed_messages() %}[{{ message }}]{% endfor %}",
    # note() is a global that records "render" as the template renders.
    "noted.html": "{{ note('render') }}<h1>{{ whiskey }}</h1>",
}

# The ways an endpoint renders a template, for the `way` fixture.
ASYNC_ENDPOINT = "TemplateResponse-in-async-endpoint"
SYNC_ENDPOINT = "TemplateResponse-in-sync-endpoint"
AWAITED = "render_response"
WAYS = [ASYNC_ENDPOINT, SYNC_ENDPOINT, AWAITED]

# What the lifecycle receivers see for one request that renders noted.html,
# the template signals and the render in their places.
ORDER = [
    "appcontext-pushed",
    "request-started",
    "before-render-template",
    "render",
    "template-rendered",
    "request-finished",
    "request-tearing-down",
    "appcontext-tearing-down",
    "appcontext-popped",
]


@pytest.fixture(params=WAYS)
def way(request: pytest.FixtureRequest) -> str:
    """How the page renders its template: TemplateResponse in an async
    endpoint (on the event loop), in a sync endpoint (a worker thread), or
    awaiting render_response."""
    return str(request.param)


@pytest.fixture
def calls() -> Iterator[list[str]]:
    """The names of the lifecycle signals sent, but the template ones, in
    order, as sync receivers see them; tests add their own entries."""
    seen: list[str] = []
    with ExitStack() as stack:
        for name, signal in lifecycle.items():
            if signal not in (before_render_template, template_rendered):
                stack.enter_context(signal.connected_to(noting(seen, name, "sync")))
        yield seen


def noting(calls: list[str], name: str, kind: str) -> Callable[..., Any]:
    """A sync or async receiver that appends ``name`` to ``calls``."""

    def note(sender: Any, **kwargs: Any) -> None:
        calls.append(name)

    return receiver_of(kind, note)


def set_whiskey(sender: Any, template: jinja2.Template, context: dict[str, Any]) -> None:
    """Flask's test_before_render_template receiver."""
    context["whiskey"] = 43


def make_templates(
    calls: list[str] | None = None, *, enable_async: bool = False, **kwargs: Any
) -> Jinja2Templates:
    """Templates over TEMPLATES, autoescaped; with ``calls``, note(name)
    appends ``name`` to it as the template renders."""
    env = jinja2.Environment(
        loader=jinja2.DictLoader(TEMPLATES), autoescape=True, enable_async=enable_async
    )
    templates = Jinja2Templates(env=env, **kwargs)
    if calls is not None:

        def note(name: str) -> str:
            calls.append(name)
            return ""

        templates.env.globals["note"] = note
    return templates


def page_route(
    templates: Jinja2Templates,
    way: str,
    name: str = "simple_template.html",
    context: dict[str, Any] | None = None,
    *,
    made: list[Response] | None = None,
    **response_kwargs: Any,
) -> Route:
    """The route "/" (named "page") that renders template ``name`` with
    ``context`` (as given, not copied), ``way``; ``made`` gets the response."""

    def keep(response: Response) -> Response:
        if made is not None:
            made.append(response)
        return response

    async def async_page(request: Request) -> Response:
        return keep(templates.TemplateResponse(request, name, context, **response_kwargs))

    def sync_page(request: Request) -> Response:
        return keep(templates.TemplateResponse(request, name, context, **response_kwargs))

    async def awaited_page(request: Request) -> Response:
        return keep(await templates.render_response(request, name, context, **response_kwargs))

    endpoint = {ASYNC_ENDPOINT: async_page, SYNC_ENDPOINT: sync_page, AWAITED: awaited_page}[way]
    return Route("/", endpoint, name="page")


def page_app(
    templates: Jinja2Templates,
    way: str,
    name: str = "simple_template.html",
    context: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Starlette:
    """An app (not installed) with only :func:`page_route`."""
    return Starlette(routes=[page_route(templates, way, name, context, **kwargs)])


# Flask's tests/test_signals.py template tests, ported to Starlette


def test_flask_template_rendered(anyio_backend: str, way: str, receiver_kind: str) -> None:
    app = install(page_app(make_templates(), way, context={"whiskey": 42}))
    recorded: list[tuple[Any, dict[str, Any]]] = []

    def record(sender: Any, template: jinja2.Template, context: dict[str, Any]) -> None:
        recorded.append((template, context))

    with template_rendered.connected_to(receiver_of(receiver_kind, record), app):
        response = client(app, anyio_backend).get("/")

    assert response.text == "<h1>42</h1>"
    assert len(recorded) == 1
    template, context = recorded[0]
    assert isinstance(template, jinja2.Template)
    assert template.name == "simple_template.html"
    assert context["whiskey"] == 42


def test_flask_before_render_template(anyio_backend: str, way: str) -> None:
    app = install(page_app(make_templates(), way, context={"whiskey": 42}))
    recorded: list[tuple[Any, dict[str, Any]]] = []

    def record(sender: Any, template: jinja2.Template, context: dict[str, Any]) -> None:
        context["whiskey"] = 43
        recorded.append((template, context))

    with before_render_template.connected_to(record, app):
        response = client(app, anyio_backend).get("/")

    assert len(recorded) == 1
    template, context = recorded[0]
    assert isinstance(template, jinja2.Template)
    assert template.name == "simple_template.html"
    assert context["whiskey"] == 43
    assert response.text == "<h1>43</h1>"


# A drop-in for Starlette's Jinja2Templates


def test_directory_constructor_renders_templates_from_the_directory(
    anyio_backend: str, way: str, tmp_path: Path
) -> None:
    (tmp_path / "page.html").write_text("<p>{{ name }}</p>")
    templates = Jinja2Templates(directory=tmp_path)
    app = install(page_app(templates, way, "page.html", {"name": "ada"}))

    response = client(app, anyio_backend).get("/")

    assert response.text == "<p>ada</p>"


def test_directory_constructor_takes_the_directory_positionally(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text("page")

    templates = Jinja2Templates(str(tmp_path))

    assert templates.get_template("page.html").render() == "page"


def test_directory_constructor_autoescapes_html_templates(
    anyio_backend: str, way: str, tmp_path: Path
) -> None:
    (tmp_path / "page.html").write_text("{{ value }}")
    templates = Jinja2Templates(directory=tmp_path)
    app = install(page_app(templates, way, "page.html", {"value": "<script>"}))

    response = client(app, anyio_backend).get("/")

    assert response.text == "&lt;script&gt;"


def test_env_constructor_uses_the_given_environment() -> None:
    env = jinja2.Environment(loader=jinja2.DictLoader(TEMPLATES))

    templates = Jinja2Templates(env=env)

    assert templates.env is env


def test_directory_and_env_together_are_a_type_error(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="directory or env"):
        Jinja2Templates(directory=tmp_path, env=jinja2.Environment())  # type: ignore[call-overload]


def test_neither_directory_nor_env_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="directory or env"):
        Jinja2Templates()  # type: ignore[call-overload]


@pytest.mark.parametrize("method", ["TemplateResponse", "render_response"])
def test_render_methods_take_starlettes_template_response_arguments(method: str) -> None:
    starlettes = inspect.signature(starlette.templating.Jinja2Templates.TemplateResponse)

    ours = inspect.signature(getattr(Jinja2Templates, method))

    assert [(p.name, p.kind, p.default) for p in ours.parameters.values()] == [
        (p.name, p.kind, p.default) for p in starlettes.parameters.values()
    ]


def test_context_processors_add_to_the_context(anyio_backend: str, way: str) -> None:
    seen: list[Request] = []

    def processor(request: Request) -> dict[str, Any]:
        seen.append(request)
        return {"name": "processor"}

    templates = make_templates(context_processors=[processor])
    app = install(page_app(templates, way, "hello.html"))

    response = client(app, anyio_backend).get("/")

    assert response.text == "Hello processor"
    assert len(seen) == 1
    assert isinstance(seen[0], Request)
    assert seen[0].url.path == "/"


def test_context_processors_values_reach_the_template_signals(anyio_backend: str, way: str) -> None:
    templates = make_templates(context_processors=[lambda request: {"name": "processor"}])
    app = install(page_app(templates, way, "hello.html"))
    seen: list[Any] = []

    def record(sender: Any, template: jinja2.Template, context: dict[str, Any]) -> None:
        seen.append(context["name"])

    with before_render_template.connected_to(record), template_rendered.connected_to(record):
        client(app, anyio_backend).get("/")

    assert seen == ["processor", "processor"]


def test_url_for_global_still_works(anyio_backend: str, way: str) -> None:
    app = install(page_app(make_templates(), way, "url.html"))

    response = client(app, anyio_backend).get("/")

    assert response.text == "http://testserver/"


def test_status_code_headers_and_media_type_are_used(anyio_backend: str, way: str) -> None:
    app = install(
        page_app(
            make_templates(),
            way,
            "hello.html",
            {"name": "ada"},
            status_code=201,
            headers={"x-page": "yes"},
            media_type="text/plain",
        )
    )

    response = client(app, anyio_backend).get("/")

    assert response.status_code == 201
    assert response.headers["x-page"] == "yes"
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "Hello ada"


def test_media_type_is_html_by_default(anyio_backend: str, way: str) -> None:
    app = install(page_app(make_templates(), way, "hello.html", {"name": "ada"}))

    response = client(app, anyio_backend).get("/")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"


def test_background_task_runs_after_the_template_signals(anyio_backend: str, way: str) -> None:
    ran: list[str] = []
    background = BackgroundTask(ran.append, "background")
    app = install(page_app(make_templates(), way, context={"whiskey": 1}, background=background))

    with template_rendered.connected_to(noting(ran, "template-rendered", "sync")):
        response = client(app, anyio_backend).get("/")

    assert response.text == "<h1>1</h1>"
    assert ran == ["template-rendered", "background"]


def test_test_client_response_has_template_and_context(anyio_backend: str, way: str) -> None:
    app = install(page_app(make_templates(), way, "hello.html", {"name": "ada"}))

    response = client(app, anyio_backend).get("/")

    assert isinstance(response.template, jinja2.Template)  # type: ignore[attr-defined]
    assert response.template.name == "hello.html"  # type: ignore[attr-defined]
    assert response.context["name"] == "ada"  # type: ignore[attr-defined]
    assert isinstance(response.context["request"], Request)  # type: ignore[attr-defined]


def test_response_is_a_starlette_template_response(anyio_backend: str, way: str) -> None:
    made: list[Response] = []
    context = {"name": "ada"}
    app = install(page_app(make_templates(), way, "hello.html", context, made=made))

    client(app, anyio_backend).get("/")

    [response] = made
    assert isinstance(response, starlette.templating._TemplateResponse)
    assert response.template.name == "hello.html"
    assert response.context is context


def test_callers_context_dict_gets_the_request(anyio_backend: str, way: str) -> None:
    context: dict[str, Any] = {"name": "ada"}
    app = install(page_app(make_templates(), way, "hello.html", context))

    client(app, anyio_backend).get("/")

    assert isinstance(context["request"], Request)
    assert context["request"].url.path == "/"


def test_no_context_renders_with_the_request(anyio_backend: str, way: str) -> None:
    app = install(page_app(make_templates(), way, "path.html"))

    response = client(app, anyio_backend).get("/")

    assert response.text == "/"


def test_get_flashed_messages_is_a_global_of_the_environment() -> None:
    templates = make_templates()

    assert templates.env.globals["get_flashed_messages"] is asignals.get_flashed_messages


def test_a_get_flashed_messages_global_already_set_is_kept() -> None:
    def mine() -> list[str]:
        return []

    env = jinja2.Environment(loader=jinja2.DictLoader(TEMPLATES))
    env.globals["get_flashed_messages"] = mine

    templates = Jinja2Templates(env=env)

    assert templates.env.globals["get_flashed_messages"] is mine


# The sender is the app


def test_sender_is_the_app(anyio_backend: str, way: str, receiver_kind: str) -> None:
    app = install(page_app(make_templates(), way, context={"whiskey": 1}))
    senders: list[Any] = []

    def record(sender: Any, **kwargs: Any) -> None:
        senders.append(sender)

    receiver = receiver_of(receiver_kind, record)
    with (
        before_render_template.connected_to(receiver, app),
        template_rendered.connected_to(receiver, app),
    ):
        client(app, anyio_backend).get("/")

    assert senders == [app, app]


def test_sender_is_the_installed_app_in_a_mounted_sub_app(anyio_backend: str, way: str) -> None:
    sub = page_app(make_templates(), way, context={"whiskey": 1})
    app = install(Starlette(routes=[Mount("/sub", app=sub)]))
    senders: list[Any] = []

    def record(sender: Any, **kwargs: Any) -> None:
        senders.append(sender)

    with before_render_template.connected_to(record), template_rendered.connected_to(record):
        response = client(app, anyio_backend).get("/sub/")

    assert response.text == "<h1>1</h1>"
    assert senders == [app, app]


def test_sender_is_the_fastapi_app(anyio_backend: str, way: str) -> None:
    templates = make_templates()
    app = install(FastAPI())

    if way == ASYNC_ENDPOINT:

        @app.get("/")
        async def async_page(request: Request) -> Response:
            return templates.TemplateResponse(request, "hello.html", {"name": "ada"})

    elif way == SYNC_ENDPOINT:

        @app.get("/")
        def sync_page(request: Request) -> Response:
            return templates.TemplateResponse(request, "hello.html", {"name": "ada"})

    else:

        @app.get("/")
        async def awaited_page(request: Request) -> Response:
            return await templates.render_response(request, "hello.html", {"name": "ada"})

    senders: list[Any] = []

    def record(sender: Any, **kwargs: Any) -> None:
        senders.append(sender)

    with before_render_template.connected_to(record), template_rendered.connected_to(record):
        response = client(app, anyio_backend).get("/")

    assert response.text == "Hello ada"
    assert senders == [app, app]


# The order of the signals


def test_template_signals_come_in_the_request_order(
    anyio_backend: str, way: str, calls: list[str]
) -> None:
    app = install(page_app(make_templates(calls), way, "noted.html", {"whiskey": 1}))

    with (
        before_render_template.connected_to(noting(calls, "before-render-template", "sync")),
        template_rendered.connected_to(noting(calls, "template-rendered", "sync")),
    ):
        client(app, anyio_backend).get("/")

    assert calls == ORDER


@pytest.mark.parametrize("way", [SYNC_ENDPOINT, AWAITED])
def test_async_template_receivers_run_around_the_render(
    anyio_backend: str, way: str, calls: list[str]
) -> None:
    """In a sync endpoint (through the event loop) and with render_response."""
    app = install(page_app(make_templates(calls), way, "noted.html", {"whiskey": 1}))

    with (
        before_render_template.connected_to(noting(calls, "before-render-template", "async")),
        template_rendered.connected_to(noting(calls, "template-rendered", "async")),
    ):
        client(app, anyio_backend).get("/")

    assert calls == ORDER


# TemplateResponse in an async endpoint


def test_async_endpoint_async_template_receivers_run_after_the_render_before_request_finished(
    anyio_backend: str, calls: list[str]
) -> None:
    app = install(page_app(make_templates(calls), ASYNC_ENDPOINT, "noted.html", {"whiskey": 1}))

    with (
        before_render_template.connected_to(noting(calls, "before-render-template", "async")),
        template_rendered.connected_to(noting(calls, "template-rendered", "async")),
    ):
        client(app, anyio_backend).get("/")

    assert calls == [
        "appcontext-pushed",
        "request-started",
        "render",
        "before-render-template",
        "template-rendered",
        "request-finished",
        "request-tearing-down",
        "appcontext-tearing-down",
        "appcontext-popped",
    ]


def test_async_endpoint_sync_receivers_run_before_async_ones(anyio_backend: str) -> None:
    calls: list[str] = []
    app = install(page_app(make_templates(calls), ASYNC_ENDPOINT, "noted.html", {"whiskey": 1}))

    with (
        before_render_template.connected_to(noting(calls, "async before", "async")),
        before_render_template.connected_to(noting(calls, "sync before", "sync")),
        template_rendered.connected_to(noting(calls, "async rendered", "async")),
        template_rendered.connected_to(noting(calls, "sync rendered", "sync")),
    ):
        client(app, anyio_backend).get("/")

    assert calls == ["sync before", "render", "sync rendered", "async before", "async rendered"]


def test_async_endpoint_async_receiver_changes_do_not_show(anyio_backend: str) -> None:
    app = install(page_app(make_templates(), ASYNC_ENDPOINT, context={"whiskey": 42}))
    seen: list[Any] = []

    def record(sender: Any, template: jinja2.Template, context: dict[str, Any]) -> None:
        seen.append(context["whiskey"])
        set_whiskey(sender, template, context)

    with before_render_template.connected_to(receiver_of("async", record), app):
        response = client(app, anyio_backend).get("/")

    assert seen == [42]
    assert response.text == "<h1>42</h1>"


def test_async_endpoint_deferred_template_receivers_see_the_request_context(
    anyio_backend: str,
) -> None:
    app = install(page_app(make_templates(), ASYNC_ENDPOINT, context={"whiskey": 1}))
    seen: list[Any] = []

    def mark(sender: Any) -> None:
        g.marker = "this request"

    async def record(sender: Any, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append((asignals.request.url.path, current_app._get_current_object(), g.marker))

    with (
        request_started.connected_to(mark),
        before_render_template.connected_to(record),
        template_rendered.connected_to(record),
    ):
        client(app, anyio_backend).get("/")

    assert seen == [("/", app, "this request")] * 2


# TemplateResponse in a sync endpoint


def test_sync_endpoint_async_receiver_changes_show(anyio_backend: str) -> None:
    app = install(page_app(make_templates(), SYNC_ENDPOINT, context={"whiskey": 42}))

    with before_render_template.connected_to(receiver_of("async", set_whiskey), app):
        response = client(app, anyio_backend).get("/")

    assert response.text == "<h1>43</h1>"


# render_response


def test_render_response_receiver_changes_show(anyio_backend: str, receiver_kind: str) -> None:
    app = install(page_app(make_templates(), AWAITED, context={"whiskey": 42}))

    with before_render_template.connected_to(receiver_of(receiver_kind, set_whiskey), app):
        response = client(app, anyio_backend).get("/")

    assert response.text == "<h1>43</h1>"


def test_render_response_first_runs_the_receivers_an_earlier_template_response_left(
    anyio_backend: str,
) -> None:
    calls: list[str] = []
    templates = make_templates(calls)

    async def page(request: Request) -> Response:
        templates.TemplateResponse(request, "noted.html", {"whiskey": 1})
        return await templates.render_response(request, "noted.html", {"whiskey": 2})

    def noting_whiskey(name: str) -> Callable[..., Any]:
        def note(sender: Any, template: jinja2.Template, context: dict[str, Any]) -> None:
            calls.append(f"{name} {context['whiskey']}")

        return receiver_of("async", note)

    app = install(Starlette(routes=[Route("/", page)]))

    with (
        before_render_template.connected_to(noting_whiskey("before")),
        template_rendered.connected_to(noting_whiskey("rendered")),
    ):
        response = client(app, anyio_backend).get("/")

    assert response.text == "<h1>2</h1>"
    assert calls == ["render", "before 1", "rendered 1", "before 2", "render", "rendered 2"]


def test_render_response_first_runs_the_receivers_an_earlier_flash_left(
    anyio_backend: str,
) -> None:
    calls: list[str] = []
    templates = make_templates(calls)

    async def page(request: Request) -> Response:
        flash("hello")
        return await templates.render_response(request, "noted.html", {"whiskey": 1})

    app = install(
        Starlette(
            routes=[Route("/", page)],
            middleware=[Middleware(SessionMiddleware, secret_key="test")],
        )
    )

    with (
        message_flashed.connected_to(noting(calls, "message-flashed", "async")),
        before_render_template.connected_to(noting(calls, "before-render-template", "async")),
        template_rendered.connected_to(noting(calls, "template-rendered", "async")),
    ):
        client(app, anyio_backend).get("/")

    assert calls == ["message-flashed", "before-render-template", "render", "template-rendered"]


# An async Jinja2 environment (enable_async=True)


def test_async_environment_renders_with_render_response(anyio_backend: str) -> None:
    templates = make_templates(enable_async=True)
    app = install(page_app(templates, AWAITED, context={"whiskey": 42}))

    with before_render_template.connected_to(receiver_of("async", set_whiskey), app):
        response = client(app, anyio_backend).get("/")

    assert response.text == "<h1>43</h1>"


def test_async_environment_template_response_renders_in_a_sync_endpoint(
    anyio_backend: str,
) -> None:
    templates = make_templates(enable_async=True)
    app = install(page_app(templates, SYNC_ENDPOINT, context={"whiskey": 42}))

    with before_render_template.connected_to(receiver_of("async", set_whiskey), app):
        response = client(app, anyio_backend).get("/")

    assert response.text == "<h1>43</h1>"


def test_async_environment_template_response_in_an_async_endpoint_is_a_runtime_error(
    anyio_backend: str,
) -> None:
    templates = make_templates(enable_async=True)
    app = install(page_app(templates, ASYNC_ENDPOINT, context={"whiskey": 42}))

    with pytest.raises(RuntimeError, match=r"await templates\.render_response"):
        client(app, anyio_backend).get("/")


@pytest.mark.parametrize("way", [SYNC_ENDPOINT, AWAITED])
def test_async_environment_sends_the_template_signals(anyio_backend: str, way: str) -> None:
    """Where an async environment can render: a sync endpoint, render_response."""
    templates = make_templates(enable_async=True)
    app = install(page_app(templates, way, context={"whiskey": 1}))

    with record_signals(before_render_template, template_rendered) as sent:
        response = client(app, anyio_backend).get("/")

    assert response.text == "<h1>1</h1>"
    assert [s.signal for s in sent] == [before_render_template, template_rendered]


# Flash messages in templates


def flash_app(templates: Jinja2Templates, way: str, *messages: Any) -> Starlette:
    """An app that flashes ``messages`` at /flash, then redirects to "/",
    which renders flashes.html ``way``."""

    async def flash_messages(request: Request) -> Response:
        for message in messages:
            flash(message)
        return RedirectResponse("/", status_code=303)

    return install(
        Starlette(
            routes=[page_route(templates, way, "flashes.html"), Route("/flash", flash_messages)],
            middleware=[Middleware(SessionMiddleware, secret_key="test")],
        )
    )


def test_templates_can_call_get_flashed_messages(anyio_backend: str, way: str) -> None:
    app = flash_app(make_templates(), way, "one", "two")

    response = client(app, anyio_backend).get("/flash")

    assert response.text == "[one][two]"


def test_flashed_messages_are_read_once_in_templates(anyio_backend: str, way: str) -> None:
    app = flash_app(make_templates(), way, "one")

    with client(app, anyio_backend) as test_client:
        first = test_client.get("/flash")
        second = test_client.get("/")

    assert first.text == "[one]"
    assert second.text == ""


def test_flashed_messages_are_autoescaped_in_templates(anyio_backend: str, way: str) -> None:
    app = flash_app(make_templates(), way, "<b>hi</b>")

    response = client(app, anyio_backend).get("/flash")

    assert response.text == "[&lt;b&gt;hi&lt;/b&gt;]"


def test_flashed_markup_is_not_escaped_in_templates(anyio_backend: str, way: str) -> None:
    app = flash_app(make_templates(), way, Markup("<b>hi</b>"))

    response = client(app, anyio_backend).get("/flash")

    assert response.text == "[<b>hi</b>]"


# Autoescaping


def test_values_are_autoescaped(anyio_backend: str, way: str) -> None:
    app = install(page_app(make_templates(), way, "value.html", {"value": "<script>"}))

    response = client(app, anyio_backend).get("/")

    assert response.text == "&lt;script&gt;"


def test_a_value_set_by_a_receiver_is_autoescaped(anyio_backend: str, way: str) -> None:
    app = install(page_app(make_templates(), way, "value.html", {"value": "safe"}))

    def set_value(sender: Any, template: jinja2.Template, context: dict[str, Any]) -> None:
        context["value"] = "<script>"

    with before_render_template.connected_to(set_value, app):
        response = client(app, anyio_backend).get("/")

    assert response.text == "&lt;script&gt;"


# Without install()


def test_without_install_templates_still_render(anyio_backend: str, way: str) -> None:
    app = page_app(make_templates(), way, "hello.html", {"name": "ada"})

    response = client(app, anyio_backend).get("/")

    assert response.text == "Hello ada"
    assert response.template.name == "hello.html"  # type: ignore[attr-defined]


def test_without_install_sync_receivers_get_the_app_as_sender(anyio_backend: str, way: str) -> None:
    app = page_app(make_templates(), way, context={"whiskey": 42})
    senders: list[Any] = []

    def record(sender: Any, **kwargs: Any) -> None:
        senders.append(sender)

    with (
        before_render_template.connected_to(set_whiskey, app),
        before_render_template.connected_to(record),
        template_rendered.connected_to(record),
    ):
        response = client(app, anyio_backend).get("/")

    assert response.text == "<h1>43</h1>"
    assert senders == [app, app]


def test_without_install_the_sender_is_the_app_starlette_puts_in_the_scope(
    anyio_backend: str, way: str
) -> None:
    """In a mounted Starlette app, that is the mounted app."""
    sub = page_app(make_templates(), way, context={"whiskey": 1})
    app = Starlette(routes=[Mount("/sub", app=sub)])
    senders: list[Any] = []

    def record(sender: Any, **kwargs: Any) -> None:
        senders.append(sender)

    with before_render_template.connected_to(record), template_rendered.connected_to(record):
        client(app, anyio_backend).get("/sub/")

    assert senders == [sub, sub]


def test_without_install_render_response_awaits_async_receivers(anyio_backend: str) -> None:
    app = page_app(make_templates(), AWAITED, context={"whiskey": 42})
    senders: list[Any] = []

    def record(sender: Any, **kwargs: Any) -> None:
        senders.append(sender)

    with (
        before_render_template.connected_to(receiver_of("async", set_whiskey), app),
        template_rendered.connected_to(receiver_of("async", record)),
    ):
        response = client(app, anyio_backend).get("/")

    assert response.text == "<h1>43</h1>"
    assert senders == [app]


# record_signals


def test_record_signals_records_each_template_signal_once(
    anyio_backend: str, way: str, receiver_kind: str
) -> None:
    app = install(page_app(make_templates(), way, context={"whiskey": 1}))
    receiver = receiver_of(receiver_kind, lambda sender, **kwargs: None)

    with (
        before_render_template.connected_to(receiver),
        template_rendered.connected_to(receiver),
        record_signals(before_render_template, template_rendered) as sent,
    ):
        client(app, anyio_backend).get("/")

    assert [s.signal for s in sent] == [before_render_template, template_rendered]
    assert sent.senders == [app, app]
    for s in sent:
        assert s.kwargs["template"].name == "simple_template.html"
        assert s.kwargs["context"]["whiskey"] == 1


def test_record_signals_records_template_signals_without_receivers(
    anyio_backend: str, way: str
) -> None:
    app = install(page_app(make_templates(), way, context={"whiskey": 1}))

    with record_signals(before_render_template, template_rendered) as sent:
        client(app, anyio_backend).get("/")

    assert [s.signal for s in sent] == [before_render_template, template_rendered]
    assert sent.senders == [app, app]


# Receiver errors


@pytest.fixture(params=["before-render-template", "template-rendered"])
def template_signal(request: pytest.FixtureRequest) -> Any:
    return lifecycle[request.param]


def failing(kind: str, error: Exception) -> Callable[..., Any]:
    def fail(sender: Any, **kwargs: Any) -> None:
        raise error

    return receiver_of(kind, fail)


def test_raise_mode_receiver_error_is_the_requests_unhandled_exception(
    anyio_backend: str, way: str, receiver_kind: str, template_signal: Any
) -> None:
    error = Boom("template receiver failed")
    app = install(page_app(make_templates(), way, context={"whiskey": 1}))
    exceptions: list[BaseException] = []

    def record(sender: Any, exception: BaseException) -> None:
        exceptions.append(exception)

    with (
        template_signal.connected_to(failing(receiver_kind, error)),
        got_request_exception.connected_to(record, app),
    ):
        response = client(app, anyio_backend, raise_server_exceptions=False).get("/")

    assert response.status_code == 500
    assert exceptions == [error]


def test_async_endpoint_deferred_receiver_http_exception_reaches_got_request_exception(
    anyio_backend: str,
) -> None:
    """A deferred receiver's error is the request's unhandled exception, even
    one of a type an exception handler takes (HTTPException always has one):
    it runs as the response starts, too late for the handler."""
    error = HTTPException(status_code=403)
    app = install(page_app(make_templates(), ASYNC_ENDPOINT, context={"whiskey": 1}))
    exceptions: list[BaseException] = []

    def record(sender: Any, exception: BaseException) -> None:
        exceptions.append(exception)

    with (
        before_render_template.connected_to(failing("async", error)),
        got_request_exception.connected_to(record, app),
    ):
        response = client(app, anyio_backend, raise_server_exceptions=False).get("/")

    assert response.status_code == 500
    assert exceptions == [error]


def test_raise_mode_receiver_error_reaches_the_test_client(
    anyio_backend: str, way: str, receiver_kind: str
) -> None:
    app = install(page_app(make_templates(), way, context={"whiskey": 1}))

    with (
        before_render_template.connected_to(failing(receiver_kind, Boom("failed"))),
        pytest.raises(Boom, match="failed"),
    ):
        client(app, anyio_backend).get("/")


def test_log_mode_receiver_error_is_logged_and_the_page_renders(
    anyio_backend: str,
    way: str,
    receiver_kind: str,
    template_signal: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = install(page_app(make_templates(), way, context={"whiskey": 1}), receiver_errors="log")
    exceptions: list[BaseException] = []

    def broken_template_receiver(sender: Any, **kwargs: Any) -> None:
        raise Boom("template receiver failed")

    def record(sender: Any, exception: BaseException) -> None:
        exceptions.append(exception)

    with (
        caplog.at_level(logging.ERROR, logger="asignals"),
        template_signal.connected_to(receiver_of(receiver_kind, broken_template_receiver)),
        got_request_exception.connected_to(record),
    ):
        response = client(app, anyio_backend).get("/")

    assert response.status_code == 200
    assert response.text == "<h1>1</h1>"
    assert exceptions == []
    [record_] = [r for r in caplog.records if r.name == "asignals"]
    assert "broken_template_receiver" in record_.getMessage()
    assert isinstance(record_.exc_info[1], Boom)  # type: ignore[index]


def test_log_mode_runs_the_receivers_after_a_failing_one(
    anyio_backend: str, way: str, receiver_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = install(page_app(make_templates(), way, context={"whiskey": 42}), receiver_errors="log")

    with (
        caplog.at_level(logging.ERROR, logger="asignals"),
        before_render_template.connected_to(failing(receiver_kind, Boom("failed"))),
        before_render_template.connected_to(set_whiskey),
    ):
        response = client(app, anyio_backend).get("/")

    assert response.text == "<h1>43</h1>"

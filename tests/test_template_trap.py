"""The warning for an app that asignals serves but that renders with
Starlette's (or FastAPI's) own Jinja2Templates: once per templates object, on the
``asignals`` logger, naming the template and asignals' class; nothing for an
app without asignals, or one that renders with asignals' templates; and
Starlette's rendering unchanged."""

from __future__ import annotations

import inspect
import logging
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastapi.templating
import jinja2
import pytest
import starlette.templating
from fastapi import FastAPI
from helpers import client
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import asignals.templating
from asignals import SignalMiddleware, install, template_rendered
from asignals import _template_trap as trap

ADVICE = "Use asignals.templating.Jinja2Templates instead"


@pytest.fixture(autouse=True)
def not_warned_yet(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Each test starts as a process that has not warned, with Starlette's
    TemplateResponse wrapped (as any app that asignals serves has it)."""
    monkeypatch.setattr(trap, "_warned", weakref.WeakSet())
    trap.watch_templates()
    caplog.set_level(logging.WARNING, logger="asignals")


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    (tmp_path / "page.html").write_text("Hello {{ name }}")
    (tmp_path / "other.html").write_text("Other {{ name }}")
    (tmp_path / "flashes.html").write_text("{{ get_flashed_messages() }}")
    return tmp_path


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "asignals" and ADVICE in r.getMessage()]


def pages(templates: Any) -> list[Route]:
    """ "/async" and "/sync", which render page.html; "/other", other.html;
    "/flashes", flashes.html, which calls get_flashed_messages()."""

    def render(name: str) -> Callable[[Request], Response]:
        def sync_page(request: Request) -> Response:
            return templates.TemplateResponse(request, name, {"name": "ada"})  # type: ignore[no-any-return]

        return sync_page

    async def async_page(request: Request) -> Response:
        return templates.TemplateResponse(request, "page.html", {"name": "ada"})  # type: ignore[no-any-return]

    return [
        Route("/async", async_page),
        Route("/sync", render("page.html")),
        Route("/other", render("other.html")),
        Route("/flashes", render("flashes.html")),
    ]


def starlette_app(templates: Any) -> Starlette:
    return Starlette(routes=pages(templates))


def fastapi_app(templates: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/async")
    async def async_page(request: Request) -> Response:
        return templates.TemplateResponse(request, "page.html", {"name": "ada"})  # type: ignore[no-any-return]

    @app.get("/sync")
    def sync_page(request: Request) -> Response:
        return templates.TemplateResponse(request, "page.html", {"name": "ada"})  # type: ignore[no-any-return]

    return app


def check_the_warning(record: logging.LogRecord, name: str) -> None:
    message = record.getMessage()
    assert record.levelno == logging.WARNING
    assert f"Template {name!r} is rendered with starlette.templating.Jinja2Templates" in message
    assert "asignals.templating.Jinja2Templates" in message
    assert "sends no template signals" in message
    assert "no get_flashed_messages()" in message
    assert "`from asignals.templating import Jinja2Templates`" in message
    assert "same constructor arguments" in message


# Starlette's and FastAPI's Jinja2Templates in an app that asignals serves


@pytest.mark.parametrize("path", ["/async", "/sync"])
def test_starlettes_templates_in_an_installed_app_warn_once(
    anyio_backend: str, directory: Path, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    app = install(starlette_app(starlette.templating.Jinja2Templates(directory)))

    responses = [client(app, anyio_backend).get(path) for _ in range(3)]

    assert [(r.status_code, r.text) for r in responses] == [(200, "Hello ada")] * 3
    [record] = warnings_of(caplog)
    check_the_warning(record, "page.html")


def test_the_warning_is_given_once_across_endpoints_and_templates(
    anyio_backend: str, directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = install(starlette_app(starlette.templating.Jinja2Templates(directory)))

    with client(app, anyio_backend) as test_client:
        for path in ["/sync", "/async", "/other", "/async", "/sync"]:
            assert test_client.get(path).status_code == 200

    [record] = warnings_of(caplog)
    check_the_warning(record, "page.html")


def test_the_warning_is_given_once_per_templates_object_not_per_app(
    anyio_backend: str, directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    templates = starlette.templating.Jinja2Templates(directory)
    first, second = install(starlette_app(templates)), install(starlette_app(templates))

    client(first, anyio_backend).get("/other")
    client(second, anyio_backend).get("/async")

    [record] = warnings_of(caplog)
    check_the_warning(record, "other.html")


def test_a_second_templates_object_gets_its_own_warning(
    anyio_backend: str, directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A library's templates, mounted in the app, do not use up the
    warning about the app's own."""
    library = Starlette(routes=pages(starlette.templating.Jinja2Templates(directory)))
    app = install(starlette_app(starlette.templating.Jinja2Templates(directory)))
    app.mount("/library", library)

    with client(app, anyio_backend) as test_client:
        for path in ["/library/other", "/library/other", "/async", "/async"]:
            assert test_client.get(path).status_code == 200

    first, second = warnings_of(caplog)
    check_the_warning(first, "other.html")
    check_the_warning(second, "page.html")


def test_an_old_style_call_does_not_log_its_context(
    anyio_backend: str, directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """TemplateResponse(name, context), the form before Starlette 1.0: the
    context (here a password) stays out of the log, and Starlette's error
    comes out as it is."""
    templates = starlette.templating.Jinja2Templates(directory)

    async def old_style(request: Request) -> Response:
        return templates.TemplateResponse(  # type: ignore[no-any-return]
            "page.html", {"request": request, "password": "hunter2"}
        )

    app = install(Starlette(routes=[Route("/", old_style)]))

    with pytest.raises(TypeError):
        client(app, anyio_backend).get("/")

    [record] = warnings_of(caplog)
    assert "hunter2" not in record.getMessage()
    assert record.getMessage().startswith("Template None is rendered with")


def test_a_subclass_overriding_the_method_and_calling_super_warns_once_unchanged(
    anyio_backend: str, directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Templates(starlette.templating.Jinja2Templates):
        def TemplateResponse(self, *args: Any, **kwargs: Any) -> Any:
            response = super().TemplateResponse(*args, **kwargs)
            response.headers["x-mine"] = "yes"
            return response

    app = install(starlette_app(Templates(directory)))

    with client(app, anyio_backend) as test_client:
        responses = [test_client.get("/sync") for _ in range(2)]

    assert [(r.text, r.headers["x-mine"]) for r in responses] == [("Hello ada", "yes")] * 2
    [record] = warnings_of(caplog)
    assert f"{Templates.__qualname__} in a request" in record.getMessage()


def test_templates_that_cannot_be_hashed_render_and_warn_once(
    anyio_backend: str, directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Templates(starlette.templating.Jinja2Templates):
        def __eq__(self, other: object) -> bool:
            return self is other

        __hash__ = None  # type: ignore[assignment]

    app = install(starlette_app(Templates(directory)))

    with client(app, anyio_backend) as test_client:
        assert [test_client.get("/sync").text for _ in range(2)] == ["Hello ada"] * 2

    [record] = warnings_of(caplog)
    assert "Template 'page.html' is rendered with" in record.getMessage()
    assert f"{Templates.__qualname__} in a request" in record.getMessage()


def test_renders_that_race_for_the_first_warning_give_one(
    anyio_backend: str, directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Sync endpoints in worker threads, rendering at once (a barrier lets
    them in together); and with lifecycle receivers connected, so that the
    request takes the middleware's full path."""
    templates = starlette.templating.Jinja2Templates(directory)
    barrier = threading.Barrier(4, timeout=10)

    def together(request: Request) -> Response:
        barrier.wait()
        return templates.TemplateResponse(request, "page.html", {"name": "ada"})  # type: ignore[no-any-return]

    app = install(Starlette(routes=[Route("/", together)]))
    started: list[object] = []

    def count(sender: Any, **extra: Any) -> None:
        started.append(sender)

    with (
        asignals.request_started.connected_to(count, app),
        client(app, anyio_backend) as test_client,
    ):
        results: list[int] = []
        threads = [
            threading.Thread(target=lambda: results.append(test_client.get("/").status_code))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)

    assert results == [200] * 4
    assert len(started) == 4
    [record] = warnings_of(caplog)
    check_the_warning(record, "page.html")


@pytest.mark.parametrize("path", ["/async", "/sync"])
def test_fastapis_templates_in_an_installed_fastapi_app_warn_once(
    anyio_backend: str, directory: Path, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    app = install(fastapi_app(fastapi.templating.Jinja2Templates(directory=directory)))

    responses = [client(app, anyio_backend).get(path) for _ in range(3)]

    assert [(r.status_code, r.text) for r in responses] == [(200, "Hello ada")] * 3
    [record] = warnings_of(caplog)
    check_the_warning(record, "page.html")


@pytest.mark.parametrize("form", ["wrapping", "add_middleware"])
def test_signal_middleware_forms_warn_once(
    anyio_backend: str, directory: Path, caplog: pytest.LogCaptureFixture, form: str
) -> None:
    templates = starlette.templating.Jinja2Templates(directory)
    app: Any
    if form == "wrapping":
        app = SignalMiddleware(starlette_app(templates))
    else:
        app = Starlette(routes=pages(templates), middleware=[Middleware(SignalMiddleware)])

    with client(app, anyio_backend) as test_client:
        for path in ["/async", "/sync", "/async"]:
            assert test_client.get(path).text == "Hello ada"

    [record] = warnings_of(caplog)
    check_the_warning(record, "page.html")


def test_the_warning_comes_before_jinjas_undefined_get_flashed_messages(
    anyio_backend: str, directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The newcomer's case: the render fails as Starlette's fails, and the
    warning says why."""
    app = install(starlette_app(starlette.templating.Jinja2Templates(directory)))

    with pytest.raises(jinja2.UndefinedError, match="'get_flashed_messages' is undefined"):
        client(app, anyio_backend).get("/flashes")

    [record] = warnings_of(caplog)
    check_the_warning(record, "flashes.html")


def test_a_subclass_of_starlettes_templates_is_named(
    anyio_backend: str, directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Templates(starlette.templating.Jinja2Templates):
        pass

    app = install(starlette_app(Templates(directory)))

    client(app, anyio_backend).get("/sync")

    [record] = warnings_of(caplog)
    assert f"{__name__}.{Templates.__qualname__} in a request" in record.getMessage()


# Where there is nothing to warn of


def test_asignals_templates_do_not_warn_and_send_the_signals(
    anyio_backend: str, directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = starlette_app(asignals.templating.Jinja2Templates(directory))
    app.add_middleware(SessionMiddleware, secret_key="secret")
    install(app)
    names: list[str] = []

    def record(sender: Any, template: jinja2.Template, context: dict[str, Any]) -> None:
        names.append(template.name or "")

    with template_rendered.connected_to(record, app), client(app, anyio_backend) as test_client:
        for path in ["/async", "/sync", "/other", "/flashes"]:
            assert test_client.get(path).status_code == 200

    assert names == ["page.html", "page.html", "other.html", "flashes.html"]
    assert warnings_of(caplog) == []


def test_a_subclass_of_asignals_templates_calling_starlettes_method_does_not_warn(
    anyio_backend: str, directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One that renders through Starlette's TemplateResponse itself, as a
    super() call past asignals' override would."""

    class Templates(asignals.templating.Jinja2Templates):
        def TemplateResponse(self, *args: Any, **kwargs: Any) -> Any:
            return starlette.templating.Jinja2Templates.TemplateResponse(self, *args, **kwargs)

    app = install(starlette_app(Templates(directory)))

    assert client(app, anyio_backend).get("/async").text == "Hello ada"
    assert warnings_of(caplog) == []


@pytest.mark.parametrize("make_app", [starlette_app, fastapi_app])
def test_an_app_without_asignals_does_not_warn(
    anyio_backend: str,
    directory: Path,
    caplog: pytest.LogCaptureFixture,
    make_app: Callable[[Any], Starlette],
) -> None:
    app = make_app(starlette.templating.Jinja2Templates(directory))

    with client(app, anyio_backend) as test_client:
        for path in ["/async", "/sync"]:
            assert test_client.get(path).text == "Hello ada"

    assert warnings_of(caplog) == []


def test_a_render_outside_a_request_does_not_warn(
    directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    templates = starlette.templating.Jinja2Templates(directory)
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})

    response = templates.TemplateResponse(request, "page.html", {"name": "ada"})

    assert response.body == b"Hello ada"
    assert warnings_of(caplog) == []


# Starlette's rendering, unchanged


def rendered(app: Any, backend: str, path: str) -> tuple[Any, ...]:
    """What the response to ``path`` is: status, headers, body, and the
    template and context that the test client shows."""
    response = client(app, backend).get(path)
    context = dict(response.context)  # type: ignore[attr-defined]
    request = context.pop("request")
    assert isinstance(request, Request)
    assert request.url.path == path
    template = response.template  # type: ignore[attr-defined]
    return (
        response.status_code,
        response.headers.items(),
        response.content,
        type(template),
        template.name,
        context,
    )


@pytest.mark.parametrize("path", ["/async", "/sync"])
def test_the_response_is_the_same_with_and_without_the_wrap(
    anyio_backend: str, directory: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    templates = starlette.templating.Jinja2Templates(directory)
    wrapped = rendered(install(starlette_app(templates)), anyio_backend, path)
    original = starlette.templating.Jinja2Templates.TemplateResponse.__wrapped__  # type: ignore[attr-defined]
    monkeypatch.setattr(starlette.templating.Jinja2Templates, "TemplateResponse", original)

    unwrapped = rendered(install(starlette_app(templates)), anyio_backend, path)

    assert wrapped == unwrapped
    assert wrapped[0] == 200
    assert wrapped[2:] == (b"Hello ada", jinja2.Template, "page.html", {"name": "ada"})


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        (("missing.html",), {}, jinja2.TemplateNotFound),
        ((), {"name": "flashes.html"}, jinja2.UndefinedError),
        ((), {}, TypeError),
    ],
)
def test_the_wrap_raises_what_starlette_raises(
    directory: Path, args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception]
) -> None:
    templates = starlette.templating.Jinja2Templates(directory)
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
    original = starlette.templating.Jinja2Templates.TemplateResponse.__wrapped__  # type: ignore[attr-defined]

    with pytest.raises(error) as wrapped:
        templates.TemplateResponse(request, *args, **kwargs)
    with pytest.raises(error) as unwrapped:
        original(templates, request, *args, **kwargs)

    assert str(wrapped.value) == str(unwrapped.value)


def test_the_wrap_keeps_starlettes_signature_and_is_made_once() -> None:
    wrapper = starlette.templating.Jinja2Templates.TemplateResponse
    original = wrapper.__wrapped__  # type: ignore[attr-defined]

    trap.watch_templates()
    SignalMiddleware(Starlette())

    assert starlette.templating.Jinja2Templates.TemplateResponse is wrapper
    assert not hasattr(original, "__wrapped__")
    assert inspect.signature(wrapper) == inspect.signature(original)  # what help() shows
    assert str(inspect.signature(wrapper, follow_wrapped=False)).startswith(
        "(self, *args, **kwargs)"
    )
    assert wrapper.__name__ == "TemplateResponse"
    assert wrapper.__doc__ == original.__doc__
    assert fastapi.templating.Jinja2Templates.TemplateResponse is wrapper


def test_starlette_is_wrapped_by_install_not_by_import() -> None:
    script = (
        "import sys, asignals\n"
        "assert 'jinja2' not in sys.modules and 'starlette' not in sys.modules\n"
        "import starlette.templating as t\n"
        "from starlette.applications import Starlette\n"
        "assert not hasattr(t.Jinja2Templates.TemplateResponse, '__wrapped__')\n"
        "asignals.install(Starlette())\n"
        "assert hasattr(t.Jinja2Templates.TemplateResponse, '__wrapped__')\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)

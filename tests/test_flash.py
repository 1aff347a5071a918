"""flash() and get_flashed_messages(): Flask's flash messages, kept in the
session of Starlette's SessionMiddleware, in apps that asignals.install() set
up, with the message_flashed signal. Receiver errors, misuse and the cases
review found are in test_flash_errors.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio.lowlevel
import jinja2
import pytest
from flash_apps import (
    Endpoint,
    attempt,
    endpoint,
    flash_app,
    flashing,
    recording_lifecycle,
)
from helpers import client, receiver_of
from markupsafe import Markup
from starlette.middleware.sessions import Session
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

import asignals
from asignals import (
    InvalidValueError,
    ResponseHead,
    flash,
    g,
    get_flashed_messages,
    message_flashed,
    request_finished,
)
from asignals.templating import Jinja2Templates
from asignals.testing import record_signals


def reading(kind: str, seen: list[Any], **kwargs: Any) -> Endpoint:
    """An endpoint that keeps what ``get_flashed_messages(**kwargs)`` returns
    in ``seen``."""

    def body(request: Request) -> Response:
        seen.append(get_flashed_messages(**kwargs))
        return PlainTextResponse("read")

    return endpoint(kind, body)


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

    assert [type(error) for error in errors] == [InvalidValueError]
    assert isinstance(errors[0], ValueError)
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

    assert [type(error) for error in errors] == [InvalidValueError]
    assert isinstance(errors[0], ValueError)


def test_a_non_ascii_message_is_measured_as_the_session_stores_it(anyio_backend: str) -> None:
    """JSON escapes "é" as \\u00e9, six bytes: 700 of them cannot fit, though
    they are only 1400 bytes of UTF-8."""
    errors: list[Exception] = []
    app = flash_app(Route("/", refusing("async", errors, "é" * 700, "message")))

    client(app, anyio_backend).get("/")

    assert [type(error) for error in errors] == [InvalidValueError]
    assert isinstance(errors[0], ValueError)


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

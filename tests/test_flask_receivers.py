"""Receivers written for Flask run unchanged: the examples of Flask's signals
page, with only their imports changed; the Flask names asignals.request
answers, with Werkzeug's values for the same request; the errors for those
it cannot; and the name an app sends with.

Flask is not a test dependency: the expected values below are Werkzeug's
(3.x), as its documentation and code give them for each request."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import pytest
from fastapi import FastAPI
from helpers import client
from starlette.applications import Starlette
from starlette.datastructures import URL, QueryParams
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

import asignals
from asignals import (
    ArgumentError,
    FlaskNameError,
    InvalidValueError,
    SignalMiddleware,
    current_app,
    flash,
    g,
    install,
    request,
    request_finished,
    request_started,
    template_rendered,
)
from asignals._requests import Request as FlaskRequest
from asignals.templating import Jinja2Templates

templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.DictLoader({"index.html": "{% for item in items %}{{ item }}{% endfor %}"}),
        autoescape=True,
    )
)


async def index(req: Request) -> Response:
    return templates.TemplateResponse(req, "index.html", {"items": list(range(10))})


def starlette_app() -> Starlette:
    return install(Starlette(routes=[Route("/", index)]))


def fastapi_app() -> FastAPI:
    app = FastAPI(title="Shop")
    app.add_api_route("/", index)
    return install(app)


@pytest.fixture(params=[starlette_app, fastapi_app], ids=["starlette", "fastapi"])
def app(request: pytest.FixtureRequest) -> Starlette:
    """A Starlette app, then a FastAPI one, whose "/" renders index.html with
    ten items, with asignals installed."""
    make: Callable[[], Starlette] = request.param
    return make()


# Flask's signals page (docs/signals.rst), "Subscribing to Signals" and on.
# Flask's `app.test_client()` is Starlette's TestClient here.


def test_captured_templates_records_each_template_and_its_context(
    app: Starlette, anyio_backend: str
) -> None:
    from contextlib import contextmanager

    from asignals import template_rendered

    @contextmanager
    def captured_templates(app):
        recorded = []

        def record(sender, template, context, **extra):
            recorded.append((template, context))

        template_rendered.connect(record, app)
        try:
            yield recorded
        finally:
            template_rendered.disconnect(record, app)

    with captured_templates(app) as templates:
        rv = client(app, anyio_backend).get("/")
        assert rv.status_code == 200
        assert len(templates) == 1
        template, context = templates[0]
        assert template.name == "index.html"
        assert len(context["items"]) == 10

    assert not template_rendered.has_receivers_for(app)


def test_captured_templates_with_connected_to(app: Starlette, anyio_backend: str) -> None:
    from asignals import template_rendered

    def captured_templates(app, recorded, **extra):
        def record(sender, template, context):
            recorded.append((template, context))

        return template_rendered.connected_to(record, app)

    extra: dict[str, Any] = {}  # the page leaves it undefined
    templates = []
    with captured_templates(app, templates, **extra):
        client(app, anyio_backend).get("/")
        template, context = templates[0]

    assert template.name == "index.html"
    assert context["items"] == list(range(10))


def test_a_namespace_signal_sent_by_a_model() -> None:
    from asignals import Namespace

    my_signals = Namespace()
    model_saved = my_signals.signal("model-saved")

    class Model(object):  # noqa: UP004 (as the page writes it)
        def save(self):
            model_saved.send(self)

    saved = []
    model = Model()
    with model_saved.connected_to(lambda sender: saved.append(sender), model):
        model.save()

    assert model_saved.name == "model-saved"
    assert saved == [model]


def test_a_function_sends_with_the_current_app_as_sender(
    app: Starlette, anyio_backend: str
) -> None:
    model_saved = asignals.Namespace().signal("model-saved")

    def save() -> None:  # "a random function"
        model_saved.send(current_app._get_current_object())

    async def endpoint(req: Request) -> Response:
        save()
        return PlainTextResponse("saved")

    app.router.routes.append(Route("/save", endpoint))
    senders = []
    with model_saved.connected_to(lambda sender: senders.append(sender), app):
        client(app, anyio_backend).get("/save")

    assert senders == [app]


def test_g_is_the_same_from_request_started_to_request_finished(
    app: Starlette, anyio_backend: str
) -> None:
    seen = []

    @request_started.connect_via(app)
    def start(sender, **extra):
        g.user = "john"

    @request_finished.connect_via(app)
    def finish(sender, response, **extra):
        seen.append(g.user)

    client(app, anyio_backend).get("/")

    assert seen == ["john"]


def test_a_receiver_connected_with_connect_via(
    app: Starlette, anyio_backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from asignals import template_rendered

    @template_rendered.connect_via(app)
    def when_template_rendered(sender, template, context, **extra):
        print(f"Template {template.name} is rendered with {context}")

    client(app, anyio_backend).get("/")

    out = capsys.readouterr().out
    assert out.startswith("Template index.html is rendered with {")
    assert "'items': [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]" in out


# The subscribers of Flask's core signals list (its API page) that need no
# Flask app attribute, and the usual receivers of the request signals.


def test_receivers_read_the_request_the_response_the_template_and_the_app_name(
    app: Starlette, anyio_backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from asignals import before_render_template, request, request_finished, request_started

    def log_request(sender, **extra):
        print(f"Request started: {request.method} {request.path}")
        print(f"Remote address: {request.remote_addr}")

    def log_response(sender, response, **extra):
        print(f"Response: {response.status_code} {dict(response.headers)['content-type']}")

    def log_template_renders(sender, template, context, **extra):
        print(f"Template rendered: {template.name}")
        print(f"Context keys: {list(context.keys())}")

    def inject_global_context(sender, template, context, **extra):
        context["app_version"] = "1.0.0"

    def log_app(sender, **extra):
        print(f"Request started for {sender.name}")

    request_started.connect(log_request, app)
    request_started.connect(log_app, app)
    request_finished.connect(log_response, app)
    before_render_template.connect(inject_global_context, app)
    template_rendered.connect(log_template_renders, app)

    client(app, anyio_backend, peer="203.0.113.9").get("/?page=2")

    assert capsys.readouterr().out.splitlines() == [
        "Request started: GET /",
        "Remote address: 203.0.113.9",
        f"Request started for {'Shop' if isinstance(app, FastAPI) else __name__}",
        "Template rendered: index.html",
        "Context keys: ['items', 'request', 'app_version']",
        "Response: 200 text/html; charset=utf-8",
    ]


def test_the_security_exception_logger_reads_the_url(anyio_backend: str) -> None:
    from asignals import got_request_exception

    class SecurityException(Exception):
        pass

    logged = []

    class SecurityLogger:
        def exception(self, message: str, exc_info: BaseException) -> None:
            logged.append((message, exc_info))

    security_logger = SecurityLogger()

    async def endpoint(req: Request) -> Response:
        raise SecurityException("no")

    app = install(Starlette(routes=[Route("/admin", endpoint)]))

    def log_security_exception(sender, exception, **extra):
        if not isinstance(exception, SecurityException):
            return

        security_logger.exception(
            f"SecurityException at {request.url!r}",
            exc_info=exception,
        )

    got_request_exception.connect(log_security_exception, app)
    client(app, anyio_backend, raise_server_exceptions=False).get("/admin?x=1")

    ((message, error),) = logged
    # Starlette's request.url is a URL, not Werkzeug's str: its repr differs.
    assert message == "SecurityException at URL('http://testserver/admin?x=1')"
    assert isinstance(error, SecurityException)


def test_the_user_set_helper_of_appcontext_pushed(anyio_backend: str) -> None:
    from contextlib import contextmanager

    from asignals import appcontext_pushed

    @contextmanager
    def user_set(app, user):
        def handler(sender, **kwargs):
            g.user = user

        with appcontext_pushed.connected_to(handler, app):
            yield

    async def me(req: Request) -> Response:
        return PlainTextResponse(f"username={g.user}")

    app = install(Starlette(routes=[Route("/users/me", me)]))
    with user_set(app, "john"):
        c = client(app, anyio_backend)
        resp = c.get("/users/me")
        assert resp.text == "username=john"


def test_the_message_flashed_recorder(anyio_backend: str) -> None:
    from asignals import message_flashed

    async def save(req: Request) -> Response:
        flash("Saved.", "info")
        return PlainTextResponse("ok")

    app = install(
        Starlette(
            routes=[Route("/save", save)],
            middleware=[Middleware(SessionMiddleware, secret_key="test")],
        )
    )

    recorded = []

    def record(sender, message, category, **extra):
        recorded.append((message, category))

    message_flashed.connect(record, app)
    client(app, anyio_backend).get("/save")

    assert recorded == [("Saved.", "info")]


def test_the_teardown_receiver_closes_the_session(anyio_backend: str) -> None:
    from asignals import request_tearing_down

    class Session:
        closed = 0

        def close(self) -> None:
            self.closed += 1

    session = Session()

    def close_db_connection(sender, **extra):
        session.close()

    app = starlette_app()
    request_tearing_down.connect(close_db_connection, app)
    client(app, anyio_backend).get("/")

    assert session.closed == 1


# The Flask names asignals.request answers, with Werkzeug's values.


def _item(req: Request) -> Response:
    return PlainTextResponse("item")


def _names_app() -> Starlette:
    return install(
        Starlette(
            routes=[
                Route("/items/{item_id:int}", _item, methods=["GET", "POST"]),
                Route("/named", _item, name="custom"),
                Mount("/v1", app=Starlette(routes=[Route("/users/{name}", _item)])),
            ]
        )
    )


def served(path: str, *, method: str = "GET", backend: str, **kwargs: Any) -> dict[str, Any]:
    """What asignals.request answers for each Flask name, read in
    request_started (as "<name>@started") and request_finished, for a
    request to ``path``; ``kwargs`` go to the client or the request."""
    app = _names_app()
    read: dict[str, Any] = {}

    def read_all(stage: str) -> None:
        for name in NAMES:
            value = getattr(request, name)
            read[name if stage == "finished" else f"{name}@{stage}"] = value

    request_started.connect(lambda sender: read_all("started"), app, weak=False)
    request_finished.connect(lambda sender, response: read_all("finished"), app, weak=False)
    client_options = {k: kwargs.pop(k) for k in ("peer", "host", "root_path") if k in kwargs}
    client(app, backend, **client_options).request(method, path, **kwargs)
    return read


NAMES = [
    "path",
    "full_path",
    "script_root",
    "root_path",
    "url_root",
    "root_url",
    "host_url",
    "host",
    "scheme",
    "is_secure",
    "method",
    "server",
    "query_string",
    "args",
    "remote_addr",
    "access_route",
    "content_type",
    "mimetype",
    "mimetype_params",
    "is_json",
    "content_length",
    "referrer",
    "origin",
    "user_agent",
    "endpoint",
    "view_args",
]

# (name, request, Werkzeug's value). Each request: its path and what the
# client sends; by default from 203.0.113.9, for http://testserver.
GET_ITEM = ("/items/7?page=2&tag=a&tag=b", {})
MOUNTED = ("/app/items/7?page=2", {"root_path": "/app"})
EMPTY_QUERY = ("/items/7", {})
NO_PEER = ("/items/7", {"peer": None})
OTHER_PORT = ("/items/7", {"host": "example.com:8443"})
WERKZEUG = [
    ("path", GET_ITEM, "/items/7"),
    ("path", MOUNTED, "/items/7"),
    ("path", ("/app", {"root_path": "/app"}), "/"),
    ("full_path", GET_ITEM, "/items/7?page=2&tag=a&tag=b"),
    ("full_path", EMPTY_QUERY, "/items/7?"),
    ("full_path", MOUNTED, "/items/7?page=2"),
    ("script_root", GET_ITEM, ""),
    ("script_root", MOUNTED, "/app"),
    ("root_path", MOUNTED, "/app"),
    ("url_root", GET_ITEM, "http://testserver/"),
    ("url_root", MOUNTED, "http://testserver/app/"),
    ("root_url", MOUNTED, "http://testserver/app/"),
    ("host_url", MOUNTED, "http://testserver/"),
    ("url_root", ("/v1/users/ada", {}), "http://testserver/"),
    ("host", GET_ITEM, "testserver"),
    ("host", OTHER_PORT, "example.com:8443"),
    ("host", ("/items/7", {"headers": {"host": "example.com:80"}}), "example.com"),
    ("host", ("/items/7", {"headers": {"host": "exa mple.com"}}), ""),
    ("host_url", OTHER_PORT, "http://example.com:8443/"),
    ("scheme", GET_ITEM, "http"),
    ("is_secure", GET_ITEM, False),
    ("method", GET_ITEM, "GET"),
    ("server", GET_ITEM, ("testserver", 80)),
    ("query_string", GET_ITEM, b"page=2&tag=a&tag=b"),
    ("query_string", EMPTY_QUERY, b""),
    ("remote_addr", GET_ITEM, "203.0.113.9"),
    ("remote_addr", NO_PEER, None),
    ("access_route", GET_ITEM, ["203.0.113.9"]),
    ("access_route", NO_PEER, []),
    (
        "access_route",
        ("/items/7", {"headers": {"x-forwarded-for": "198.51.100.1, 10.0.0.1"}}),
        ["198.51.100.1", "10.0.0.1"],
    ),
    ("content_type", GET_ITEM, None),
    ("mimetype", GET_ITEM, ""),
    ("mimetype_params", GET_ITEM, {}),
    ("is_json", GET_ITEM, False),
    ("content_length", GET_ITEM, None),
    ("referrer", GET_ITEM, None),
    ("referrer", ("/items/7", {"headers": {"referer": "http://a.example/"}}), "http://a.example/"),
    ("origin", ("/items/7", {"headers": {"origin": "http://a.example"}}), "http://a.example"),
    ("endpoint", GET_ITEM, "_item"),
    ("endpoint", ("/named", {}), "custom"),
    ("endpoint", ("/v1/users/ada", {}), "_item"),
    ("endpoint", ("/missing", {}), None),
    ("view_args", GET_ITEM, {"item_id": 7}),
    ("view_args", ("/v1/users/ada", {}), {"name": "ada"}),
    ("view_args", ("/missing", {}), None),
]


@pytest.mark.parametrize(
    ("name", "sent", "expected"),
    [pytest.param(*row, id=f"{row[0]}-{i}") for i, row in enumerate(WERKZEUG)],
)
def test_a_flask_name_answers_what_werkzeug_gives(
    name: str, sent: tuple[str, dict[str, Any]], expected: Any, anyio_backend: str
) -> None:
    path, options = sent
    options = {"peer": "203.0.113.9", **options}

    assert served(path, backend=anyio_backend, **options)[name] == expected


JSON_POST = {
    "method": "POST",
    "headers": {"content-type": "Application/JSON; Charset=UTF-8"},
    "content": b'{"a": 1}',
}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("method", "POST"),
        ("content_type", "Application/JSON; Charset=UTF-8"),
        ("mimetype", "application/json"),
        ("mimetype_params", {"charset": "UTF-8"}),
        ("is_json", True),
        ("content_length", 8),
    ],
)
def test_the_body_headers_of_a_post(name: str, expected: Any, anyio_backend: str) -> None:
    assert served("/items/7", backend=anyio_backend, **JSON_POST)[name] == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"content-length": "abc"}, 0),
        ({"content-length": "-5"}, 0),
        ({"content-length": " 12 "}, 12),
        ({"content-length": "12", "transfer-encoding": "gzip, Chunked"}, None),
    ],
)
def test_content_length_as_werkzeug_reads_the_header(
    headers: dict[str, str], expected: int | None
) -> None:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "query_string": b"",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }
    assert FlaskRequest(scope).content_length == expected


def test_the_https_scheme_on_its_default_port(anyio_backend: str) -> None:
    app = _names_app()
    read = {}

    @request_started.connect_via(app)
    def started(sender, **extra):
        read.update(scheme=request.scheme, secure=request.is_secure, host=request.host)
        read.update(url_root=request.url_root)

    https = TestClient(app, backend=anyio_backend, base_url="https://example.com")
    https.get("/items/7", headers={"host": "example.com:443"})

    assert read == {
        "scheme": "https",
        "secure": True,
        "host": "example.com",
        "url_root": "https://example.com/",
    }


def test_the_route_is_not_known_in_request_started(anyio_backend: str) -> None:
    read = served("/items/7", backend=anyio_backend)

    assert read["endpoint@started"] is None
    assert read["view_args@started"] is None
    assert read["path@started"] == "/items/7"
    assert read["endpoint"] == "_item"


def test_a_method_the_route_does_not_allow_matches_no_endpoint(anyio_backend: str) -> None:
    read = served("/named", method="POST", backend=anyio_backend)

    assert read["endpoint"] is None
    assert read["view_args"] is None


def test_args_read_the_query_as_werkzeug_does(anyio_backend: str) -> None:
    args = served("/items/7?page=2&tag=a&tag=b&n=x&n=3", backend=anyio_backend)["args"]

    assert isinstance(args, QueryParams)  # Starlette's, read as Werkzeug reads it
    assert args["tag"] == "a"
    assert args.get("tag") == "a"
    assert args.getlist("tag") == ["a", "b"]
    assert args.get("page", type=int) == 2
    assert args.get("n", 0, type=int) == 0
    assert args.getlist("n", type=int) == [3]
    assert args.get("missing", "none") == "none"
    assert args.to_dict() == {"page": "2", "tag": "a", "n": "x"}
    assert args.to_dict(flat=False) == {"page": ["2"], "tag": ["a", "b"], "n": ["x", "3"]}
    assert "tag" in args
    assert list(args.multi_items())[1:3] == [("tag", "a"), ("tag", "b")]


def test_the_user_agent_is_werkzeugs_unparsed_one(anyio_backend: str) -> None:
    agent = served("/items/7", backend=anyio_backend, headers={"user-agent": "curl/8"})[
        "user_agent"
    ]

    assert agent.string == "curl/8"
    assert str(agent) == "curl/8"
    assert agent.browser is None
    assert not agent


def test_starlette_names_keep_starlettes_meaning(anyio_backend: str) -> None:
    app = _names_app()
    read = {}

    @request_finished.connect_via(app)
    def finished(sender, response, **extra):
        req = request._get_current_object()
        read.update(req=req, url=req.url, base_url=req.base_url, headers=req.headers)
        read.update(proxy_is_a_request=isinstance(request, Request))

    client(app, anyio_backend).get("/items/7?x=1")

    req = read["req"]
    assert isinstance(req, Request)
    assert read["proxy_is_a_request"]
    assert read["url"] == URL("http://testserver/items/7?x=1")
    assert read["base_url"] == URL("http://testserver/")  # Werkzeug's url_root
    assert read["headers"]["host"] == "testserver"
    assert req.query_params["x"] == "1"
    assert req.path_params == {"item_id": 7}
    # The body's coroutine methods, and the scope's Mapping methods.
    for name in ("body", "json", "form", "stream", "values", "get", "keys"):
        assert getattr(type(req), name) is getattr(Request, name)


def test_the_endpoint_reads_the_body_a_receiver_could_not(anyio_backend: str) -> None:
    errors = []

    async def endpoint(req: Request) -> Response:
        return JSONResponse(await req.json())

    app = install(Starlette(routes=[Route("/", endpoint, methods=["POST"])]))

    @request_started.connect_via(app)
    def started(sender, **extra):
        try:
            request.get_json()
        except FlaskNameError as error:
            errors.append(error)

    response = client(app, anyio_backend).post("/", json={"a": 1})

    assert response.json() == {"a": 1}
    assert len(errors) == 1


def test_a_websocket_answers_the_flask_names(anyio_backend: str) -> None:
    read = {}

    async def handler(websocket: WebSocket) -> None:
        await websocket.accept()
        req = request._get_current_object()
        read.update({name: getattr(req, name) for name in NAMES})
        read["connection"] = req
        await websocket.close()

    app = install(Starlette(routes=[WebSocketRoute("/ws/{room}", handler)]))
    with client(app, anyio_backend).websocket_connect("/ws/lobby?since=3"):
        pass

    assert isinstance(read["connection"], HTTPConnection)
    assert not isinstance(read["connection"], Request)
    assert read["method"] == "GET"
    assert read["scheme"] == "ws"
    assert read["path"] == "/ws/lobby"
    assert read["full_path"] == "/ws/lobby?since=3"
    assert read["url_root"] == "ws://testserver/"
    assert read["args"].get("since", type=int) == 3
    assert read["remote_addr"] == "testclient"
    assert read["endpoint"] == "handler"
    assert read["view_args"] == {"room": "lobby"}


# Flask names that cannot work: each says what to use instead.

NOT_HERE = [
    ("data", "await request.body()"),
    ("get_data", "await request.body()"),
    ("get_json", "await request.json()"),
    ("files", "await request.form()"),
    ("input_stream", "request.stream()"),
    ("environ", "request.scope"),
    ("url_rule", "request.scope['route']"),
    ("blueprint", "no blueprints"),
    ("blueprints", "no blueprints"),
]


@pytest.fixture
def in_request(anyio_backend: str) -> Callable[[Callable[[], Any]], Any]:
    """Run a function in a request_finished receiver of a request, and
    return what it returned or raised."""

    def run(fn: Callable[[], Any]) -> Any:
        app = starlette_app()
        outcome: list[Any] = []

        def receiver(sender: Any, **extra: Any) -> None:
            try:
                outcome.append(fn())
            except Exception as error:
                outcome.append(error)

        request_finished.connect(receiver, app)
        client(app, anyio_backend).get("/")
        return outcome[0]

    return run


@pytest.mark.parametrize(("name", "use"), NOT_HERE)
def test_a_flask_name_that_cannot_work_says_what_to_use(
    name: str, use: str, in_request: Callable[[Callable[[], Any]], Any]
) -> None:
    error = in_request(lambda: getattr(request, name))

    assert isinstance(error, FlaskNameError)
    assert isinstance(error, AttributeError)
    assert str(error).startswith(f"request.{name} is Flask's")
    assert use in str(error)
    assert in_request(lambda: hasattr(request, name)) is False
    assert in_request(lambda: getattr(request, name, "default")) == "default"


def test_a_websocket_says_it_has_no_body(anyio_backend: str) -> None:
    errors = []

    async def handler(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            request.get_json()
        except FlaskNameError as error:
            errors.append(error)
        await websocket.close()

    app = install(Starlette(routes=[WebSocketRoute("/ws", handler)]))
    with client(app, anyio_backend).websocket_connect("/ws"):
        pass

    (error,) = errors
    assert "a websocket has no request body" in str(error)
    assert "websocket.receive_json()" in str(error)


# The name an app sends with.


def test_an_explicit_name_is_the_apps_name(anyio_backend: str) -> None:
    app = install(Starlette(routes=[Route("/", index)]), name="shop")
    names = []

    @request_started.connect_via(app)
    def started(sender, **extra):
        names.append(sender.name)

    client(app, anyio_backend).get("/")

    assert app.name == "shop"
    assert names == ["shop"]


def test_an_apps_own_name_is_kept() -> None:
    class NamedApp(Starlette):
        name = "own"

    app = install(NamedApp())

    assert app.name == "own"
    assert install(app, name="own") is app


def test_another_name_than_the_apps_own_is_refused() -> None:
    class NamedApp(Starlette):
        name = "own"

    with pytest.raises(InvalidValueError, match=r"already has the name 'own'.*name='shop'"):
        install(NamedApp(), name="shop")


def test_a_fastapi_app_sends_with_its_title() -> None:
    assert install(FastAPI(title="Shop")).name == "Shop"
    assert install(FastAPI()).name == "FastAPI"
    assert install(FastAPI(title="Shop"), name="shop").name == "shop"


def test_a_starlette_app_is_named_for_the_module_that_installed_it() -> None:
    assert install(Starlette()).name == __name__


def test_an_app_installed_by_a_script_is_named_for_the_script(tmp_path: Path) -> None:
    script = tmp_path / "shop_app.py"
    script.write_text(
        "import asignals\n"
        "from starlette.applications import Starlette\n"
        "print(asignals.install(Starlette()).name)\n"
    )
    package_root = Path(asignals.__file__).parent.parent
    ran = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(package_root)},
    )

    assert ran.stdout == "shop_app\n"


def test_signal_middleware_names_the_starlette_app_it_wraps() -> None:
    app = Starlette()
    SignalMiddleware(app, name="shop")
    other = Starlette()
    SignalMiddleware(other)

    assert app.name == "shop"
    assert other.name == __name__


def test_signal_middleware_refuses_a_name_for_an_app_it_does_not_know(
    anyio_backend: str,
) -> None:
    async def raw_app(scope: Any, receive: Any, send: Any) -> None:
        pass

    with pytest.raises(ArgumentError, match=r"install\(app, name=\.\.\.\)"):
        SignalMiddleware(raw_app, name="shop")

    app = Starlette(middleware=[Middleware(SignalMiddleware, name="shop")])
    with pytest.raises(ArgumentError, match="add_middleware"):
        client(app, anyio_backend).get("/")

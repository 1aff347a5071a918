"""What :data:`asignals.request` is, and the name an app sends with, so that
receivers written for Flask run unchanged.

The request is Starlette's, and also answers Flask's common read-only names
(``path``, ``full_path``, ``args``, ``remote_addr``, ``host``, ``url_root``,
``endpoint``, ...) with Werkzeug's meaning, computed from the ASGI scope.
Where Starlette already has a name (``url``, ``base_url``, ``headers``,
``cookies``, ``form``, ``json``, ``values``...), Starlette's meaning stays.
Flask names that cannot work here (the body, which the endpoint reads;
blueprints; the WSGI environ) raise :class:`~asignals.FlaskNameError`
saying what to use instead.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import HTTPConnection
from starlette.requests import Request as StarletteRequest
from starlette.routing import get_name

from ._exceptions import ArgumentError, FlaskNameError, InvalidValueError

# Werkzeug's check of a host: characters a host name (or an IPv6 address in
# brackets) and a port can have; anything else is no host.
_HOST = re.compile(r"(?:[a-z0-9.-]+|\[[a-f0-9]*:[a-f0-9.:]+\])(?::[0-9]+)?", re.ASCII | re.I)
_DEFAULT_PORTS = {"http": ":80", "ws": ":80", "https": ":443", "wss": ":443"}

_READ_THE_BODY = "read the body in the endpoint, from the request it is given: "
_NO_BODY = (
    "a websocket has no request body; receive its messages in the handler: "
    "await websocket.receive_json()"
)
_NO_BLUEPRINTS = (
    "Starlette has no blueprints; request.endpoint is the name of the route that "
    "matched, and request.scope['route'] the route"
)


class _NotHere:
    """A Flask request name that cannot work on Starlette: reading it raises
    :class:`FlaskNameError`, saying what to use instead."""

    def __init__(self, use: str) -> None:
        self.use = use

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, request: object, owner: type | None = None) -> Any:
        if request is None:
            return self
        raise FlaskNameError(
            f"request.{self.name} is Flask's, and asignals.request cannot answer it on "
            f"Starlette: {self.use}."
        )


class Args(QueryParams):
    """The query's parameters, as Werkzeug's ``request.args`` reads them:
    Starlette's ``QueryParams``, but ``args["k"]`` and ``args.get("k")`` give
    the first value of a repeated key (Starlette's give the last), ``get``
    and ``getlist`` take ``type=``, and ``to_dict()`` is there.

    >>> args = Args(b"page=2&tag=a&tag=b")
    >>> args["tag"], args.getlist("tag"), args.get("page", type=int)
    ('a', ['a', 'b'], 2)
    >>> args.get("tag", 0, type=int), args.to_dict()
    (0, {'page': '2', 'tag': 'a'})
    """

    def __init__(self, query_string: bytes) -> None:
        super().__init__(query_string)
        first: dict[str, str] = {}
        for key, value in self._list:
            first.setdefault(key, value)
        self._dict = first

    def get(self, key: str, default: Any = None, type: Callable[[str], Any] | None = None) -> Any:
        """The first value of ``key``, converted by ``type`` if given; ``default``
        if there is none, or if ``type`` raises ``ValueError`` or ``TypeError``."""
        if key not in self._dict:
            return default
        value = self._dict[key]
        if type is None:
            return value
        try:
            return type(value)
        except (ValueError, TypeError):
            return default

    def getlist(self, key: Any, type: Callable[[str], Any] | None = None) -> list[Any]:
        """Every value of ``key``, in order; with ``type``, those it converts
        (it skips those for which it raises ``ValueError`` or ``TypeError``)."""
        values = super().getlist(key)
        if type is None:
            return values
        converted = []
        for value in values:
            try:
                converted.append(type(value))
            except (ValueError, TypeError):
                continue
        return converted

    def to_dict(self, flat: bool = True) -> dict[str, Any]:
        """A dict of the first value of each key, or with ``flat=False`` of
        the list of its values."""
        if flat:
            return dict(self._dict)
        return {key: QueryParams.getlist(self, key) for key in self._dict}


class UserAgent:
    """The ``User-Agent`` header, as Werkzeug gives it (it parses nothing):
    ``.string`` and ``str()`` are the header, the parsed fields are None."""

    platform: str | None = None
    browser: str | None = None
    version: str | None = None
    language: str | None = None

    def __init__(self, string: str) -> None:
        self.string = string

    def __str__(self) -> str:
        return self.string

    def __bool__(self) -> bool:
        return bool(self.browser)

    def __repr__(self) -> str:
        return f"<UserAgent {self.string!r}>"


class FlaskNames(HTTPConnection):
    """Flask's read-only request names, with Werkzeug's meaning, over a
    Starlette connection's scope. docs/blinker-and-flask.md has a table of them."""

    _args: Args

    @property
    def scheme(self) -> str:
        """``http``, ``https``, ``ws`` or ``wss``."""
        return str(self.scope.get("scheme") or ("http" if self.scope["type"] == "http" else "ws"))

    @property
    def is_secure(self) -> bool:
        """Whether the request came over HTTPS (or WSS)."""
        return self.scheme in ("https", "wss")

    @property
    def server(self) -> tuple[str, int | None] | None:
        """The server's ``(host, port)``, or None if the server did not say."""
        server = self.scope.get("server")
        return None if server is None else (server[0], server[1])

    @property
    def host(self) -> str:
        """The ``Host`` header (else the server's address), without the
        scheme's default port; empty if neither is a valid host."""
        host = self.headers.get("host")
        if host is None:
            server = self.server
            if server is None or server[1] is None:
                return ""
            name, port = server
            if ":" in name and not name.startswith("["):  # IPv6
                name = f"[{name}]"
            host = f"{name}:{port}"
        host = host.removesuffix(_DEFAULT_PORTS.get(self.scheme, ""))
        return host if _HOST.fullmatch(host) else ""

    @property
    def root_path(self) -> str:
        """The path the app is mounted at (the ASGI ``root_path`` of the app,
        not of a ``Mount`` inside it), without a trailing slash."""
        scope = self.scope
        root: str = scope.get("app_root_path", scope.get("root_path", ""))
        return root.rstrip("/")

    script_root = root_path

    @property
    def path(self) -> str:
        """The path after :attr:`root_path`, starting with ``/``: what the app
        routes on."""
        path: str = self.scope["path"]
        root = self.root_path
        if root and (path == root or path.startswith(root + "/")):
            path = path[len(root) :]
        return "/" + path.lstrip("/")

    @property
    def query_string(self) -> bytes:
        """The query string, as it came (bytes, without the ``?``)."""
        query: bytes = self.scope.get("query_string", b"")
        return query

    @property
    def full_path(self) -> str:
        """:attr:`path`, ``?`` and the query string: the ``?`` is there even
        when the query is empty, as in Werkzeug."""
        return f"{self.path}?{self.query_string.decode('utf-8', 'replace')}"

    @property
    def host_url(self) -> str:
        """``scheme://host/``."""
        return f"{self.scheme}://{self.host}/"

    @property
    def url_root(self) -> str:
        """``scheme://host`` and :attr:`root_path`, ending with ``/``: the URL
        of the app's root (Starlette's ``base_url``, as a string)."""
        return f"{self.scheme}://{self.host}{self.root_path}/"

    root_url = url_root

    @property
    def args(self) -> Args:
        """The query's parameters: an :class:`Args`."""
        try:
            return self._args
        except AttributeError:
            self._args = Args(self.query_string)
            return self._args

    @property
    def remote_addr(self) -> str | None:
        """The client's address, or None if the server did not say."""
        client = self.scope.get("client")
        return None if client is None else str(client[0])

    @property
    def access_route(self) -> list[str]:
        """The addresses in ``X-Forwarded-For`` if it is set (trust only the
        last N, N the number of proxies in front of the app), else
        :attr:`remote_addr` alone, else none."""
        forwarded = self.headers.get("x-forwarded-for")
        if forwarded is not None:
            return [item for item in (part.strip() for part in forwarded.split(",")) if item]
        remote = self.remote_addr
        return [] if remote is None else [remote]

    @property
    def content_type(self) -> str | None:
        """The ``Content-Type`` header, or None."""
        return self.headers.get("content-type")

    @property
    def mimetype(self) -> str:
        """The content type without its parameters, in lower case; empty if
        there is none."""
        return (self.content_type or "").partition(";")[0].strip().lower()

    @property
    def mimetype_params(self) -> dict[str, str]:
        """The content type's parameters, such as ``{"charset": "utf-8"}``."""
        params = {}
        for part in (self.content_type or "").split(";")[1:]:
            key, _, value = part.partition("=")
            if key.strip():
                params[key.strip().lower()] = value.strip().strip('"')
        return params

    @property
    def is_json(self) -> bool:
        """Whether the mimetype is ``application/json`` or ``application/*+json``."""
        mimetype = self.mimetype
        return mimetype == "application/json" or (
            mimetype.startswith("application/") and mimetype.endswith("+json")
        )

    @property
    def content_length(self) -> int | None:
        """The ``Content-Length`` header as a number (0 if it is not one);
        None without it, or for a chunked body."""
        encoding = self.headers.get("transfer-encoding")
        if encoding is not None and "chunked" in (p.strip().lower() for p in encoding.split(",")):
            return None
        length = self.headers.get("content-length")
        if length is None:
            return None
        length = length.strip()
        return max(0, int(length)) if re.fullmatch(r"-?[0-9]+", length, re.ASCII) else 0

    @property
    def referrer(self) -> str | None:
        """The ``Referer`` header, or None."""
        return self.headers.get("referer")

    @property
    def origin(self) -> str | None:
        """The ``Origin`` header, or None."""
        return self.headers.get("origin")

    @property
    def user_agent(self) -> UserAgent:
        """The ``User-Agent`` header: a :class:`UserAgent`."""
        return UserAgent(self.headers.get("user-agent", ""))

    @property
    def endpoint(self) -> str | None:
        """The name of the route that matched the request (its function's
        name unless the route was given one); None until Starlette has
        routed it (so in ``request_started``), for no match, and for a method
        the route does not allow, as in Werkzeug."""
        scope = self.scope
        route = scope.get("route")
        if route is None:
            # Starlette before it named the route in the scope.
            endpoint = scope.get("endpoint")
            return None if endpoint is None else get_name(endpoint)
        methods = getattr(route, "methods", None)
        if methods and scope.get("method", "GET") not in methods:
            return None
        name = getattr(route, "name", None)
        return name if isinstance(name, str) else None

    @property
    def view_args(self) -> dict[str, Any] | None:
        """The path parameters of the route that matched, as
        :attr:`endpoint` says (None when it is None)."""
        return None if self.endpoint is None else self.path_params

    # Flask names with no answer here.
    data = _NotHere(_READ_THE_BODY + "await request.body()")
    get_data = _NotHere(_READ_THE_BODY + "await request.body()")
    get_json = _NotHere(_READ_THE_BODY + "await request.json()")
    files = _NotHere(_READ_THE_BODY + "the UploadFile values of await request.form()")
    input_stream = _NotHere(_READ_THE_BODY + "async for chunk in request.stream()")
    environ = _NotHere("an ASGI app has no WSGI environ; request.scope is the ASGI scope")
    url_rule = _NotHere(
        "request.scope['route'] is the Starlette route that matched (its .path is "
        "the pattern) once routing has run, and request.endpoint its name"
    )
    blueprint = _NotHere(_NO_BLUEPRINTS)
    blueprints = _NotHere(_NO_BLUEPRINTS)


class Request(FlaskNames, StarletteRequest):
    """Starlette's ``Request`` that also answers Flask's read-only request
    names (:class:`FlaskNames`): :data:`asignals.request` for an HTTP
    request. ``body()``, ``json()`` and ``form()`` are Starlette's, but the
    endpoint reads the body, not this request."""


class Connection(FlaskNames):
    """Starlette's ``HTTPConnection`` that also answers Flask's read-only
    request names (:class:`FlaskNames`): :data:`asignals.request` for a
    websocket."""

    @property
    def method(self) -> str:
        """``GET``: a websocket opens with a GET request."""
        return "GET"

    data = _NotHere(_NO_BODY)
    get_data = _NotHere(_NO_BODY)
    get_json = _NotHere(_NO_BODY)
    files = _NotHere(_NO_BODY)
    input_stream = _NotHere(_NO_BODY)


def app_name(app: Any, name: str | None = None) -> Any:
    """The name ``app`` sends with (``sender.name``, as Flask's receivers read
    it): ``name`` if given; else the app's own ``name`` attribute, which is
    never replaced (a different ``name`` is an error); else a FastAPI app's
    ``title``; else, as Flask's import name, the name of the module that
    installed asignals (for a script run as ``python app.py``, ``app``).

    >>> from fastapi import FastAPI
    >>> app_name(FastAPI(title="Shop")), app_name(FastAPI(), "shop")
    ('Shop', 'shop')
    """
    own = getattr(app, "name", _MISSING)
    if own is not _MISSING:
        if name is not None and own != name:
            raise InvalidValueError(
                f"This app already has the name {own!r}, which asignals never "
                f"replaces: leave out name={name!r}, or change the app's name."
            )
        return own
    if name is not None:
        return name
    title = getattr(app, "title", None)
    if isinstance(title, str) and title:
        return title
    return _installing_module()


def name_app(app: Any, name: str | None = None) -> None:
    """Give ``app`` the :func:`app_name` as its ``name`` attribute, if it has
    none. ``app`` None is ``SignalMiddleware`` that does not know its sender
    yet (added with ``add_middleware``, or around an ASGI app that is not a
    Starlette app): then a ``name`` is an error."""
    if app is None:
        if name is not None:
            raise ArgumentError(
                "SignalMiddleware(name=...) names the Starlette or FastAPI app it "
                "wraps; added with add_middleware, or around another ASGI app, it "
                "does not know its app: use asignals.install(app, name=...), or "
                "set the app's name attribute."
            )
        return
    chosen = app_name(app, name)
    if not hasattr(app, "name"):
        app.name = chosen


_MISSING: Any = object()


def _installing_module() -> str:
    """The name of the first module outside asignals on the call stack; for
    the main script, its file name without ``.py``, as Flask names an app."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        module = str(frame.f_globals.get("__name__", ""))
        if module.partition(".")[0] != "asignals":
            path = getattr(sys.modules.get(module), "__file__", None)
            if module == "__main__" and isinstance(path, str):
                return os.path.splitext(os.path.basename(path))[0]
            return module
        frame = frame.f_back
    return "__main__"

"""The session cookie that keeps flashed messages is checked again as the
response starts: an endpoint that writes to the session after its last
flash() can make it too big for browsers, which would drop it, and the
messages in it, without a word. Then the request fails, loudly."""

from __future__ import annotations

import json
import logging
import re
from base64 import b64encode
from collections.abc import Callable
from typing import Any

import pytest
from flash_apps import endpoint, read_messages
from helpers import client
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from asignals import (
    FlashError,
    ResponseHead,
    SignalMiddleware,
    flash,
    get_flashed_messages,
    got_request_exception,
    install,
    request_finished,
)

LIMIT = 4096
# What Starlette's SessionMiddleware adds to the base64 of the session's
# JSON: "." timestamp "." signature.
SIGNATURE = 35


def cookie_size(session: dict[str, Any], name: str = "session") -> int:
    """The bytes of the name=value Starlette's SessionMiddleware sets for
    ``session``."""
    return len(name) + 1 + len(b64encode(json.dumps(session).encode())) + SIGNATURE


def blob_for(size: int, name: str = "session", message: str = "hello") -> str:
    """The longest session value "blob" that keeps the cookie of a session
    holding ``message``, flashed, and the blob within ``size`` bytes."""
    length = 0
    while cookie_size(session_of(message, "b" * (length + 1)), name) <= size:
        length += 1
    return "b" * length


def session_of(message: str, blob: str) -> dict[str, Any]:
    return {"_flashes": [["message", message]], "blob": blob}


def flash_then_write(kind: str, message: str = "hello") -> Callable[[Request], Any]:
    """An endpoint that flashes ``message``, then stores the query's ``n``
    bytes in the session."""

    def body(request: Request) -> Response:
        flash(message)
        request.session["blob"] = "b" * int(request.query_params["n"])
        return PlainTextResponse("flashed")

    return endpoint(kind, body)


def cookie_app(*routes: Route, app: dict[str, Any] | None = None, **session: Any) -> Starlette:
    """An app with ``routes``, a ``/read`` route, and Starlette's
    SessionMiddleware, given ``session`` (``app``: the app's arguments)."""
    return Starlette(
        routes=[*routes, Route("/read", read_messages)],
        middleware=[Middleware(SessionMiddleware, secret_key="test", **session)],
        **(app or {}),
    )


def installed(*routes: Route, **kwargs: Any) -> Starlette:
    return install(cookie_app(*routes, **kwargs))


def wrapped(*routes: Route, **kwargs: Any) -> Any:
    return SignalMiddleware(cookie_app(*routes, **kwargs))


def listed(outer: type, inner: type) -> Callable[..., Starlette]:
    """An app with ``outer`` then ``inner`` in its middleware list (the first
    listed, as the last added with add_middleware, is the outermost)."""

    def make(*routes: Route, **session: Any) -> Starlette:
        def middleware(cls: type) -> Middleware:
            kwargs = {"secret_key": "test", **session} if cls is SessionMiddleware else {}
            return Middleware(cls, **kwargs)

        return Starlette(
            routes=[*routes, Route("/read", read_messages)],
            middleware=[middleware(outer), middleware(inner)],
        )

    return make


# Every way an app gets asignals' middleware. With add_middleware it may sit
# outside SessionMiddleware (the header is measured) or inside it (the session
# is measured as SessionMiddleware will save it, once the start passed).
FORMS = {
    "install": installed,
    "wrap": wrapped,
    "outside-session": listed(SignalMiddleware, SessionMiddleware),
    "inside-session": listed(SessionMiddleware, SignalMiddleware),
}


@pytest.fixture(params=list(FORMS))
def make_app(request: pytest.FixtureRequest) -> Callable[..., Any]:
    return FORMS[request.param]


def asignals_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "asignals"]


def test_a_session_write_after_flash_past_the_limit_fails_the_request(
    anyio_backend: str, endpoint_kind: str, make_app: Callable[..., Any]
) -> None:
    app = make_app(Route("/", flash_then_write(endpoint_kind)))
    blob = "b" * 4000

    with pytest.raises(FlashError) as raised:
        client(app, anyio_backend).get("/", params={"n": len(blob)})

    text = str(raised.value)
    size = cookie_size(session_of("hello", blob))
    assert f"{size} bytes" in text
    assert f"{LIMIT} bytes" in text
    assert "server" in text  # what to do


def test_the_failed_request_answers_500_and_logs_the_flash_error(
    anyio_backend: str,
    endpoint_kind: str,
    make_app: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app(Route("/", flash_then_write(endpoint_kind)))
    caplog.set_level(logging.ERROR, logger="asignals")

    response = client(app, anyio_backend, raise_server_exceptions=False).get(
        "/", params={"n": 4000}
    )

    assert response.status_code == 500
    assert "set-cookie" not in response.headers
    [record] = asignals_records(caplog)
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    error = record.exc_info[1]
    assert isinstance(error, FlashError)
    size = cookie_size(session_of("hello", "b" * 4000))
    assert f"{size} bytes, over {LIMIT}" in record.getMessage()
    assert f"{size} bytes" in str(error)


def test_a_session_write_after_flash_within_the_limit_keeps_the_message(
    anyio_backend: str,
    endpoint_kind: str,
    make_app: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app(Route("/", flash_then_write(endpoint_kind)))
    test_client = client(app, anyio_backend)
    caplog.set_level(logging.ERROR, logger="asignals")

    response = test_client.get("/", params={"n": 1000})

    assert response.status_code == 200
    assert test_client.get("/read").json() == [["message", "hello"]]
    assert asignals_records(caplog) == []


def test_the_limit_is_the_cookies_exact_size(
    anyio_backend: str, make_app: Callable[..., Any]
) -> None:
    """Starlette's cookie grows 4 bytes at a time: the biggest one that fits
    passes, the next one fails, whether the middleware measures the header
    (outside SessionMiddleware) or the session (inside it)."""
    app = make_app(Route("/", flash_then_write("async")))
    fits = len(blob_for(LIMIT))
    kept_client = client(app, anyio_backend)

    kept = kept_client.get("/", params={"n": fits})
    refused = client(app, anyio_backend, raise_server_exceptions=False).get(
        "/", params={"n": fits + 1}
    )

    assert kept.status_code == 200
    cookie = kept.headers["set-cookie"].split(";")[0]
    assert len(cookie) == cookie_size(session_of("hello", "b" * fits)) <= LIMIT
    assert kept_client.get("/read").json() == [["message", "hello"]]
    assert refused.status_code == 500


@pytest.mark.parametrize("form", ["install", "inside-session"])
def test_a_session_cookie_of_another_name_is_the_one_measured(
    anyio_backend: str, form: str
) -> None:
    app = FORMS[form](Route("/", flash_then_write("async")), session_cookie="sid")
    fits = len(blob_for(LIMIT, name="sid"))

    kept = client(app, anyio_backend).get("/", params={"n": fits})
    refused = client(app, anyio_backend, raise_server_exceptions=False).get(
        "/", params={"n": fits + 1}
    )

    assert kept.status_code == 200
    assert kept.headers["set-cookie"].startswith("sid=")
    assert refused.status_code == 500


def test_a_big_session_write_without_flash_is_not_checked(
    anyio_backend: str, make_app: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    async def write(request: Request) -> Response:
        request.session["blob"] = "b" * 5000
        return PlainTextResponse("written")

    app = make_app(Route("/", write))
    caplog.set_level(logging.ERROR, logger="asignals")

    response = client(app, anyio_backend).get("/")

    assert response.status_code == 200
    assert len(response.headers["set-cookie"].split(";")[0]) > LIMIT
    assert asignals_records(caplog) == []


def test_messages_read_in_the_request_are_not_checked(
    anyio_backend: str, make_app: Callable[..., Any]
) -> None:
    async def flash_read_write(request: Request) -> Response:
        flash("hello")
        get_flashed_messages()
        request.session["blob"] = "b" * 5000
        return PlainTextResponse("read")

    app = make_app(Route("/", flash_read_write))

    assert client(app, anyio_backend).get("/").status_code == 200


def test_earlier_messages_survive_in_the_cookie_the_client_kept(anyio_backend: str) -> None:
    app = installed(
        Route("/first", flash_then_write("async", "first")),
        Route("/second", flash_then_write("async", "second")),
    )
    test_client = client(app, anyio_backend, raise_server_exceptions=False)

    assert test_client.get("/first", params={"n": 10}).status_code == 200
    assert test_client.get("/second", params={"n": 4000}).status_code == 500

    messages = test_client.get("/read").json()
    assert messages == [["message", "first"]]


def test_the_error_is_the_requests_as_a_request_finished_error_would_be(
    anyio_backend: str,
) -> None:
    """Lifecycle receivers see the FlashError as the request's exception and
    the 500 as its response; the check comes first, so request_finished is
    sent for the 500 only."""
    exceptions: list[BaseException] = []
    statuses: list[int] = []

    def record_exception(sender: Any, exception: BaseException) -> None:
        exceptions.append(exception)

    def record_response(sender: Any, response: ResponseHead) -> None:
        statuses.append(response.status_code)

    app = installed(Route("/", flash_then_write("async")))

    with (
        got_request_exception.connected_to(record_exception, app),
        request_finished.connected_to(record_response, app),
    ):
        response = client(app, anyio_backend, raise_server_exceptions=False).get(
            "/", params={"n": 4000}
        )

    assert response.status_code == 500
    [error] = exceptions
    assert isinstance(error, FlashError)
    assert statuses == [500]


def test_the_check_fails_the_request_with_receiver_errors_logged_too(
    anyio_backend: str,
) -> None:
    app = install(cookie_app(Route("/", flash_then_write("async"))), receiver_errors="log")

    response = client(app, anyio_backend, raise_server_exceptions=False).get(
        "/", params={"n": 4000}
    )

    assert response.status_code == 500


def test_an_exception_handler_response_is_checked_too(anyio_backend: str) -> None:
    """A handled exception's response goes through SessionMiddleware like
    any other, with the session the endpoint left."""

    class Refused(Exception):
        pass

    async def flash_write_raise(request: Request) -> Response:
        flash("hello")
        request.session["blob"] = "b" * 4000
        raise Refused

    async def refused(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("refused", status_code=400)

    app = installed(Route("/", flash_write_raise), app={"exception_handlers": {Refused: refused}})

    with pytest.raises(FlashError, match=re.escape(f"{LIMIT} bytes")):
        client(app, anyio_backend).get("/")

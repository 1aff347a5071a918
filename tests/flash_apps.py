"""Apps, endpoints and receivers for the flash() tests (test_flash.py,
test_flash_errors.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from helpers import receiver_of
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from asignals import flash, get_flashed_messages, install, lifecycle

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


def attempt(errors: list[Exception], call: Callable[[], Any]) -> None:
    """Call ``call``, keeping its exception in ``errors``: an endpoint that
    catches the error returns a normal response, which saves the session, so
    what the failed call may have stored would show in the next request."""
    try:
        call()
    except Exception as exc:
        errors.append(exc)


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

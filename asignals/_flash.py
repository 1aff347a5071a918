"""Flash messages, as in Flask: kept in the session (Starlette's
``SessionMiddleware``) until :func:`get_flashed_messages` next reads them,
usually in the request a redirect leads to."""

from __future__ import annotations

import json
import logging
import reprlib
from base64 import b64encode
from collections.abc import Container
from typing import TYPE_CHECKING, Any, Literal, overload

from markupsafe import Markup

from ._context import RequestContext, current_request_context
from ._deferred import send_from_sync
from ._exceptions import ArgumentError, ContextError, FlashError, InvalidValueError
from ._lifecycle import message_flashed

if TYPE_CHECKING:
    from starlette.types import Message

logger = logging.getLogger("asignals")

# Where the messages are kept in the session, as in Flask: a list of
# [category, message] pairs, [category, text, "html"] for a Markup message.
_KEY = "_flashes"
_HTML = "html"

# Browsers keep a cookie only if its name and value fit in 4096 bytes; a
# bigger session cookie is dropped, and every message in it lost.
_COOKIE_LIMIT = 4096
# What Starlette's SessionMiddleware adds to the encoded session: the
# signer's timestamp and signature (35 bytes), "=" and the cookie's name,
# which is not known here: room for 64 characters.
_COOKIE_OVERHEAD = 100
# The signer's part of it: "." timestamp (6) "." signature (27).
_SIGNATURE_SIZE = 35
# How far check_saved_session() follows a middleware stack's ``.app`` links.
_STACK_DEPTH = 64


def flash(message: Any, category: str = "message") -> None:
    """Keep ``message`` in the session until :func:`get_flashed_messages`
    next reads it (usually in the request a redirect leads to), and
    send ``message_flashed(message=message, category=category)`` with the app
    as sender.

    Call it while handling a request, before the response starts: a message
    flashed later could not be saved, so that is a ``RuntimeError``, as is a
    call outside a request or without Starlette's ``SessionMiddleware``. The
    message must be a value the session can store as JSON (a ``str``, usually;
    a ``markupsafe.Markup`` stays markup), else ``TypeError``; one that would
    make the session cookie too big for browsers is a ``ValueError``. If the
    endpoint then writes to the session until the cookie that keeps the
    messages is too big, the request fails as its response starts
    (``FlashError``, logged), rather than browsers dropping the messages.

    Called in an async endpoint, ``message_flashed``'s sync receivers run at
    once and its async receivers a little later, before ``request_finished``;
    in a sync endpoint (a worker thread) all of them run at once.
    """
    ctx = current_request_context()
    if ctx is None:
        raise ContextError(
            "flash() was called outside a request: flash messages are kept in "
            "the session of the request being handled. Call it from an endpoint "
            "(or code it calls) of an app that asignals.install(app) set up."
        )
    session = _session(ctx, "flash()")
    if ctx.responding:
        raise FlashError(
            f"flash({reprlib.repr(message)}) came after the response started (or the "
            "request ended without one), when the session could no longer be "
            "saved: the message would be lost. Flash before the endpoint returns "
            "its response, not in a background task, a streaming body or a "
            "request_finished or teardown receiver."
        )
    if ctx.session_bypassed:
        raise FlashError(
            f"flash({reprlib.repr(message)}) came after the request failed with an "
            "unhandled exception: Starlette's handlers for it (those for 500 or "
            "Exception) run outside SessionMiddleware, so the session is not "
            "saved and the message would be lost. Flash in the endpoint, or in a "
            "handler for a more specific exception or status code."
        )
    if not isinstance(category, str):
        raise ArgumentError(
            f"flash() takes a str category, not {category!r}: pass a name such as "
            '"error" or "info".'
        )
    entry = _entry(message, category)
    stored = session.get(_KEY, [])
    if not isinstance(stored, list):
        raise InvalidValueError(_malformed(stored))
    flashes = [*stored, entry]
    if type(session).__module__ == "starlette.middleware.sessions":
        _check_cookie_size(session, flashes, message)
    # Checked again as the response starts (check_saved_session): the
    # endpoint may write more to the session after this.
    ctx.flashed = True
    # A new list, assigned: Starlette saves a session only when it was
    # changed through its mapping methods.
    session[_KEY] = flashes
    send_from_sync(ctx, message_flashed, {"message": message, "category": category})


@overload
def get_flashed_messages(
    with_categories: Literal[False] = False, category_filter: Container[str] = ()
) -> list[Any]: ...


@overload
def get_flashed_messages(
    with_categories: Literal[True], category_filter: Container[str] = ()
) -> list[tuple[str, Any]]: ...


@overload
def get_flashed_messages(
    with_categories: bool, category_filter: Container[str] = ()
) -> list[Any]: ...


def get_flashed_messages(
    with_categories: bool = False, category_filter: Container[str] = ()
) -> list[Any] | list[tuple[str, Any]]:
    """The messages flashed since they were last read, oldest first, as in
    Flask: the first call in a request takes them out of the session, and
    every later call in the same request returns them again.

    :param with_categories: Return ``(category, message)`` pairs instead of
        messages.
    :param category_filter: Return only the messages of these categories,
        a list or set of names (a plain string tests substrings, as in Flask).
        All are taken out of the session all the same.

    In a handler for ``500`` or ``Exception``, which Starlette runs outside
    ``SessionMiddleware``, the session is not saved: the messages are left
    in it for the next page, and this returns ``[]``.

    Available as ``get_flashed_messages()`` in the templates of
    :class:`asignals.templating.Jinja2Templates`.
    """
    ctx = current_request_context()
    if ctx is None:
        raise ContextError(
            "get_flashed_messages() was called outside a request: flash "
            "messages are kept in the session of the request being handled. "
            "Call it from an endpoint or template of an app that "
            "asignals.install(app) set up."
        )
    flashes = ctx.flashes
    if flashes is None:
        session = _session(ctx, "get_flashed_messages()")
        if _KEY in session and ctx.session_bypassed:
            # Taken out now, they would show again: leave them for the next page.
            return []
        if _KEY in session:
            if ctx.responding:
                raise FlashError(
                    "get_flashed_messages() came after the response started, when "
                    "the session had already been saved: the messages could not "
                    "be taken out of it, and would show again. Read them before "
                    "the response starts (in the endpoint, or the template it "
                    "renders)."
                )
            stored = session[_KEY]
            if not isinstance(stored, list):
                raise InvalidValueError(_malformed(stored))
            flashes = [_read(entry) for entry in stored]
            del session[_KEY]
        else:
            flashes = []
        ctx.flashes = flashes
    if category_filter:
        flashes = [flashed for flashed in flashes if flashed[0] in category_filter]
    if with_categories:
        return list(flashes)
    return [message for _, message in flashes]


def _session(ctx: RequestContext, caller: str) -> Any:
    scope = ctx.scope
    if scope["type"] != "http":
        raise FlashError(
            f"{caller} was called in a websocket, whose session is never saved: "
            "flash messages only work in HTTP requests; send the message over "
            "the websocket instead."
        )
    try:
        return scope["session"]
    except KeyError:
        raise FlashError(
            f"{caller} needs a session: add Starlette's SessionMiddleware to the "
            "app (`app.add_middleware(SessionMiddleware, secret_key=...)`, from "
            "starlette.middleware.sessions; it needs the itsdangerous package). "
            "If the app has it, this was called before it ran: in a "
            "request_started receiver or middleware outside it."
        ) from None


def _entry(message: Any, category: str) -> list[Any]:
    """The form ``message`` takes in the session, checked to be storable."""
    if isinstance(message, Markup):
        return [category, str(message), _HTML]
    try:
        json.dumps(message)
    except (TypeError, ValueError) as exc:
        raise ArgumentError(
            f"flash() cannot keep {reprlib.repr(message)} in the session, which stores JSON "
            f"({exc}): flash a str, or a value json.dumps() takes."
        ) from None
    return [category, message]


def _read(entry: Any) -> tuple[str, Any]:
    if isinstance(entry, list | tuple):
        if len(entry) == 2:
            return entry[0], entry[1]
        if len(entry) == 3 and entry[2] == _HTML:
            return entry[0], Markup(entry[1])
    raise InvalidValueError(_malformed(entry))


def _malformed(value: Any) -> str:
    return (
        f"The session's {_KEY!r} holds {reprlib.repr(value)}, which flash() did not "
        "store; remove that key from the session, or let flash() alone write it."
    )


def _check_cookie_size(session: dict[str, Any], flashes: list[Any], message: Any) -> None:
    """Refuse a message that would make the session cookie of Starlette's
    SessionMiddleware too big for browsers, which would drop it silently."""
    try:
        data = json.dumps({**session, _KEY: flashes}).encode()
    except (TypeError, ValueError):
        return  # SessionMiddleware cannot save this session anyway, and says so
    size = len(b64encode(data)) + _COOKIE_OVERHEAD
    if size > _COOKIE_LIMIT:
        raise InvalidValueError(
            f"flash({reprlib.repr(message)}) would make the session cookie about {size} bytes, "
            f"more than the {_COOKIE_LIMIT} browsers keep: the cookie, and every "
            "message in it, would be lost. Flash a shorter message, keep less in "
            "the session, or keep sessions on the server."
        )


def check_saved_session(ctx: RequestContext, message: Message) -> None:
    """Fail the request whose response is starting (``message``, its
    ``http.response.start``) if the session cookie that keeps the messages it
    flashed is too big for browsers, which would drop it, and every message
    in it, without a word. flash() checks the size when it is called; this
    catches what the endpoint wrote to the session after its last flash().

    The middleware calls it as the response starts, only for a request that
    flashed (``ctx.flashed``), and at most once. Raises :class:`FlashError`,
    logged on the ``asignals`` logger, which fails the request (a 500)."""
    ctx.flashed = False  # not again for the error response
    if ctx.session_bypassed:
        return  # this response does not save the session at all
    session: Any = ctx.scope.get("session")
    # Only Starlette's sessions live in the cookie; and messages read since
    # (get_flashed_messages()) are out of it.
    if type(session).__module__ != "starlette.middleware.sessions" or _KEY not in session:
        return
    name, saved_later = _session_cookie(ctx)
    if saved_later:
        # asignals' middleware is inside SessionMiddleware, which saves the
        # session once this message reaches it: measure it as it will.
        if not session.modified:
            return
        try:
            data = json.dumps(session).encode()
        except (TypeError, ValueError):
            return  # SessionMiddleware cannot save it anyway, and says so
        size = len(name.encode()) + 1 + len(b64encode(data)) + _SIGNATURE_SIZE
    else:
        cookie = _set_cookie(message, name)
        if cookie is None:
            return  # the session is not saved with this response
        size = len(cookie)
    if size <= _COOKIE_LIMIT:
        return
    error = FlashError(
        f"The session cookie {name!r} that keeps this request's flashed messages "
        f"came to {size} bytes as the response started, more than the "
        f"{_COOKIE_LIMIT} bytes browsers keep: they would drop it, and the "
        "messages with it. The endpoint wrote to the session after flash(), "
        "which checked the size then; the request fails instead of losing them. "
        "Store less in the session (an id rather than the data), or keep "
        "sessions on the server."
    )
    logger.error(
        "Failing the request: its session cookie with flashed messages is %d bytes, over %d",
        size,
        _COOKIE_LIMIT,
        exc_info=error,
    )
    raise error


def _session_cookie(ctx: RequestContext) -> tuple[str, bool]:
    """The name of the session cookie, and whether Starlette's
    SessionMiddleware saves the session after the response start went
    through asignals' middleware (it was added to the app after it, so sits
    outside it), instead of before.

    Found by following the built middleware stack (``.app`` links) of the
    app handling the request, then of the sender; if no SessionMiddleware is
    found there, ``"session"``, saved before."""
    from starlette.middleware.sessions import SessionMiddleware

    from ._starlette import Starlette

    ours = getattr(ctx, "middleware", None)
    seen: set[int] = set()
    for node in (ctx.scope.get("app"), ctx.app):
        found: SessionMiddleware | None = None
        for _ in range(_STACK_DEPTH):
            if isinstance(node, Starlette):
                node = node.middleware_stack
            if node is None or id(node) in seen:
                break
            seen.add(id(node))
            if node is ours and found is not None:
                return found.session_cookie, True
            if found is None and isinstance(node, SessionMiddleware):
                found = node
            node = getattr(node, "app", None)
        if found is not None:
            return found.session_cookie, False
    return "session", False


def _set_cookie(message: Message, name: str) -> bytes | None:
    """The ``name=value`` of the last ``Set-Cookie`` header in ``message``
    that sets the cookie ``name``, or None."""
    prefix = name.encode("latin-1") + b"="
    found = None
    for key, value in message.get("headers", ()):
        if key.lower() == b"set-cookie" and value.startswith(prefix):
            found = value.split(b";", 1)[0]
    return found

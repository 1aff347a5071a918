"""asignals: Flask's signals for async Python web apps.

A signal core that speaks blinker's API and takes sync and ``async def``
receivers; the lifecycle signals Flask sends, and the ASGI middleware that
sends them for Starlette and FastAPI apps, with Flask's context globals,
flash messages, and background sends that the app's lifespan runs.
``asignals.templating`` holds the Jinja2 templates that send the template
signals, ``asignals.observers`` the way to watch every send, and
``asignals.monitor`` a live view of the signals sent.

``import asignals`` loads the signal core only (it needs anyio alone); the
web parts, which need Starlette, load when one of their names is first used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._exceptions import (
    ArgumentError,
    AsignalsError,
    BackgroundError,
    BackgroundLimitError,
    BridgeError,
    BridgeFullError,
    ContextError,
    FlashError,
    FlaskNameError,
    InvalidValueError,
    NeedsAwaitError,
    ReceiverCancelledError,
    SendTimeoutError,
    UsageError,
)
from ._lifecycle import (
    appcontext_popped,
    appcontext_pushed,
    appcontext_tearing_down,
    before_render_template,
    got_background_exception,
    got_request_exception,
    got_websocket_exception,
    lifecycle,
    message_flashed,
    request_finished,
    request_started,
    request_tearing_down,
    template_rendered,
    websocket_finished,
    websocket_started,
    websocket_tearing_down,
)
from ._signal import NamedSignal, Namespace, Signal, default_namespace, signal
from ._types import ANY
from .observers import Observer, observe

if TYPE_CHECKING:
    from ._context import AppContext, AppGlobals, app_context, current_app, g, request
    from ._flash import flash, get_flashed_messages
    from ._install import install
    from ._middleware import ResponseHead, SignalMiddleware

# The web parts: the module each name is in, imported when first asked for.
_LAZY = {
    "AppContext": "_context",
    "AppGlobals": "_context",
    "app_context": "_context",
    "current_app": "_context",
    "g": "_context",
    "request": "_context",
    "flash": "_flash",
    "get_flashed_messages": "_flash",
    "ResponseHead": "_middleware",
    "SignalMiddleware": "_middleware",
    "install": "_install",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'asignals' has no attribute {name!r}")
    value = getattr(import_module(f"asignals.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__version__ = "0.1.0"

__all__ = [
    "ANY",
    "AppContext",
    "AppGlobals",
    "ArgumentError",
    "AsignalsError",
    "BackgroundError",
    "BackgroundLimitError",
    "BridgeError",
    "BridgeFullError",
    "ContextError",
    "FlashError",
    "FlaskNameError",
    "InvalidValueError",
    "NamedSignal",
    "Namespace",
    "NeedsAwaitError",
    "Observer",
    "ReceiverCancelledError",
    "ResponseHead",
    "SendTimeoutError",
    "Signal",
    "SignalMiddleware",
    "UsageError",
    "app_context",
    "appcontext_popped",
    "appcontext_pushed",
    "appcontext_tearing_down",
    "before_render_template",
    "current_app",
    "default_namespace",
    "flash",
    "g",
    "get_flashed_messages",
    "got_background_exception",
    "got_request_exception",
    "got_websocket_exception",
    "install",
    "lifecycle",
    "message_flashed",
    "observe",
    "request",
    "request_finished",
    "request_started",
    "request_tearing_down",
    "signal",
    "template_rendered",
    "websocket_finished",
    "websocket_started",
    "websocket_tearing_down",
]

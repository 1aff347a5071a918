"""asignals: Flask's signals for async Python web apps.

A signal core that speaks blinker's API and takes sync and ``async def``
receivers; the lifecycle signals Flask sends, and the ASGI middleware that
sends them for Starlette and FastAPI apps, with Flask's context globals,
flash messages, and background sends that the app's lifespan runs.
``asignals.templating`` holds the Jinja2 templates that send the template
signals, and ``asignals.monitor`` a live view of the signals sent.
"""

from ._background import BackgroundLimitError
from ._context import AppContext, AppGlobals, app_context, current_app, g, request
from ._flash import flash, get_flashed_messages
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
from ._middleware import ResponseHead, SignalMiddleware, install
from ._signal import NamedSignal, Namespace, Signal, default_namespace, signal
from ._utilities import ANY

__all__ = [
    "ANY",
    "AppContext",
    "AppGlobals",
    "BackgroundLimitError",
    "NamedSignal",
    "Namespace",
    "ResponseHead",
    "Signal",
    "SignalMiddleware",
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

"""asignals: Flask's signals for async Python web apps.

A signal core that speaks blinker's API and takes sync and ``async def``
receivers, and the lifecycle signals Flask sends.
"""

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
from ._utilities import ANY

__all__ = [
    "ANY",
    "NamedSignal",
    "Namespace",
    "Signal",
    "appcontext_popped",
    "appcontext_pushed",
    "appcontext_tearing_down",
    "before_render_template",
    "default_namespace",
    "got_background_exception",
    "got_request_exception",
    "got_websocket_exception",
    "lifecycle",
    "message_flashed",
    "request_finished",
    "request_started",
    "request_tearing_down",
    "signal",
    "template_rendered",
    "websocket_finished",
    "websocket_started",
    "websocket_tearing_down",
]

"""The lifecycle signals, named and ordered as Flask's (and Quart's, for
websockets and background tasks).

Each docstring says when the signal is sent and with which keyword arguments;
the sender is always the application. For an HTTP request the order is
``appcontext_pushed``, ``request_started``, (the endpoint: ``message_flashed``,
``before_render_template``, ``template_rendered``), ``got_request_exception``
(only for an unhandled exception), ``request_finished``,
``request_tearing_down``, ``appcontext_tearing_down``, ``appcontext_popped``.
"""

from __future__ import annotations

from ._signal import Namespace

lifecycle = Namespace()
"""The namespace of the lifecycle signals, keyed by their Flask names."""

appcontext_pushed = lifecycle.signal(
    "appcontext-pushed",
    """Sent when an application context is pushed, with no arguments.""",
)

appcontext_tearing_down = lifecycle.signal(
    "appcontext-tearing-down",
    """Sent when the application context is torn down, always and exactly
    once, with ``exc``: the exception that ended it, or ``None``.""",
)

appcontext_popped = lifecycle.signal(
    "appcontext-popped",
    """Sent when the application context is popped, after
    ``appcontext_tearing_down``, with no arguments.""",
)

request_started = lifecycle.signal(
    "request-started",
    """Sent when the request context is set up, before the endpoint runs,
    with no arguments.""",
)

request_finished = lifecycle.signal(
    "request-finished",
    """Sent right before the response starts to go to the client, with
    ``response``: it has ``.status_code`` and ``.headers`` (a Starlette
    ``MutableHeaders``), and headers a receiver sets reach the client.""",
)

got_request_exception = lifecycle.signal(
    "got-request-exception",
    """Sent when an exception escapes the endpoint and no exception handler
    turns it into a response, with ``exception``: the exception.""",
)

request_tearing_down = lifecycle.signal(
    "request-tearing-down",
    """Sent after the response went out or the request failed, always and
    exactly once, with ``exc``: the unhandled exception, or ``None``.""",
)

message_flashed = lifecycle.signal(
    "message-flashed",
    """Sent when a message is flashed, with ``message`` and ``category``.""",
)

before_render_template = lifecycle.signal(
    "before-render-template",
    """Sent before a template renders, with ``template`` (the
    ``jinja2.Template``) and ``context`` (the dict it renders with; changes a
    receiver makes show in the output).""",
)

template_rendered = lifecycle.signal(
    "template-rendered",
    """Sent after a template rendered, with ``template`` (the
    ``jinja2.Template``) and ``context`` (the dict it rendered with).""",
)

websocket_started = lifecycle.signal(
    "websocket-started",
    """Sent when a websocket connection's context is set up, before the
    handler runs, with no arguments.""",
)

websocket_finished = lifecycle.signal(
    "websocket-finished",
    """Sent when the websocket handler returned, with ``response``: ``None``,
    or the response that denied the connection.""",
)

got_websocket_exception = lifecycle.signal(
    "got-websocket-exception",
    """Sent when an exception escapes a websocket handler, with
    ``exception``: the exception.""",
)

websocket_tearing_down = lifecycle.signal(
    "websocket-tearing-down",
    """Sent when a websocket connection ends, always and exactly once, with
    ``exc``: the exception that ended it, or ``None``.""",
)

got_background_exception = lifecycle.signal(
    "got-background-exception",
    """Sent when a receiver of a background send raised, with ``exception``:
    the exception.""",
)

# The middleware keeps what each app's requests need, and works it out again
# when any of these signals' connections change.
for _signal in lifecycle.values():
    _signal._counted = True
del _signal

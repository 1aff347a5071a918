import pytest

import asignals
from asignals import NamedSignal, lifecycle

# Flask's signal names, and Quart's for websockets.
FLASK_NAMES = {
    "appcontext_pushed": "appcontext-pushed",
    "appcontext_tearing_down": "appcontext-tearing-down",
    "appcontext_popped": "appcontext-popped",
    "request_started": "request-started",
    "request_finished": "request-finished",
    "got_request_exception": "got-request-exception",
    "request_tearing_down": "request-tearing-down",
    "message_flashed": "message-flashed",
    "before_render_template": "before-render-template",
    "template_rendered": "template-rendered",
    "websocket_started": "websocket-started",
    "websocket_finished": "websocket-finished",
    "got_websocket_exception": "got-websocket-exception",
    "websocket_tearing_down": "websocket-tearing-down",
    "got_background_exception": "got-background-exception",
}

# The keyword arguments each signal is sent with, which its docstring must name.
KWARGS = {
    "appcontext_tearing_down": ["exc"],
    "request_finished": ["response"],
    "got_request_exception": ["exception"],
    "request_tearing_down": ["exc"],
    "message_flashed": ["message", "category"],
    "before_render_template": ["template", "context"],
    "template_rendered": ["template", "context"],
    "websocket_finished": ["response"],
    "got_websocket_exception": ["exception"],
    "websocket_tearing_down": ["exc"],
    "got_background_exception": ["exception"],
}


@pytest.mark.parametrize(("attribute", "name"), FLASK_NAMES.items())
def test_signal_is_exported_under_its_flask_name(attribute: str, name: str) -> None:
    signal = getattr(asignals, attribute)
    assert attribute in asignals.__all__
    assert isinstance(signal, NamedSignal)
    assert signal.name == name
    assert lifecycle[name] is signal


def test_namespace_holds_exactly_the_lifecycle_signals() -> None:
    assert set(lifecycle) == set(FLASK_NAMES.values())


@pytest.mark.parametrize("attribute", FLASK_NAMES)
def test_docstring_names_the_arguments(attribute: str) -> None:
    doc = getattr(asignals, attribute).__doc__
    assert doc
    for kwarg in KWARGS.get(attribute, []):
        assert f"``{kwarg}``" in doc


@pytest.mark.parametrize("attribute", FLASK_NAMES)
def test_lifecycle_signals_dispatch_sequentially(attribute: str) -> None:
    # Flask's order depends on receivers running one after another.
    assert getattr(asignals, attribute).concurrent is False

"""SignalMiddleware when lifecycle receivers raise: what reaches the client,
what is logged, and which signals still go out."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from helpers import Boom, client, per_signal
from middleware_apps import NORMAL, TEARDOWN, UNHANDLED, Events, failing_app, hello_app

from asignals import (
    NamedSignal,
    ResponseHead,
    SignalMiddleware,
    appcontext_popped,
    appcontext_pushed,
    appcontext_tearing_down,
    got_request_exception,
    install,
    lifecycle,
    request_finished,
    request_started,
    request_tearing_down,
)

# Receiver errors


def failing_receiver(error: BaseException) -> Callable[..., None]:
    def fail(sender: Any, **kwargs: Any) -> None:
        raise error

    return fail


def test_request_started_receiver_error_becomes_the_unhandled_exception(
    anyio_backend: str, events: Events
) -> None:
    error = Boom("request_started receiver failed")
    app = install(hello_app(events))

    with request_started.connected_to(failing_receiver(error)):
        response = client(app, anyio_backend, raise_server_exceptions=False).get("/")

    assert response.status_code == 500
    assert events.names == UNHANDLED
    assert events.one("got-request-exception") == {"exception": error}
    assert events.one("request-finished")["response"].status_code == 500
    assert events.one("request-tearing-down") == {"exc": error}
    assert events.one("appcontext-tearing-down") == {"exc": error}


def test_request_started_receiver_error_stops_later_receivers(anyio_backend: str) -> None:
    called: list[str] = []
    app = install(hello_app())

    def later(sender: Any) -> None:
        called.append("later")

    with (
        request_started.connected_to(failing_receiver(Boom("first"))),
        request_started.connected_to(later),
    ):
        client(app, anyio_backend, raise_server_exceptions=False).get("/")

    assert called == []


def failing_on_ok(error: Exception) -> Callable[..., None]:
    """A request_finished receiver that fails on a 200 response only, as one
    that checks the endpoint's response would: the 500 that follows passes."""

    def check(sender: Any, response: ResponseHead) -> None:
        if response.status_code == 200:
            raise error

    return check


def test_request_finished_receiver_error_gives_a_plain_500(anyio_backend: str) -> None:
    app = install(hello_app())

    with request_finished.connected_to(failing_on_ok(Boom("request_finished receiver failed"))):
        response = client(app, anyio_backend, raise_server_exceptions=False).get("/")

    assert response.status_code == 500
    assert response.text == "Internal Server Error"


def test_request_finished_receiver_error_order(anyio_backend: str, events: Events) -> None:
    error = Boom("request_finished receiver failed")
    app = install(hello_app())

    with request_finished.connected_to(failing_on_ok(error)):
        client(app, anyio_backend, raise_server_exceptions=False).get("/")

    assert events.names == [
        "appcontext-pushed",
        "request-started",
        "request-finished",
        "got-request-exception",
        "request-finished",
        *TEARDOWN,
    ]
    statuses = [e.kwargs["response"].status_code for e in events if e.name == "request-finished"]
    assert statuses == [200, 500]
    assert events.one("got-request-exception") == {"exception": error}
    assert events.one("request-tearing-down") == {"exc": error}
    assert events.one("appcontext-tearing-down") == {"exc": error}


def test_error_response_request_finished_receiver_error_is_logged(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """As in Flask: a request_finished receiver that also fails for the 500
    that its first failure caused is logged; the first failure propagates."""
    calls: list[int] = []

    def always_failing(sender: Any, response: ResponseHead) -> None:
        calls.append(response.status_code)
        raise Boom(f"failed on {response.status_code}")

    app = install(hello_app())
    caplog.set_level(logging.ERROR, logger="asignals")
    test_client = client(app, anyio_backend)
    with request_finished.connected_to(always_failing), pytest.raises(Boom) as raised:
        test_client.get("/")

    assert calls == [200, 500]
    assert str(raised.value) == "failed on 200"
    [record] = [r for r in caplog.records if r.name == "asignals"]
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "failed on 500"
    assert "always_failing" in record.getMessage()


def test_appcontext_pushed_receiver_error_skips_the_request(
    anyio_backend: str, events: Events
) -> None:
    error = Boom("appcontext_pushed receiver failed")
    app = install(hello_app(events))

    with appcontext_pushed.connected_to(failing_receiver(error)):
        response = client(app, anyio_backend, raise_server_exceptions=False).get("/")

    assert response.status_code == 500
    assert events.names == ["appcontext-pushed", "appcontext-tearing-down", "appcontext-popped"]
    assert events.one("appcontext-tearing-down") == {"exc": error}


@pytest.mark.parametrize(
    ("signal", "failing"),
    per_signal(
        (appcontext_pushed, failing_receiver),
        (request_started, failing_receiver),
        (request_finished, failing_on_ok),
    ),
)
def test_receiver_error_before_the_response_propagates(
    anyio_backend: str, signal: NamedSignal, failing: Callable[[Exception], Callable[..., None]]
) -> None:
    error = Boom(f"{signal.name} receiver failed")
    app = install(hello_app())

    with signal.connected_to(failing(error)), pytest.raises(Boom) as raised:
        client(app, anyio_backend).get("/")

    assert raised.value is error


LOGGED_SIGNALS = [
    "appcontext-pushed",
    "request-started",
    "request-finished",
    "request-tearing-down",
    "appcontext-tearing-down",
    "appcontext-popped",
]


def broken_receiver(sender: Any, **kwargs: Any) -> None:
    raise Boom("broken receiver")


@pytest.mark.parametrize("name", LOGGED_SIGNALS)
def test_log_mode_logs_a_receiver_error_and_the_request_goes_on(
    anyio_backend: str, events: Events, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    app = install(hello_app(events), receiver_errors="log")

    with (
        caplog.at_level(logging.ERROR, logger="asignals"),
        lifecycle[name].connected_to(broken_receiver),
    ):
        response = client(app, anyio_backend).get("/")

    assert response.status_code == 200
    assert response.text == "hello"
    assert events.names == [*NORMAL[:2], "endpoint", *NORMAL[2:]]
    assert events.one("request-tearing-down") == {"exc": None}
    [record] = [r for r in caplog.records if r.name == "asignals"]
    assert "broken_receiver" in record.getMessage()
    assert name in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], Boom)


def test_log_mode_runs_every_receiver(anyio_backend: str, caplog: pytest.LogCaptureFixture) -> None:
    called: list[str] = []
    app = install(hello_app(), receiver_errors="log")

    def later(sender: Any) -> None:
        called.append("later")

    with (
        caplog.at_level(logging.ERROR, logger="asignals"),
        request_started.connected_to(broken_receiver),
        request_started.connected_to(later),
    ):
        client(app, anyio_backend).get("/")

    assert called == ["later"]


def test_log_mode_with_signal_middleware(
    anyio_backend: str, events: Events, caplog: pytest.LogCaptureFixture
) -> None:
    app = SignalMiddleware(hello_app(), receiver_errors="log")

    with (
        caplog.at_level(logging.ERROR, logger="asignals"),
        request_started.connected_to(broken_receiver),
    ):
        response = client(app, anyio_backend).get("/")

    assert response.status_code == 200
    assert events.names == NORMAL
    assert any("broken_receiver" in r.getMessage() for r in caplog.records)


def test_teardown_receiver_errors_are_raised_together_after_every_teardown(
    anyio_backend: str, events: Events
) -> None:
    first = Boom("request teardown failed")
    second = Boom("app teardown failed")
    app = install(hello_app())

    with (
        request_tearing_down.connected_to(failing_receiver(first)),
        appcontext_tearing_down.connected_to(failing_receiver(second)),
        pytest.raises(ExceptionGroup) as raised,
    ):
        client(app, anyio_backend).get("/")

    assert raised.value.exceptions == (first, second)
    assert events.names == NORMAL


def test_teardown_receiver_errors_on_one_signal_still_reach_every_receiver(
    anyio_backend: str, events: Events
) -> None:
    first = Boom("first")
    second = Boom("second")
    app = install(hello_app())

    with (
        request_tearing_down.connected_to(failing_receiver(first)),
        request_tearing_down.connected_to(failing_receiver(second)),
        pytest.raises(ExceptionGroup) as raised,
    ):
        client(app, anyio_backend).get("/")

    assert raised.value.exceptions == (first, second)
    assert events.names == NORMAL


def test_one_teardown_receiver_error_is_raised_as_is(anyio_backend: str, events: Events) -> None:
    error = Boom("teardown failed")
    app = install(hello_app())

    with (
        appcontext_popped.connected_to(failing_receiver(error)),
        pytest.raises(Boom) as raised,
    ):
        client(app, anyio_backend).get("/")

    assert raised.value is error
    assert events.names == NORMAL


@pytest.mark.parametrize("signal", per_signal(got_request_exception, request_tearing_down))
def test_receiver_error_after_an_unhandled_exception_is_raised_with_it(
    anyio_backend: str, events: Events, signal: NamedSignal
) -> None:
    request_error = Boom("endpoint failed")
    receiver_error = Boom(f"{signal.name} receiver failed")
    app = install(failing_app(request_error))

    with (
        signal.connected_to(failing_receiver(receiver_error)),
        pytest.raises(ExceptionGroup) as raised,
    ):
        client(app, anyio_backend).get("/")

    assert raised.value.exceptions == (request_error, receiver_error)
    assert events.names == UNHANDLED


@pytest.mark.parametrize("wrap", [SignalMiddleware, install], ids=["SignalMiddleware", "install"])
def test_bad_receiver_errors_value(wrap: Callable[..., Any]) -> None:
    with pytest.raises(ValueError, match="receiver_errors"):
        wrap(hello_app(), receiver_errors="ignore")

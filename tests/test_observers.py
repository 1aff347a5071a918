"""Observers (asignals.observers): what they see of each send, in every mode,
and what they cost a signal nobody observes."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import asignals
from asignals import ArgumentError, NamedSignal, Signal, install, request_started
from asignals.observers import (
    ObservedSend,
    Observer,
    ReceiverCall,
    all_signals,
    connections,
    observe,
)


class Boom(Exception):
    pass


class Log(Observer):
    """Keeps every event, and each send as it finished."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.finished: list[ObservedSend] = []
        self.done = anyio.Event()

    def send_started(self, send: ObservedSend) -> None:
        self.events.append(("send_started", send.mode))

    def receiver_started(self, send: ObservedSend, call: ReceiverCall) -> None:
        self.events.append(("receiver_started", call.name.rsplit(".", 1)[-1]))

    def receiver_finished(self, send: ObservedSend, call: ReceiverCall) -> None:
        self.events.append(("receiver_finished", f"{call.name.rsplit('.', 1)[-1]}:{call.status}"))

    def send_finished(self, send: ObservedSend) -> None:
        self.events.append(("send_finished", send.mode))
        self.finished.append(send)
        self.done.set()


def first(sender: Any, **kwargs: Any) -> str:
    return "first"


async def second(sender: Any, **kwargs: Any) -> str:
    return "second"


def failing(sender: Any, **kwargs: Any) -> None:
    raise Boom("no")


@pytest.fixture
def log() -> Log:
    return Log()


def test_a_sync_send_is_seen_with_each_receiver_its_kind_outcome_and_duration(log: Log) -> None:
    sig = NamedSignal("saved")
    sig.connect(first)
    sig.connect(lambda sender, **kwargs: None, weak=False, to_thread=True)

    with observe(log, sig):
        results = sig.send("doc", size=3)

    assert [value for _, value in results] == ["first", None]
    assert results[0][0] is first  # the receiver itself, not a stand-in
    (send,) = log.finished
    assert send.signal is sig
    assert send.sender == "doc"
    assert send.kwargs == {"size": 3}
    assert send.mode == "sync"
    assert [(c.receiver, c.kind, c.status) for c in send.calls][:1] == [(first, "sync", "done")]
    assert send.calls[1].kind == "thread"
    assert all(c.duration is not None and c.duration >= 0 for c in send.calls)
    assert send.error is None
    assert send.duration is not None
    assert log.events[0] == ("send_started", "sync")
    assert log.events[-1] == ("send_finished", "sync")


@pytest.mark.anyio
@pytest.mark.parametrize("concurrent", [False, True])
async def test_an_async_send_is_seen_in_its_mode(log: Log, concurrent: bool) -> None:
    sig = Signal()
    sig.connect(first)
    sig.connect(second)

    with observe(log, sig):
        results = await sig.send_async(None, _concurrent=concurrent)

    assert results == [(first, "first"), (second, "second")]
    (send,) = log.finished
    mode = "concurrent" if concurrent else "sequential"
    assert send.mode == mode
    assert [(c.kind, c.status) for c in send.calls] == [("sync", "done"), ("async", "done")]
    assert ("receiver_finished", "second:done") in log.events


def test_a_failing_receiver_is_seen_failed_and_the_later_ones_not_called(log: Log) -> None:
    sig = Signal()
    sig.connect(failing)
    sig.connect(first)

    with observe(log, sig), pytest.raises(Boom):
        sig.send(None)

    (send,) = log.finished
    assert [c.status for c in send.calls] == ["failed", "not called"]
    assert isinstance(send.calls[0].error, Boom)
    assert isinstance(send.error, Boom)


@pytest.mark.anyio
async def test_a_concurrent_failure_is_seen_and_every_receiver_runs(log: Log) -> None:
    sig = Signal()

    async def slow(sender: Any, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()

    async def async_failing(sender: Any, **kwargs: Any) -> None:
        raise Boom("async")

    sig.connect(async_failing)
    sig.connect(slow)

    with observe(log, sig), pytest.raises(ExceptionGroup):
        await sig.send_async(None, _concurrent=True)

    (send,) = log.finished
    assert [c.status for c in send.calls] == ["failed", "done"]
    assert isinstance(send.error, ExceptionGroup)


@pytest.mark.anyio
async def test_a_receiver_cancelled_by_the_timeout_is_seen_cancelled(log: Log) -> None:
    sig = Signal()

    async def never(sender: Any, **kwargs: Any) -> None:
        await anyio.sleep_forever()

    sig.connect(never)

    with observe(log, sig), pytest.raises(TimeoutError):
        await sig.send_async(None, _timeout=0.01)

    (send,) = log.finished
    assert [c.status for c in send.calls] == ["cancelled"]


def test_a_send_with_no_receiver_is_seen_without_its_options(log: Log) -> None:
    sig = Signal()
    with observe(log, sig):
        assert sig.send("x", _async_wrapper=None, n=1) == []
    (send,) = log.finished
    assert send.kwargs == {"n": 1}
    assert send.calls == []


def test_observing_every_signal_reaches_signals_made_later(log: Log) -> None:
    with observe(log):
        later = Signal()
        later.connect(first)
        later.send(None)
    later.send(None)
    assert len(log.finished) == 1
    assert later._observers is None


def test_observers_see_each_send_once_each_in_the_order_they_came(log: Log) -> None:
    other = Log()
    sig = Signal()
    sig.connect(first)
    with observe(log, sig), observe(other, sig):
        sig.send(None)
    assert len(log.finished) == len(other.finished) == 1
    assert log.finished[0] is other.finished[0]


def test_closing_restores_the_unobserved_fast_path(log: Log) -> None:
    sig = Signal()
    sig.connect(first)
    assert sig._sync_handles is not None
    observing = observe(log, sig)
    assert sig._sync_handles is None  # every send goes where observers are told
    observing.close()
    observing.close()  # twice is harmless
    assert sig._sync_handles is not None
    assert sig._observers is None
    sig.send(None)
    assert log.finished == []


def test_an_observer_that_raises_is_logged_and_the_send_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(Observer):
        def send_started(self, send: ObservedSend) -> None:
            raise Boom("observer")

    sig = Signal()
    sig.connect(first)
    with caplog.at_level(logging.ERROR, "asignals"), observe(Broken(), sig):
        assert sig.send(None) == [(first, "first")]
    assert "observer" in caplog.text
    assert "send_started" in caplog.text


def test_observe_takes_observers_only() -> None:
    with pytest.raises(ArgumentError, match="Observer"):
        observe(lambda send: None)  # type: ignore[arg-type]


def test_middleware_sends_are_seen(log: Log, anyio_backend: str) -> None:
    def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hi")

    app = install(Starlette(routes=[Route("/", home)]))
    with (
        observe(log, request_started, asignals.request_finished),
        TestClient(app, backend=anyio_backend) as client,
    ):
        assert client.get("/").text == "hi"
    assert [(s.signal, s.sender) for s in log.finished] == [
        (request_started, app),
        (asignals.request_finished, app),
    ]


def test_background_sends_are_seen_as_made_and_as_they_end(log: Log, anyio_backend: str) -> None:
    job = NamedSignal("job")
    job.connect(first)

    def home(request: Any) -> PlainTextResponse:
        job.send_background("x", n=1)
        return PlainTextResponse("sent")

    app = install(Starlette(routes=[Route("/", home)]))
    with observe(log, job), TestClient(app, backend=anyio_backend) as client:
        assert client.get("/").text == "sent"
    # The app's shutdown waited for the send.
    (send,) = log.finished
    assert send.mode == "background"
    assert send.kwargs == {"n": 1}
    assert [c.status for c in send.calls] == ["done"]


def test_introspection_lists_signals_and_their_connections() -> None:
    sig = NamedSignal("listed")
    sig.connect(first)
    sig.connect(second, sender="me")
    assert sig in all_signals()
    assert [(c.receiver, c.kind, c.senders) for c in connections(sig)] == [
        (first, "sync", [asignals.ANY]),
        (second, "async", ["me"]),
    ]

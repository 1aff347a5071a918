"""Observers (asignals.observers): what they see of each send, in every mode,
and what they cost a signal nobody observes."""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import asignals
from asignals import (
    ArgumentError,
    BackgroundLimitError,
    NamedSignal,
    SendTimeoutError,
    Signal,
    install,
    request_started,
)
from asignals._delivery import COLLECT_NOW, RAISE_NOW, call_later, call_split
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


def test_observe_takes_observers_and_signals_only(log: Log) -> None:
    with pytest.raises(ArgumentError, match="Observer"):
        observe(lambda send: None)  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match="observes signals, not 'saved'"):
        observe(log, "saved")  # type: ignore[arg-type]


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


# Each path tells the observers once, with the real receivers, and behaves as
# it does unobserved.


@pytest.mark.anyio
async def test_a_send_with_no_receiver_for_its_sender_ignores_its_keywords_observed_too(
    log: Log,
) -> None:
    sig = Signal()
    sig.connect(first, sender="a")
    for observed in (False, True):
        with observe(log, sig) if observed else contextlib.nullcontext():
            assert sig.send("b", _timeout=1) == []
            assert await sig.send_async("b", _concurent=True) == []
    assert [s.kwargs for s in log.finished] == [{}, {"_concurent": True}]


def _send_dropping_a_weak_receiver(log: Log | None) -> list[str]:
    """Send to a receiver that lets the weak receiver after it be collected."""
    sig = Signal()
    called: list[str] = []

    class Later:
        def __call__(self, sender: Any, **kwargs: Any) -> None:
            called.append("later")

    later: Later | None = Later()

    def drop(sender: Any, **kwargs: Any) -> None:
        nonlocal later
        called.append("drop")
        later = None
        gc.collect()

    sig.connect(drop, weak=False)
    sig.connect(later)
    with observe(log, sig) if log is not None else contextlib.nullcontext():
        sig.send(None)
    return called


def test_a_weak_receiver_collected_before_its_turn_is_not_called_observed_too(log: Log) -> None:
    assert _send_dropping_a_weak_receiver(None) == ["drop"]
    assert _send_dropping_a_weak_receiver(log) == ["drop"]
    (send,) = log.finished
    assert [c.status for c in send.calls] == ["done", "not called"]
    assert send.calls[1].receiver is None


@pytest.mark.anyio
async def test_a_split_send_stopped_by_a_failure_ends_with_it(log: Log) -> None:
    sig = Signal()

    async def deferred(sender: Any, **kwargs: Any) -> None:
        pass

    sig.connect(deferred)
    sig.connect(failing)
    sig.connect(first)
    with observe(log, sig):
        failures, later = call_split(sig, None, {}, RAISE_NOW)
        assert [r for r, _ in failures] == [failing]
        assert log.finished == []  # the deferred receiver has yet to run
        assert later is not None
        assert await call_later(later, RAISE_NOW) == []
    (send,) = log.finished
    assert isinstance(send.error, Boom)
    assert [c.status for c in send.calls] == ["done", "failed", "not called"]


@pytest.mark.anyio
async def test_a_deferred_receiver_cancelled_is_taken_up_and_the_send_ends_once(log: Log) -> None:
    sig = Signal()
    started, release = anyio.Event(), anyio.Event()

    async def slow(sender: Any, **kwargs: Any) -> None:
        started.set()
        await release.wait()

    sig.connect(slow)
    with observe(log, sig):
        _, later = call_split(sig, None, {}, COLLECT_NOW)
        assert later is not None
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call_later, later, COLLECT_NOW)
                await started.wait()
                tg.cancel_scope.cancel()
    # The cancelled receiver was taken out as it was called: the send is not
    # taken up twice, and it ended, cancelled, once.
    assert later.entries == []
    (send,) = log.finished
    assert [c.status for c in send.calls] == ["cancelled"]
    assert send.error is not None


def test_observing_every_signal_twice_and_closing_once_leaves_one(log: Log) -> None:
    before = Signal()
    first_time, second_time = observe(log), observe(log)
    try:
        first_time.close()
        after = Signal()
        before.send(None)
        after.send(None)
    finally:
        second_time.close()
    assert len(log.finished) == 2
    assert before._observers is None
    assert after._observers is None


def test_send_from_a_worker_thread_and_wrappers_are_seen_with_the_real_receivers(
    log: Log, anyio_backend: str
) -> None:
    sig = Signal()
    sig.connect(second)
    wrapped: list[Any] = []

    def wrapper(receiver: Any) -> Any:
        wrapped.append(receiver)
        return lambda sender, **kwargs: "wrapped"

    async def main() -> Any:
        return await anyio.to_thread.run_sync(sig.send, None)

    with observe(log, sig):
        assert anyio.run(main, backend=anyio_backend) == [(second, "second")]
        assert sig.send(None, _async_wrapper=wrapper) == [(second, "wrapped")]
    assert wrapped == [second]
    assert [s.calls[0].status for s in log.finished] == ["done", "done"]


def test_the_middleware_sends_in_sync_mode_until_a_receiver_must_be_awaited(
    log: Log, anyio_backend: str
) -> None:
    def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hi")

    app = install(Starlette(routes=[Route("/", home)]))
    with observe(log, request_started), TestClient(app, backend=anyio_backend) as client:
        request_started.connect(first)
        client.get("/")
        request_started.connect(second)
        client.get("/")
        request_started.disconnect(first)
        request_started.disconnect(second)
    assert [s.mode for s in log.finished] == ["sync", "sequential"]


def test_a_background_send_that_times_out_ends_with_the_timeout(
    log: Log, anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    job = NamedSignal("job")

    async def never(sender: Any, **kwargs: Any) -> None:
        await anyio.sleep_forever()

    job.connect(never)

    def home(request: Any) -> PlainTextResponse:
        job.send_background("x", _timeout=0.01)
        return PlainTextResponse("sent")

    app = install(Starlette(routes=[Route("/", home)]))
    with (
        caplog.at_level(logging.CRITICAL, "asignals"),
        observe(log, job),
        TestClient(app, backend=anyio_backend) as client,
    ):
        client.get("/")
    (send,) = log.finished
    assert isinstance(send.error, SendTimeoutError)
    assert [c.status for c in send.calls] == ["cancelled"]


def test_a_background_send_refused_at_its_limit_ends_with_the_refusal(
    log: Log, anyio_backend: str
) -> None:
    job = NamedSignal("job")
    release = threading.Event()

    def blocking(sender: Any, **kwargs: Any) -> None:
        release.wait(5)

    job.connect(blocking, to_thread=True)
    refused: list[Exception] = []

    def home(request: Any) -> PlainTextResponse:
        job.send_background("one")
        try:
            job.send_background("two")
        except BackgroundLimitError as exc:
            refused.append(exc)
        release.set()
        return PlainTextResponse("sent")

    app = install(Starlette(routes=[Route("/", home)]), background_limit=1)
    with observe(log, job), TestClient(app, backend=anyio_backend) as client:
        client.get("/")
    assert len(refused) == 1
    assert sorted((s.sender, type(s.error).__name__) for s in log.finished) == [
        ("one", "NoneType"),
        ("two", "BackgroundLimitError"),
    ]


def test_a_background_send_with_nothing_to_run_ignores_its_keywords_observed_too(
    log: Log, anyio_backend: str
) -> None:
    job = NamedSignal("job")
    job.connect(first, sender="someone else")

    def home(request: Any) -> PlainTextResponse:
        job.send_background("x", _timout=1)
        return PlainTextResponse("sent")

    app = install(Starlette(routes=[Route("/", home)]))
    with observe(log, job), TestClient(app, backend=anyio_backend) as client:
        assert client.get("/").text == "sent"
    (send,) = log.finished
    assert send.mode == "background"
    assert send.calls == []

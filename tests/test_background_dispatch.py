"""Signal.send_background() dispatches as send_async() would: receivers
sequential or concurrent, each failure logged and sent to
got_background_exception, the receivers those connected at the call, and
the options checked at the call, in the caller."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from background_serving import (
    FORMS,
    VAR,
    Log,
    build,
    request_is_unavailable,
    sending,
    serving,
    the_app,
)
from helpers import Boom
from raw_asgi import HTTP_REQUEST, Client, call
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from asignals import (
    ArgumentError,
    InvalidValueError,
    NamedSignal,
    Signal,
    appcontext_popped,
    appcontext_pushed,
    appcontext_tearing_down,
    g,
    got_background_exception,
)


def name_of(fn: Callable[..., Any]) -> str:
    """How asignals names a receiver in messages."""
    return f"{fn.__module__}.{fn.__qualname__}"


def asignals_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "asignals" and r.levelno >= logging.ERROR]


def record_of(caplog: pytest.LogCaptureFixture, error: BaseException) -> logging.LogRecord:
    """The only ERROR record of logger asignals whose exc_info is ``error``."""
    (record,) = [r for r in asignals_errors(caplog) if r.exc_info and r.exc_info[1] is error]
    return record


@contextmanager
def reporting(log: Log, app: Any, kind: str = "sync") -> Iterator[None]:
    """Record got_background_exception sends by ``app``: (sender, kwargs,
    current_app) each."""

    def report(sender: Any, **kwargs: Any) -> None:
        log.add((sender, kwargs, the_app()))

    async def report_async(sender: Any, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()
        report(sender, **kwargs)

    with got_background_exception.connected_to(report if kind == "sync" else report_async, app):
        yield


# Dispatch: as send_async.


def concurrent_signal(how: str) -> tuple[NamedSignal, dict[str, Any]]:
    """A signal sent concurrently the ``how`` way: it and the send's options."""
    if how == "option":
        return NamedSignal("work"), {"_concurrent": True}
    return NamedSignal("work", concurrent=True), {}


@pytest.mark.anyio
async def test_receivers_run_one_after_another_in_connection_order() -> None:
    work = NamedSignal("work")
    log = Log()

    async def first(sender: Any, **kwargs: Any) -> None:
        log.add("first begins")
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        log.add("first ends")

    def second(sender: Any, **kwargs: Any) -> None:
        log.add("second")

    async def third(sender: Any, **kwargs: Any) -> None:
        log.add("third")

    for receiver in (first, second, third):
        work.connect(receiver)
    asgi, _ = sending(lambda: work.send_background("job"))
    async with serving(asgi) as server:
        await server.get()
        await log.wait_for(4)
    assert log == ["first begins", "first ends", "second", "third"]


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["option", "signal"])
async def test_a_concurrent_send_runs_async_receivers_together(how: str) -> None:
    work, options = concurrent_signal(how)
    first_waits, second_waits = anyio.Event(), anyio.Event()
    log = Log()

    # Each waits for the other to have begun: only concurrent dispatch ends.
    async def first(sender: Any, **kwargs: Any) -> None:
        first_waits.set()
        await second_waits.wait()
        log.add("first")

    async def second(sender: Any, **kwargs: Any) -> None:
        second_waits.set()
        await first_waits.wait()
        log.add("second")

    work.connect(first)
    work.connect(second)
    asgi, _ = sending(lambda: work.send_background("job", **options))
    async with serving(asgi) as server:
        await server.get()
        await log.wait_for(2)
    assert sorted(log) == ["first", "second"]


def mixed_receivers(work: Signal, log: Log) -> list[Callable[..., Any]]:
    """Async and sync receivers, alternating, connected to ``work``."""

    async def async_1(sender: Any, **kwargs: Any) -> None:
        log.add("async 1")

    def sync_1(sender: Any, **kwargs: Any) -> None:
        log.add("sync 1")

    async def async_2(sender: Any, **kwargs: Any) -> None:
        log.add("async 2")

    def sync_2(sender: Any, **kwargs: Any) -> None:
        log.add("sync 2")

    receivers: list[Callable[..., Any]] = [async_1, sync_1, async_2, sync_2]
    for receiver in receivers:
        work.connect(receiver)
    return receivers


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["option", "signal"])
async def test_a_concurrent_send_runs_sync_receivers_before_async_ones_begin(how: str) -> None:
    work, options = concurrent_signal(how)
    log = Log()
    receivers = mixed_receivers(work, log)
    asgi, _ = sending(lambda: work.send_background("job", **options))
    async with serving(asgi) as server:
        await server.get()
        await log.wait_for(4)
    assert log[:2] == ["sync 1", "sync 2"]
    assert sorted(log[2:]) == ["async 1", "async 2"]
    assert receivers  # kept alive


@pytest.mark.anyio
async def test_concurrent_false_sends_a_concurrent_signal_in_order() -> None:
    work = NamedSignal("work", concurrent=True)
    log = Log()
    receivers = mixed_receivers(work, log)
    asgi, _ = sending(lambda: work.send_background("job", _concurrent=False))
    async with serving(asgi) as server:
        await server.get()
        await log.wait_for(4)
    assert log == ["async 1", "sync 1", "async 2", "sync 2"]
    assert receivers


@pytest.mark.anyio
@pytest.mark.parametrize("concurrent", [False, True], ids=["sequential", "concurrent"])
async def test_a_timeout_cancels_the_send_and_reports_what_it_cut_short(
    concurrent: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="asignals")
    work = NamedSignal("work")
    log = Log()
    reports = Log()

    def quick(sender: Any, **kwargs: Any) -> None:
        log.add("quick")

    async def stuck(sender: Any, **kwargs: Any) -> None:
        log.add("stuck begins")
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            log.add("stuck cancelled")
            raise

    async def stuck_too(sender: Any, **kwargs: Any) -> None:
        log.add("stuck_too begins")
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            log.add("stuck_too cancelled")
            raise

    for receiver in (quick, stuck, stuck_too):
        work.connect(receiver)
    asgi, app = sending(lambda: work.send_background("job", _timeout=0.05, _concurrent=concurrent))
    with reporting(reports, app):
        async with serving(asgi) as server:
            client = await server.get()
            assert client.body == b"sent"
            await reports.wait_for(1)
    ((sender, kwargs, current),) = reports
    assert (sender, current) == (app, app)
    error = kwargs["exception"]
    assert isinstance(error, TimeoutError)
    message = str(error)
    assert "'work'" in message
    assert name_of(quick) not in message
    assert name_of(stuck) in message
    if concurrent:
        assert log[0] == "quick"
        assert sorted(log[1:]) == [
            "stuck begins",
            "stuck cancelled",
            "stuck_too begins",
            "stuck_too cancelled",
        ]
        assert name_of(stuck_too) in message
        assert "not called" not in message
    else:
        assert log == ["quick", "stuck begins", "stuck cancelled"]
        running, not_called = message.split("not called:")
        assert name_of(stuck) in running
        assert name_of(stuck_too) not in running
        assert name_of(stuck_too) in not_called
    record = record_of(caplog, error)
    assert "'work'" in record.getMessage()
    assert [r.exc_info[1] for r in asignals_errors(caplog) if r.exc_info] == [error]


@pytest.mark.anyio
async def test_a_failure_before_the_timeout_is_reported_and_the_timeout_names_only_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="asignals")
    work = NamedSignal("work")
    boom = Boom()
    reports = Log()

    def fails(sender: Any, **kwargs: Any) -> None:
        raise boom

    async def stuck(sender: Any, **kwargs: Any) -> None:
        await anyio.sleep_forever()

    work.connect(fails)
    work.connect(stuck)
    asgi, app = sending(lambda: work.send_background("job", _timeout=0.05))
    with reporting(reports, app):
        async with serving(asgi) as server:
            await server.get()
            await reports.wait_for(2)
    first, timeout = (kwargs["exception"] for _, kwargs, _ in reports)
    assert first is boom
    assert isinstance(timeout, TimeoutError)
    assert name_of(stuck) in str(timeout)
    assert name_of(fails) not in str(timeout)
    assert [r.exc_info[1] for r in asignals_errors(caplog) if r.exc_info] == [boom, timeout]


@pytest.mark.anyio
async def test_a_send_that_ends_within_its_timeout_reports_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="asignals")
    work = NamedSignal("work")
    log = Log()
    reports = Log()

    async def receiver(sender: Any, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()
        log.add(kwargs)

    work.connect(receiver)
    asgi, app = sending(lambda: work.send_background("job", n=1, _timeout=5))
    with reporting(reports, app):
        async with serving(asgi) as server:
            await server.get()
            await log.wait_for(1)
    assert log == [{"n": 1}]
    assert reports == []
    assert asignals_errors(caplog) == []


# Failures.


@pytest.mark.anyio
@pytest.mark.parametrize("reporter_kind", ["sync", "async"])
@pytest.mark.parametrize("concurrent", [False, True], ids=["sequential", "concurrent"])
async def test_each_failing_receiver_is_logged_and_reported_and_the_others_run(
    concurrent: bool, reporter_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="asignals")
    work = NamedSignal("work")
    first, second = Boom("first"), Boom("second")
    ran = Log()
    reports = Log()

    def fails(sender: Any, **kwargs: Any) -> None:
        ran.add("fails")
        raise first

    async def runs(sender: Any, **kwargs: Any) -> None:
        ran.add("runs")

    async def fails_too(sender: Any, **kwargs: Any) -> None:
        ran.add("fails_too")
        raise second

    def runs_too(sender: Any, **kwargs: Any) -> None:
        ran.add("runs_too")

    ran_at_report: list[int] = []

    def count_ran(sender: Any, **kwargs: Any) -> None:
        ran_at_report.append(len(ran))

    for receiver in (fails, runs, fails_too, runs_too):
        work.connect(receiver)
    asgi, app = sending(lambda: work.send_background("job", _concurrent=concurrent))
    with (
        reporting(reports, app, reporter_kind),
        got_background_exception.connected_to(count_ran, app),
    ):
        async with serving(asgi) as server:
            client = await server.get()
            await ran.wait_for(4)
            await reports.wait_for(2)
            # The app goes on serving.
            assert (await server.get()).body == b"sent"
            await reports.wait_for(4)
    assert client.start["status"] == 200
    if concurrent:
        assert ran[:2] == ["fails", "runs_too"]  # the sync ones, inline
        assert sorted(ran[2:4]) == ["fails_too", "runs"]
    else:
        assert ran[:4] == ["fails", "runs", "fails_too", "runs_too"]
    # Reported once the send's receivers are done.
    assert ran_at_report == [4, 4, 8, 8]
    assert [sender for sender, _, _ in reports] == [app] * 4
    assert [current for _, _, current in reports] == [app] * 4
    assert [list(kwargs) for _, kwargs, _ in reports] == [["exception"]] * 4
    assert {id(kwargs["exception"]) for _, kwargs, _ in reports[:2]} == {id(first), id(second)}
    failing: list[tuple[Callable[..., Any], Exception]] = [(fails, first), (fails_too, second)]
    for receiver, error in failing:
        record = next(r for r in asignals_errors(caplog) if r.exc_info and r.exc_info[1] is error)
        message = record.getMessage()
        assert name_of(receiver) in message
        assert "'work'" in message
        assert "sent in the background, raised" in message
    assert len(asignals_errors(caplog)) == 4


@pytest.mark.anyio
@pytest.mark.parametrize("form", FORMS)
async def test_a_failure_is_reported_with_the_app_as_sender(form: str) -> None:
    work = NamedSignal("work")
    boom = Boom()
    reports = Log()

    def fails(sender: Any, **kwargs: Any) -> None:
        raise boom

    work.connect(fails)

    async def endpoint(request: Request) -> Response:
        work.send_background("job")
        return PlainTextResponse("sent")

    asgi, app = build(form, endpoint)
    with reporting(reports, app):
        async with serving(asgi) as server:
            await server.get()
            await reports.wait_for(1)
    assert reports == [(app, {"exception": boom}, app)]


@pytest.mark.anyio
async def test_a_failure_without_a_got_background_exception_receiver_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="asignals")
    work = NamedSignal("work")
    boom = Boom()
    log = Log()

    def fails(sender: Any, **kwargs: Any) -> None:
        raise boom

    work.connect(fails)
    work.connect(lambda sender, **kwargs: log.add("next"), weak=False)
    asgi, _ = sending(lambda: work.send_background("job"))
    async with serving(asgi) as server:
        await server.get()
        await log.wait_for(1)
    assert name_of(fails) in record_of(caplog, boom).getMessage()
    assert len(asignals_errors(caplog)) == 1


@pytest.mark.anyio
async def test_a_failing_got_background_exception_receiver_is_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="asignals")
    work = NamedSignal("work")
    boom, broken = Boom("receiver"), Boom("reporter")
    reports = Log()

    def fails(sender: Any, **kwargs: Any) -> None:
        raise boom

    def failing_reporter(sender: Any, **kwargs: Any) -> None:
        raise broken

    def reporter(sender: Any, exception: BaseException, **kwargs: Any) -> None:
        reports.add(exception)

    work.connect(fails)
    asgi, app = sending(lambda: work.send_background("job"))
    with (
        got_background_exception.connected_to(failing_reporter, app),
        got_background_exception.connected_to(reporter, app),
    ):
        async with serving(asgi) as server:
            await server.get()
            await reports.wait_for(1)
            assert (await server.get()).body == b"sent"
            await reports.wait_for(2)
    # Not reported again: only logged, once per report, naming it.
    assert reports == [boom, boom]
    records = asignals_errors(caplog)
    assert [r.exc_info[1] for r in records if r.exc_info] == [boom, broken, boom, broken]
    message = records[1].getMessage()
    assert name_of(failing_reporter) in message
    assert "'got-background-exception'" in message


@pytest.mark.anyio
@pytest.mark.parametrize(
    "appcontext_signal",
    [appcontext_pushed, appcontext_tearing_down, appcontext_popped],
    ids=["pushed", "tearing_down", "popped"],
)
async def test_a_failing_appcontext_receiver_of_a_send_is_logged_and_reported(
    appcontext_signal: NamedSignal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="asignals")
    work = NamedSignal("work")
    boom = Boom()
    log = Log()
    reports = Log()

    def fails_in_the_send(sender: Any, **kwargs: Any) -> None:
        if VAR.get() == "sent":  # the send's app context, not the request's
            raise boom

    work.connect(lambda sender, **kwargs: log.add("receiver"), weak=False)

    def send() -> None:
        token = VAR.set("sent")
        work.send_background("job")
        VAR.reset(token)

    asgi, app = sending(send)
    with (
        appcontext_signal.connected_to(fails_in_the_send, app),
        reporting(reports, app),
    ):
        async with serving(asgi) as server:
            client = await server.get()
            await reports.wait_for(1)
    assert client.body == b"sent"
    assert log == ["receiver"]
    assert reports == [(app, {"exception": boom}, app)]
    message = record_of(caplog, boom).getMessage()
    assert name_of(fails_in_the_send) in message
    assert repr(appcontext_signal.name) in message


@pytest.mark.anyio
@pytest.mark.parametrize(
    "appcontext_signal",
    [appcontext_pushed, appcontext_tearing_down, appcontext_popped],
    ids=["pushed", "tearing_down", "popped"],
)
async def test_the_report_of_a_failing_appcontext_receiver_does_not_run_in_the_request(
    appcontext_signal: NamedSignal,
) -> None:
    work = NamedSignal("work")
    boom = Boom()
    reports = Log()

    def fails_in_the_send(sender: Any, **kwargs: Any) -> None:
        if VAR.get() == "sent":
            raise boom

    def report(sender: Any, exception: BaseException, **kwargs: Any) -> None:
        reports.add((exception, request_is_unavailable(), g.get("mark")))

    work.connect(lambda sender, **kwargs: None, weak=False)

    async def endpoint(request: Request) -> Response:
        g.mark = "the request's g"
        token = VAR.set("sent")
        work.send_background("job")
        VAR.reset(token)
        await reports.wait_for(1)  # the request is still going on
        return PlainTextResponse("sent")

    asgi, app = build("install", endpoint)
    with (
        appcontext_signal.connected_to(fails_in_the_send, app),
        got_background_exception.connected_to(report, app),
    ):
        async with serving(asgi) as server:
            client = await server.get()
    assert client.body == b"sent"
    # Like the reports of the send's other failures: not in the request's
    # context, which the send's receivers never see.
    assert reports == [(boom, True, None)]


@pytest.mark.anyio
async def test_the_timeout_does_not_cut_the_reports_short() -> None:
    work = NamedSignal("work")
    boom = Boom()
    reports = Log()

    def fails(sender: Any, **kwargs: Any) -> None:
        raise boom

    async def stuck(sender: Any, **kwargs: Any) -> None:
        await anyio.sleep_forever()

    async def slow_reporter(sender: Any, exception: BaseException, **kwargs: Any) -> None:
        await anyio.sleep(0.2)  # longer than the send's timeout
        reports.add(exception)

    work.connect(fails)
    work.connect(stuck)
    asgi, app = sending(lambda: work.send_background("job", _timeout=0.05))
    with got_background_exception.connected_to(slow_reporter, app):
        async with serving(asgi) as server:
            await server.get()
            await reports.wait_for(2)
    assert reports[0] is boom
    assert isinstance(reports[1], TimeoutError)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_on_asyncio_a_receivers_own_cancelled_error_is_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="asignals")
    work = NamedSignal("work")
    log = Log()
    reports = Log()

    async def cancelled_elsewhere(sender: Any, **kwargs: Any) -> None:
        future = asyncio.get_running_loop().create_future()
        future.cancel()  # as another task might
        await future

    work.connect(cancelled_elsewhere)
    work.connect(lambda sender, **kwargs: log.add("next"), weak=False)
    asgi, app = sending(lambda: work.send_background("job"))
    with reporting(reports, app):
        async with serving(asgi) as server:
            await server.get()
            await reports.wait_for(1)
    assert log == ["next"]
    ((_, kwargs, _),) = reports
    error = kwargs["exception"]
    assert isinstance(error, RuntimeError)
    assert isinstance(error.__cause__, asyncio.CancelledError)
    assert name_of(cancelled_elsewhere) in str(error)
    assert name_of(cancelled_elsewhere) in record_of(caplog, error).getMessage()


# The receivers are those connected at the call.


@pytest.mark.anyio
async def test_a_receiver_connected_after_the_call_is_not_called() -> None:
    work = NamedSignal("work")
    log = Log()

    def early(sender: Any, **kwargs: Any) -> None:
        log.add(("early", kwargs["n"]))

    def late(sender: Any, **kwargs: Any) -> None:
        log.add(("late", kwargs["n"]))

    work.connect(early)

    async def endpoint(request: Request) -> Response:
        work.send_background("job", n=int(request.query_params["n"]))
        work.connect(late)
        return PlainTextResponse("sent")

    asgi, _ = build("install", endpoint)
    async with serving(asgi) as server:
        await server.get(b"n=1")
        await log.wait_for(1)
        await server.get(b"n=2")  # late is connected now
        await log.wait_for(3)
    assert log == [("early", 1), ("early", 2), ("late", 2)]


def make_receiver(log: Log) -> Callable[..., None]:
    def later(sender: Any, **kwargs: Any) -> None:
        log.add("later")

    return later


@pytest.mark.anyio
@pytest.mark.parametrize("way", ["disconnected", "garbage collected"])
@pytest.mark.parametrize("concurrent", [False, True], ids=["sequential", "concurrent"])
async def test_a_receiver_gone_before_its_turn_is_not_called(concurrent: bool, way: str) -> None:
    work = NamedSignal("work")
    log = Log()
    held = [make_receiver(log)]

    def first(sender: Any, **kwargs: Any) -> None:
        if way == "disconnected":
            work.disconnect(held[0])
        else:
            held.clear()  # its only strong reference
        log.add("first")

    async def last(sender: Any, **kwargs: Any) -> None:
        log.add("last")

    work.connect(first)
    work.connect(held[0])  # weakly
    work.connect(last)
    asgi, _ = sending(lambda: work.send_background("job", _concurrent=concurrent))
    async with serving(asgi) as server:
        await server.get()
        await log.wait_for(2)
    assert log == ["first", "last"]


@pytest.mark.anyio
@pytest.mark.parametrize("case", ["no receiver", "another sender", "muted"])
async def test_without_receivers_for_the_send_nothing_runs_and_nothing_is_checked(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="asignals")
    work = NamedSignal("work")
    log = Log()

    def receiver(sender: Any, **kwargs: Any) -> None:
        log.add(sender)

    if case == "another sender":
        work.connect(receiver, sender="someone else")
    elif case == "muted":
        work.connect(receiver)

    def send() -> None:
        with work.muted() if case == "muted" else nullcontext():
            work.send_background("job", _bogus=1, _timeout=0, sender="x")
        # What is connected for the sender runs, proving the receiver works.
        work.send_background("someone else")

    asgi, _ = sending(send)
    async with serving(asgi) as server:
        client = await server.get()
        if case != "no receiver":
            await log.wait_for(1)
    assert client.body == b"sent"
    assert log == ([] if case == "no receiver" else ["someone else"])
    assert asignals_errors(caplog) == []


# Options are checked at the call, in the caller.

BAD_OPTIONS = [
    pytest.param(
        {"_timout": 1},
        ArgumentError,
        r"did you mean _timeout\?",
        id="near-miss",
    ),
    pytest.param(
        {"_sync_wrapper": None},
        ArgumentError,
        r"_sync_wrapper is an option of send_async\(\), not of send_background\(\)",
        id="send_async-option",
    ),
    pytest.param({"_async_wrapper": None}, ArgumentError, "_async_wrapper is", id="send-option"),
    pytest.param({"sender": "x"}, ArgumentError, r"not as sender=\.\.\.", id="sender"),
    pytest.param({"_timeout": 0}, InvalidValueError, "_timeout must be a positive", id="timeout-0"),
    pytest.param(
        {"_timeout": -1}, InvalidValueError, "_timeout must be a positive", id="timeout-neg"
    ),
    pytest.param(
        {"_timeout": "x"}, InvalidValueError, "_timeout must be a positive", id="timeout-str"
    ),
    pytest.param(
        {"_timeout": True}, InvalidValueError, "_timeout must be a positive", id="timeout-bool"
    ),
    pytest.param(
        {"_concurrent": "yes"}, ArgumentError, "_concurrent takes True, False", id="concurrent"
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("options", "error", "match"), BAD_OPTIONS)
async def test_a_bad_option_raises_at_the_call_and_nothing_runs(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    work = NamedSignal("work")
    log = Log()
    caught: list[Exception] = []
    work.connect(lambda sender, **kwargs: log.add(kwargs), weak=False)

    def send() -> None:
        try:
            work.send_background("job", n=1, **options)
        except Exception as exc:
            caught.append(exc)
        work.send_background("job", n=2)

    asgi, _ = sending(send)
    async with serving(asgi) as server:
        client = await server.get()
        await log.wait_for(1)
    assert client.body == b"sent"
    (exc,) = caught
    assert type(exc) is error
    # Still the builtin callers caught before the asignals classes.
    assert isinstance(exc, TypeError if error is ArgumentError else ValueError)
    assert re.search(match, str(exc))
    assert log == [{"n": 2}]


@pytest.mark.anyio
async def test_a_misspelt_option_suggests_the_option_of_send_background() -> None:
    work = NamedSignal("work")
    work.connect(lambda sender, **kwargs: None, weak=False)
    caught: list[Exception] = []

    def send() -> None:
        try:
            work.send_background("job", _concurent=True)
        except TypeError as exc:
            caught.append(exc)

    asgi, _ = sending(send)
    async with serving(asgi) as server:
        await server.get()
    (exc,) = caught
    assert "did you mean _concurrent?" in str(exc)
    # _concurrent is an option of send_background() itself.
    assert "option of send_async" not in str(exc)


@pytest.mark.anyio
@pytest.mark.parametrize("endpoint_kind", ["async", "sync"])
async def test_a_bad_option_fails_the_request(endpoint_kind: str) -> None:
    work = NamedSignal("work")
    log = Log()
    work.connect(lambda sender, **kwargs: log.add(kwargs), weak=False)

    async def async_endpoint(request: Request) -> Response:
        work.send_background("job", _timout=1)
        return PlainTextResponse("sent")

    def sync_endpoint(request: Request) -> Response:
        work.send_background("job", _timout=1)
        return PlainTextResponse("sent")

    asgi, _ = build("install", async_endpoint if endpoint_kind == "async" else sync_endpoint)
    async with serving(asgi) as server:
        client = Client(HTTP_REQUEST)
        with pytest.raises(TypeError, match="did you mean _timeout"), anyio.fail_after(5):
            await call(asgi, server.scope(), client)
        assert client.start["status"] == 500
    assert log == []

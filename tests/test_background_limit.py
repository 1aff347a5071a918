"""The ``background_limit`` bound on running background sends, and the
validation of install()'s background settings."""

from __future__ import annotations

import math
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from helpers import Boom
from lifespan_driving import make_app, name, recorder, sending, serving
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import asignals
from asignals import BackgroundLimitError, NamedSignal, SignalMiddleware, install

# -- the bound -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_past_the_limit_send_background_raises_and_sends_nothing(
    report_ready: NamedSignal,
) -> None:
    releases: dict[str, anyio.Event] = {}
    log: list[str] = []
    errors: list[Exception] = []

    async def blocked(sender: Any, **kwargs: Any) -> None:
        log.append(f"{sender} started")
        await releases.setdefault(sender, anyio.Event()).wait()
        log.append(f"{sender} done")

    def second(sender: Any, **kwargs: Any) -> None:
        log.append(f"{sender} second receiver")

    report_ready.connect(blocked)
    report_ready.connect(second)
    app = make_app(sending(report_ready, errors), background_limit=2)

    with anyio.fail_after(5):
        async with serving(app, []) as server:
            assert (await server.get(app, query=b"1")).body == b"sent"
            assert (await server.get(app, query=b"2")).body == b"sent"
            assert (await server.get(app, query=b"3")).body == b"BackgroundLimitError"
            await anyio.wait_all_tasks_blocked()
            assert sorted(log) == ["1 started", "2 started"]

            releases["1"].set()
            await anyio.wait_all_tasks_blocked()
            assert (await server.get(app, query=b"4")).body == b"sent"
            assert (await server.get(app, query=b"5")).body == b"BackgroundLimitError"

            releases["2"].set()
            releases.setdefault("4", anyio.Event()).set()
            await server.shutdown()

    assert not any(entry.startswith(("3 ", "5 ")) for entry in log)
    assert sorted(log) == sorted(
        f"{n} {what}" for n in "124" for what in ("started", "done", "second receiver")
    )
    first_error, second_error = errors
    assert isinstance(first_error, BackgroundLimitError)
    assert isinstance(first_error, RuntimeError)
    message = str(first_error)
    assert "signal 'report-ready'" in message
    assert "background_limit=2" in message
    assert "Nothing was sent" in message
    assert "send_async" in message
    assert "raise the limit" in message
    assert isinstance(second_error, BackgroundLimitError)


@pytest.mark.anyio
async def test_sequential_sends_from_one_endpoint_stop_at_the_limit(
    report_ready: NamedSignal,
) -> None:
    release = anyio.Event()
    ran: list[int] = []
    outcomes: list[str] = []

    async def blocked(sender: int, **kwargs: Any) -> None:
        await release.wait()
        ran.append(sender)

    async def endpoint(request: Request) -> Response:
        for n in range(5):
            try:
                report_ready.send_background(n)
            except BackgroundLimitError:
                outcomes.append(f"{n} refused")
            else:
                outcomes.append(f"{n} sent")
            await anyio.lowlevel.checkpoint()  # the accepted ones start running
        return PlainTextResponse("done")

    report_ready.connect(blocked)
    app = SignalMiddleware(Starlette(routes=[Route("/", endpoint)]), background_limit=3)

    with anyio.fail_after(5):
        async with serving(app, []) as server:
            await server.get(app)
            release.set()
            await server.shutdown()

    assert outcomes == ["0 sent", "1 sent", "2 sent", "3 refused", "4 refused"]
    assert sorted(ran) == [0, 1, 2]


@pytest.mark.anyio
async def test_a_sync_endpoint_past_the_limit_gets_the_error(report_ready: NamedSignal) -> None:
    release = anyio.Event()
    ran: list[str] = []
    outcomes: list[str] = []

    async def blocked(sender: str, **kwargs: Any) -> None:
        await release.wait()
        ran.append(sender)

    def endpoint(request: Request) -> Response:  # run in a worker thread
        for sender in ("first", "second"):
            try:
                report_ready.send_background(sender)
            except BackgroundLimitError as exc:
                outcomes.append(f"{sender} refused: {exc}")
            else:
                outcomes.append(f"{sender} sent")
        return PlainTextResponse("done")

    report_ready.connect(blocked)
    app = make_app(Route("/", endpoint), background_limit=1)

    with anyio.fail_after(5):
        async with serving(app, []) as server:
            assert (await server.get(app)).body == b"done"
            release.set()
            await server.shutdown()

    first, second = outcomes
    assert first == "first sent"
    assert second.startswith("second refused: ")
    assert "background_limit=1" in second
    assert ran == ["first"]


@pytest.mark.anyio
async def test_failed_and_timed_out_sends_free_their_slot(
    report_ready: NamedSignal, caplog: pytest.LogCaptureFixture
) -> None:
    timed_out = anyio.Event()
    outcomes: list[str] = []

    async def receiver(sender: str, **kwargs: Any) -> None:
        if sender == "fail":
            raise Boom("failed")
        if sender == "slow":
            try:
                await anyio.sleep_forever()
            finally:
                timed_out.set()

    async def endpoint(request: Request) -> Response:
        sender = request.url.query
        try:
            report_ready.send_background(sender, _timeout=0.01 if sender == "slow" else None)
        except BackgroundLimitError:
            outcomes.append(f"{sender} refused")
        else:
            outcomes.append(f"{sender} sent")
        return PlainTextResponse("done")

    report_ready.connect(receiver)
    app = make_app(Route("/", endpoint), background_limit=1)

    with anyio.fail_after(5):
        async with serving(app, []) as server:
            await server.get(app, query=b"fail")
            await anyio.wait_all_tasks_blocked()
            await server.get(app, query=b"slow")
            await server.get(app, query=b"refused")
            await timed_out.wait()
            await anyio.wait_all_tasks_blocked()
            await server.get(app, query=b"ok")
            await server.shutdown()

    assert outcomes == ["fail sent", "slow sent", "refused refused", "ok sent"]
    failed, timeout = [r.exc_info[1] for r in caplog.records if r.exc_info is not None]
    assert isinstance(failed, Boom)
    assert isinstance(timeout, TimeoutError)


@pytest.mark.anyio
async def test_a_background_receiver_past_the_limit_has_its_error_reported(
    report_ready: NamedSignal, caplog: pytest.LogCaptureFixture
) -> None:
    followed_up = asignals.Namespace().signal("followed-up")
    followed = recorder(followed_up)
    reported: list[BaseException] = []

    def chain(sender: Any, **kwargs: Any) -> None:
        followed_up.send_background("chained")

    def on_exception(sender: Any, exception: BaseException, **kwargs: Any) -> None:
        reported.append(exception)

    report_ready.connect(chain)
    app = make_app(sending(report_ready), background_limit=1)

    with (
        anyio.fail_after(5),
        asignals.got_background_exception.connected_to(on_exception),
    ):
        async with serving(app, []) as server:
            await server.get(app)
            await anyio.wait_all_tasks_blocked()
            await server.shutdown()

    assert followed == []
    (error,) = reported
    assert isinstance(error, BackgroundLimitError)
    assert "signal 'followed-up'" in str(error)
    (record,) = [r for r in caplog.records if r.name == "asignals"]
    assert name(chain) in record.getMessage()
    assert record.exc_info is not None
    assert record.exc_info[1] is error


# -- settings --------------------------------------------------------------------------------

BAD_SETTINGS = [
    pytest.param({"background_limit": 0}, "background_limit", id="limit-0"),
    pytest.param({"background_limit": -1}, "background_limit", id="limit-negative"),
    pytest.param({"background_limit": 1.5}, "background_limit", id="limit-float"),
    pytest.param({"background_limit": True}, "background_limit", id="limit-bool"),
    pytest.param({"background_limit": "3"}, "background_limit", id="limit-str"),
    pytest.param({"background_grace": -1}, "background_grace", id="grace-negative"),
    pytest.param({"background_grace": math.nan}, "background_grace", id="grace-nan"),
    pytest.param({"background_grace": True}, "background_grace", id="grace-bool"),
    pytest.param({"background_grace": "1"}, "background_grace", id="grace-str"),
]


@pytest.mark.parametrize(("settings", "named"), BAD_SETTINGS)
def test_the_middleware_rejects_bad_background_settings(
    settings: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        SignalMiddleware(Starlette(), **settings)


@pytest.mark.parametrize(("settings", "named"), BAD_SETTINGS)
def test_install_rejects_bad_background_settings_and_leaves_the_app_alone(
    settings: dict[str, Any], named: str
) -> None:
    app = Starlette()
    build = app.build_middleware_stack
    with pytest.raises(ValueError, match=named):
        install(app, **settings)

    assert app.build_middleware_stack == build
    assert install(app) is app  # installs with the defaults


def test_background_settings_are_accepted_and_read_back() -> None:
    default = SignalMiddleware(Starlette())
    assert (default.background_limit, default.background_grace) == (1000, 10.0)

    endless = SignalMiddleware(Starlette(), background_limit=1, background_grace=math.inf)
    assert (endless.background_limit, endless.background_grace) == (1, math.inf)

    none = SignalMiddleware(Starlette(), background_limit=50, background_grace=0)
    assert (none.background_limit, none.background_grace) == (50, 0)

    app = install(Starlette(), background_limit=7, background_grace=0.5)
    stack = app.build_middleware_stack()
    assert isinstance(stack, SignalMiddleware)
    assert (stack.background_limit, stack.background_grace) == (7, 0.5)


def test_install_twice_with_the_same_background_settings_does_nothing() -> None:
    app = install(Starlette(), background_limit=7, background_grace=math.inf)
    build = app.build_middleware_stack

    assert install(app, background_limit=7, background_grace=math.inf) is app
    assert app.build_middleware_stack is build


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"background_limit": 8}, id="limit"),
        pytest.param({"background_grace": 1.0}, id="grace"),
        pytest.param({}, id="defaults"),
    ],
)
def test_install_again_with_other_background_settings_raises(settings: dict[str, Any]) -> None:
    app = install(Starlette(), background_limit=7, background_grace=0.5)
    build = app.build_middleware_stack

    with pytest.raises(ValueError, match="already installed"):
        install(app, **settings)
    assert app.build_middleware_stack is build


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"background_limit": True}, id="limit-bool"),
        pytest.param({"background_limit": 1.0}, id="limit-float"),
        pytest.param({"background_grace": True}, id="grace-bool"),
    ],
)
def test_install_again_validates_settings_equal_to_the_installed_ones(
    settings: dict[str, Any],
) -> None:
    # True == 1 == 1.0: invalid values that compare equal to the installed ones.
    app = install(Starlette(), background_limit=1, background_grace=1)

    with pytest.raises(ValueError, match="background_"):
        install(app, **{"background_limit": 1, "background_grace": 1, **settings})

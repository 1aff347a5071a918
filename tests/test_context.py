"""The contexts behind current_app, g and request, and the proxies over them."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
from context_apps import App, bound, connected
from helpers import Boom, per_signal
from starlette.applications import Starlette
from starlette.requests import HTTPConnection

import asignals
from asignals import (
    AppContext,
    AppGlobals,
    Signal,
    app_context,
    appcontext_popped,
    appcontext_pushed,
    appcontext_tearing_down,
    current_app,
    g,
    request,
)
from asignals.testing import record_signals

APPCONTEXT_SIGNALS = (appcontext_pushed, appcontext_tearing_down, appcontext_popped)
PROXY_NAMES = ["current_app", "g", "request"]
HOW = ["async with", "with"]

Sent = tuple[str, Any, dict[str, Any]]


class Abort(BaseException):
    """Neither an Exception nor a cancellation, like KeyboardInterrupt."""


@pytest.fixture
def sent() -> Iterator[list[Sent]]:
    """Each appcontext signal sent during the test, as (name, sender, kwargs)."""
    records: list[Sent] = []

    def recorder(name: str) -> Callable[..., None]:
        def receive(sender: Any, **kwargs: Any) -> None:
            records.append((name, sender, kwargs))

        return receive

    with connected(*((signal, recorder(signal.name)) for signal in APPCONTEXT_SIGNALS)):
        yield records


def names(records: list[Sent]) -> list[str]:
    return [name for name, _, _ in records]


async def run_in_context(how: str, app: Any, body: Callable[[], object]) -> None:
    """Run ``body`` in ``app_context(app)`` entered with ``async with`` or ``with``."""
    if how == "async with":
        async with app_context(app):
            body()
    else:
        with app_context(app):
            body()


def fail(error: BaseException) -> Callable[..., None]:
    def receiver(sender: Any, **kwargs: Any) -> None:
        raise error

    return receiver


def note(calls: list[str], name: str) -> Callable[..., None]:
    def receiver(sender: Any, **kwargs: Any) -> None:
        calls.append(name)

    return receiver


# Outside any context


@pytest.mark.parametrize("name", ["current_app", "g"])
def test_app_proxy_outside_a_context_raises_saying_how_to_push_one(name: str) -> None:
    proxy = getattr(asignals, name)

    with pytest.raises(RuntimeError, match="Working outside of an application context") as info:
        _ = proxy.anything

    message = str(info.value)
    assert f"asignals.{name}" in message
    assert "asignals.install(app)" in message
    assert "asignals.app_context(app)" in message


def test_request_outside_a_request_raises_saying_how_to_get_one() -> None:
    with pytest.raises(RuntimeError, match="Working outside of a request") as info:
        _ = request.url

    assert "asignals.install(app)" in str(info.value)


def test_request_in_an_app_context_without_a_request_raises() -> None:
    with app_context(App("a")), pytest.raises(RuntimeError, match="outside of a request"):
        _ = request.method


@pytest.mark.parametrize("name", PROXY_NAMES)
def test_unbound_proxy_is_false(name: str) -> None:
    assert bool(getattr(asignals, name)) is False


@pytest.mark.parametrize("name", PROXY_NAMES)
def test_unbound_proxy_repr_and_str_name_it_without_raising(name: str) -> None:
    proxy = getattr(asignals, name)

    assert repr(proxy) == f"<asignals.{name} (unbound)>"
    assert str(proxy) == f"<asignals.{name} (unbound)>"


@pytest.mark.parametrize("name", PROXY_NAMES)
def test_unbound_proxy_is_safe_to_introspect(name: str) -> None:
    proxy = getattr(asignals, name)

    assert not hasattr(proxy, "__wrapped__")
    assert inspect.unwrap(proxy) is proxy
    assert not inspect.isclass(proxy)
    assert dir(proxy) == []


@pytest.mark.parametrize("name", PROXY_NAMES)
def test_unbound_proxy_get_current_object_raises(name: str) -> None:
    with pytest.raises(RuntimeError, match="Working outside of"):
        getattr(asignals, name)._get_current_object()


@pytest.mark.parametrize("name", PROXY_NAMES)
def test_unbound_proxy_refuses_attribute_assignment(name: str) -> None:
    proxy = getattr(asignals, name)

    with pytest.raises(RuntimeError, match="Working outside of"):
        proxy.anything = 1


def test_unbound_proxies_are_not_instances_of_what_they_stand_for() -> None:
    assert not isinstance(g, AppGlobals)
    assert not isinstance(request, HTTPConnection)


# app_context(app): entering and leaving


@pytest.mark.anyio
async def test_async_app_context_binds_current_app_to_the_app() -> None:
    app = App("a")

    async with app_context(app):
        assert current_app.name == "a"
        assert current_app._get_current_object() is app
        assert isinstance(current_app, App)


def test_sync_app_context_binds_current_app_to_the_app() -> None:
    app = App("a")

    with app_context(app):
        assert current_app.name == "a"
        assert current_app._get_current_object() is app
        assert isinstance(current_app, App)


@pytest.mark.anyio
async def test_app_context_binds_a_starlette_app() -> None:
    app = Starlette()

    async with app_context(app):
        assert current_app._get_current_object() is app
        assert isinstance(current_app, Starlette)


@pytest.mark.anyio
@pytest.mark.parametrize("how", HOW)
async def test_entering_app_context_gives_the_context_holding_app_and_g(how: str) -> None:
    app = App("a")
    ctx = app_context(app)

    if how == "async with":
        async with ctx as entered:
            current_g = g._get_current_object()
    else:
        with ctx as entered:
            current_g = g._get_current_object()

    assert entered is ctx
    assert isinstance(ctx, AppContext)
    assert ctx.app is app
    assert ctx.g is current_g
    assert repr(ctx) == "<AppContext of <App a>>"


@pytest.mark.anyio
@pytest.mark.parametrize("how", HOW)
async def test_app_context_is_popped_after_exit(how: str) -> None:
    await run_in_context(how, App("a"), lambda: None)

    assert bound(current_app) is None
    assert bound(g) is None


@pytest.mark.anyio
@pytest.mark.parametrize("how", HOW)
async def test_body_exception_propagates_unchanged_and_context_is_popped(how: str) -> None:
    error = Boom("body")

    def body() -> None:
        raise error

    with pytest.raises(Boom) as info:
        await run_in_context(how, App("a"), body)

    assert info.value is error
    assert bound(current_app) is None


@pytest.mark.anyio
@pytest.mark.parametrize("how", HOW)
async def test_g_is_fresh_for_each_context(how: str) -> None:
    app = App("a")
    globals_seen: list[AppGlobals] = []

    def body() -> None:
        assert "user" not in g
        g.user = "ada"
        globals_seen.append(g._get_current_object())

    await run_in_context(how, app, body)
    await run_in_context(how, app, body)

    first, second = globals_seen
    assert first is not second
    assert isinstance(first, AppGlobals)


@pytest.mark.anyio
async def test_g_is_shared_within_a_context() -> None:
    def remember() -> None:
        g.user = "ada"

    async with app_context(App("a")):
        first = g._get_current_object()
        remember()
        assert g.user == "ada"
        assert g._get_current_object() is first


@pytest.mark.anyio
async def test_nested_async_context_restores_the_outer_one() -> None:
    outer, inner = App("outer"), App("inner")

    async with app_context(outer):
        g.level = "outer"
        outer_g = g._get_current_object()
        async with app_context(inner):
            assert current_app._get_current_object() is inner
            assert "level" not in g
            g.level = "inner"
        assert current_app._get_current_object() is outer
        assert g._get_current_object() is outer_g
        assert g.level == "outer"
    assert bound(current_app) is None


def test_nested_sync_context_restores_the_outer_one() -> None:
    outer, inner = App("outer"), App("inner")

    with app_context(outer):
        outer_g = g._get_current_object()
        with app_context(inner):
            assert current_app._get_current_object() is inner
            assert g._get_current_object() is not outer_g
        assert current_app._get_current_object() is outer
        assert g._get_current_object() is outer_g
    assert bound(current_app) is None


@pytest.mark.anyio
async def test_nested_context_is_popped_when_its_body_raises() -> None:
    outer = App("outer")

    async with app_context(outer):
        with pytest.raises(Boom):
            async with app_context(App("inner")):
                raise Boom
        assert current_app._get_current_object() is outer


@pytest.mark.anyio
async def test_entering_the_same_context_twice_raises() -> None:
    ctx = app_context(App("a"))

    async with ctx:
        with pytest.raises(RuntimeError, match="already pushed") as info:
            async with ctx:
                pass  # pragma: no cover
        assert "app_context(app)" in str(info.value)
        assert current_app._get_current_object() is ctx.app
    assert bound(current_app) is None


def test_entering_the_same_context_twice_with_with_raises() -> None:
    ctx = app_context(App("a"))

    with ctx:
        with pytest.raises(RuntimeError, match="already pushed"), ctx:
            pass  # pragma: no cover
        assert current_app._get_current_object() is ctx.app


def test_entering_the_same_context_twice_sends_appcontext_pushed_once(sent: list[Sent]) -> None:
    ctx = app_context(App("a"))

    with ctx, pytest.raises(RuntimeError, match="already pushed"), ctx:
        pass  # pragma: no cover

    assert names(sent) == ["appcontext-pushed", "appcontext-tearing-down", "appcontext-popped"]


def test_push_and_pop_bind_the_context_without_signals(sent: list[Sent]) -> None:
    app = App("a")
    ctx = app_context(app)

    ctx.push()
    try:
        assert current_app._get_current_object() is app
    finally:
        ctx.pop()

    assert bound(current_app) is None
    assert sent == []


def test_pop_without_push_raises() -> None:
    with pytest.raises(RuntimeError, match="not pushed"):
        app_context(App("a")).pop()


# app_context(app): the appcontext signals


@pytest.mark.anyio
@pytest.mark.parametrize("how", HOW)
async def test_app_context_sends_each_appcontext_signal_once_with_the_app(
    how: str, sent: list[Sent]
) -> None:
    app = App("a")

    await run_in_context(how, app, lambda: None)

    assert sent == [
        ("appcontext-pushed", app, {}),
        ("appcontext-tearing-down", app, {"exc": None}),
        ("appcontext-popped", app, {}),
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("how", HOW)
async def test_appcontext_tearing_down_gets_the_body_exception(how: str, sent: list[Sent]) -> None:
    app = App("a")
    error = Boom("body")

    def body() -> None:
        raise error

    with pytest.raises(Boom):
        await run_in_context(how, app, body)

    assert sent == [
        ("appcontext-pushed", app, {}),
        ("appcontext-tearing-down", app, {"exc": error}),
        ("appcontext-popped", app, {}),
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("how", HOW)
async def test_appcontext_receivers_see_the_contexts_flask_gives_them(how: str) -> None:
    app = App("a")
    seen: dict[str, tuple[Any, Any, Any]] = {}

    def look(name: str) -> Callable[..., None]:
        def receiver(sender: Any, **kwargs: Any) -> None:
            seen[name] = (bound(current_app), bound(g), bound(request))

        return receiver

    body_g: list[AppGlobals] = []
    with connected(*((signal, look(signal.name)) for signal in APPCONTEXT_SIGNALS)):
        await run_in_context(how, app, lambda: body_g.append(g._get_current_object()))

    assert seen == {
        "appcontext-pushed": (app, body_g[0], None),
        "appcontext-tearing-down": (app, body_g[0], None),
        "appcontext-popped": (None, None, None),
    }


@pytest.mark.anyio
async def test_g_set_by_an_appcontext_pushed_receiver_is_seen_in_the_body() -> None:
    def set_user(sender: Any) -> None:
        g.user = "ada"

    with connected((appcontext_pushed, set_user)):
        async with app_context(App("a")):
            assert g.user == "ada"


@pytest.mark.anyio
async def test_async_receivers_run_with_async_with() -> None:
    app = App("a")
    calls: list[tuple[str, Any, Any]] = []

    async def on_pushed(sender: Any) -> None:
        await anyio.lowlevel.checkpoint()
        calls.append(("pushed", sender, bound(current_app)))

    async def on_tearing_down(sender: Any, exc: BaseException | None) -> None:
        await anyio.lowlevel.checkpoint()
        calls.append(("tearing-down", sender, exc))

    async def on_popped(sender: Any) -> None:
        await anyio.lowlevel.checkpoint()
        calls.append(("popped", sender, bound(current_app)))

    with connected(
        (appcontext_pushed, on_pushed),
        (appcontext_tearing_down, on_tearing_down),
        (appcontext_popped, on_popped),
    ):
        async with app_context(app):
            calls.append(("body", app, None))

    assert calls == [
        ("pushed", app, app),
        ("body", app, None),
        ("tearing-down", app, None),
        ("popped", app, None),
    ]


# An async receiver can only run under a plain `with` in an anyio worker
# thread; elsewhere `with` fails as Signal.send does, naming the receiver, and
# leaves no context behind.


async def async_receiver(sender: Any, **kwargs: Any) -> None:
    await anyio.lowlevel.checkpoint()  # pragma: no cover


def test_sync_with_and_an_async_pushed_receiver_raises_the_core_error() -> None:
    with (
        connected((appcontext_pushed, async_receiver)),
        pytest.raises(RuntimeError, match="has async receivers") as info,
        app_context(App("a")),
    ):
        pytest.fail("the body must not run")  # pragma: no cover

    assert "async_receiver" in str(info.value)
    assert bound(current_app) is None


def test_sync_with_and_an_async_pushed_receiver_still_tears_down(sent: list[Sent]) -> None:
    app = App("a")

    with (
        connected((appcontext_pushed, async_receiver)),
        pytest.raises(RuntimeError, match="has async receivers") as info,
        app_context(app),
    ):
        pass  # pragma: no cover

    # send() refuses the whole send, so no appcontext_pushed receiver ran.
    assert sent == [
        ("appcontext-tearing-down", app, {"exc": info.value}),
        ("appcontext-popped", app, {}),
    ]


def test_sync_with_and_an_async_teardown_receiver_raises_after_the_others_ran(
    sent: list[Sent],
) -> None:
    app = App("a")
    ran: list[str] = []

    with (
        connected((appcontext_tearing_down, async_receiver)),
        pytest.raises(RuntimeError, match="has async receivers") as info,
        app_context(app),
    ):
        ran.append("body")

    assert ran == ["body"]
    assert "async_receiver" in str(info.value)
    assert names(sent) == ["appcontext-pushed", "appcontext-tearing-down", "appcontext-popped"]
    assert bound(current_app) is None


@pytest.mark.anyio
async def test_sync_with_runs_async_receivers_in_an_anyio_worker_thread() -> None:
    app = App("a")
    calls: list[tuple[str, Any]] = []

    async def on_pushed(sender: Any) -> None:
        calls.append(("pushed", bound(current_app)))

    async def on_tearing_down(sender: Any, exc: BaseException | None) -> None:
        calls.append(("tearing-down", exc))

    def job() -> None:
        with app_context(app):
            calls.append(("body", current_app._get_current_object()))

    with connected((appcontext_pushed, on_pushed), (appcontext_tearing_down, on_tearing_down)):
        await anyio.to_thread.run_sync(job)

    assert calls == [("pushed", app), ("body", app), ("tearing-down", None)]


# Cancellation


@pytest.mark.anyio
async def test_cancelled_body_tears_down_with_the_cancellation(sent: list[Sent]) -> None:
    with anyio.CancelScope() as scope:
        async with app_context(App("a")):
            scope.cancel()
            await anyio.sleep_forever()

    assert scope.cancelled_caught
    assert names(sent) == ["appcontext-pushed", "appcontext-tearing-down", "appcontext-popped"]
    assert isinstance(sent[1][2]["exc"], anyio.get_cancelled_exc_class())
    assert bound(current_app) is None


@pytest.mark.anyio
async def test_teardown_receivers_that_await_run_to_the_end_when_cancelled() -> None:
    calls: list[str] = []

    async def on_tearing_down(sender: Any, exc: BaseException | None) -> None:
        await anyio.lowlevel.checkpoint()
        calls.append("tearing-down")

    async def on_popped(sender: Any) -> None:
        await anyio.lowlevel.checkpoint()
        calls.append("popped")

    with (
        connected((appcontext_tearing_down, on_tearing_down), (appcontext_popped, on_popped)),
        anyio.CancelScope() as scope,
    ):
        async with app_context(App("a")):
            scope.cancel()
            await anyio.sleep_forever()

    assert calls == ["tearing-down", "popped"]


@pytest.mark.anyio
async def test_teardown_errors_are_logged_when_a_cancellation_propagates(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []
    error = Boom("teardown")

    with (
        connected(
            (appcontext_tearing_down, fail(error)),
            (appcontext_popped, note(calls, "popped")),
        ),
        caplog.at_level(logging.ERROR, logger="asignals"),
        anyio.CancelScope() as scope,
    ):
        async with app_context(App("a")):
            scope.cancel()
            await anyio.sleep_forever()

    assert scope.cancelled_caught
    assert calls == ["popped"]
    assert [record.exc_info[1] for record in caplog.records if record.exc_info] == [error]
    assert "fail.<locals>.receiver" in caplog.records[0].getMessage()


# Teardown receivers that raise


@pytest.mark.anyio
@pytest.mark.parametrize("how", HOW)
async def test_every_teardown_receiver_runs_when_some_raise(how: str) -> None:
    calls: list[str] = []

    with (
        connected(
            (appcontext_tearing_down, fail(Boom("first"))),
            (appcontext_tearing_down, note(calls, "tearing-down")),
            (appcontext_popped, fail(Boom("second"))),
            (appcontext_popped, note(calls, "popped")),
        ),
        pytest.raises(ExceptionGroup),
    ):
        await run_in_context(how, App("a"), lambda: None)

    assert calls == ["tearing-down", "popped"]


@pytest.mark.anyio
@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("signal", per_signal(appcontext_tearing_down, appcontext_popped))
async def test_one_teardown_error_is_raised_as_is(how: str, signal: Signal) -> None:
    error = Boom("teardown")

    with connected((signal, fail(error))), pytest.raises(Boom) as info:
        await run_in_context(how, App("a"), lambda: None)

    assert info.value is error
    assert bound(current_app) is None


@pytest.mark.anyio
@pytest.mark.parametrize("how", HOW)
async def test_two_teardown_errors_are_raised_in_an_exception_group(how: str) -> None:
    first, second = Boom("tearing down"), Boom("popped")

    with (
        connected((appcontext_tearing_down, fail(first)), (appcontext_popped, fail(second))),
        pytest.raises(ExceptionGroup) as info,
    ):
        await run_in_context(how, App("a"), lambda: None)

    assert info.value.exceptions == (first, second)
    assert bound(current_app) is None


@pytest.mark.anyio
@pytest.mark.parametrize("how", HOW)
async def test_body_exception_comes_first_in_the_group_with_teardown_errors(how: str) -> None:
    body_error, teardown_error = Boom("body"), Boom("teardown")

    def body() -> None:
        raise body_error

    with (
        connected((appcontext_tearing_down, fail(teardown_error))),
        pytest.raises(ExceptionGroup) as info,
    ):
        await run_in_context(how, App("a"), body)

    assert info.value.exceptions == (body_error, teardown_error)


@pytest.mark.anyio
@pytest.mark.parametrize("how", HOW)
async def test_context_is_popped_when_a_teardown_receiver_raises_a_base_exception(
    how: str,
) -> None:
    # KeyboardInterrupt or SystemExit in a receiver must not leave current_app
    # set for the code that handles it, as the middleware ensures.
    with connected((appcontext_tearing_down, fail(Abort()))), pytest.raises(Abort):
        await run_in_context(how, App("a"), lambda: None)

    assert bound(current_app) is None


# appcontext_pushed receivers that raise


@pytest.mark.anyio
@pytest.mark.parametrize("how", HOW)
async def test_failing_pushed_receiver_error_propagates_and_the_body_does_not_run(
    how: str,
) -> None:
    error = Boom("pushed")
    ran: list[str] = []

    with connected((appcontext_pushed, fail(error))), pytest.raises(Boom) as info:
        await run_in_context(how, App("a"), lambda: ran.append("body"))

    assert info.value is error
    assert ran == []


@pytest.mark.anyio
@pytest.mark.parametrize("how", HOW)
async def test_failing_pushed_receiver_leaves_no_context_pushed(how: str) -> None:
    with connected((appcontext_pushed, fail(Boom()))), pytest.raises(Boom):
        await run_in_context(how, App("a"), lambda: None)

    assert bound(current_app) is None
    assert bound(g) is None


@pytest.mark.anyio
async def test_failing_pushed_receiver_restores_the_outer_context() -> None:
    outer = App("outer")

    async with app_context(outer):
        with connected((appcontext_pushed, fail(Boom()))), pytest.raises(Boom):
            async with app_context(App("inner")):
                pass  # pragma: no cover
        assert current_app._get_current_object() is outer


@pytest.mark.anyio
@pytest.mark.parametrize("how", HOW)
async def test_failing_pushed_receiver_still_tears_down_with_its_error(
    how: str, sent: list[Sent]
) -> None:
    app = App("a")
    error = Boom("pushed")

    with connected((appcontext_pushed, fail(error))), pytest.raises(Boom):
        await run_in_context(how, app, lambda: None)

    assert sent == [
        ("appcontext-pushed", app, {}),
        ("appcontext-tearing-down", app, {"exc": error}),
        ("appcontext-popped", app, {}),
    ]


@pytest.mark.anyio
async def test_failing_pushed_receiver_tears_down_with_the_context_still_bound() -> None:
    app = App("a")
    seen: list[Any] = []

    def on_tearing_down(sender: Any, exc: BaseException | None) -> None:
        seen.append(bound(current_app))

    with (
        connected((appcontext_pushed, fail(Boom())), (appcontext_tearing_down, on_tearing_down)),
        pytest.raises(Boom),
    ):
        async with app_context(app):
            pass  # pragma: no cover

    assert seen == [app]


@pytest.mark.anyio
async def test_failing_pushed_and_teardown_receivers_raise_together() -> None:
    pushed_error, teardown_error = Boom("pushed"), Boom("teardown")

    with (
        connected(
            (appcontext_pushed, fail(pushed_error)),
            (appcontext_tearing_down, fail(teardown_error)),
        ),
        pytest.raises(ExceptionGroup) as info,
    ):
        async with app_context(App("a")):
            pass  # pragma: no cover

    assert info.value.exceptions == (pushed_error, teardown_error)
    assert bound(current_app) is None


@pytest.mark.anyio
async def test_cancelled_pushed_receiver_tears_down_and_the_cancellation_propagates(
    sent: list[Sent],
) -> None:
    ran: list[str] = []

    async def on_pushed(sender: Any) -> None:
        await anyio.lowlevel.checkpoint()

    with connected((appcontext_pushed, on_pushed)), anyio.CancelScope() as scope:
        scope.cancel()
        async with app_context(App("a")):
            ran.append("body")  # pragma: no cover

    assert scope.cancelled_caught
    assert ran == []
    assert names(sent) == ["appcontext-pushed", "appcontext-tearing-down", "appcontext-popped"]
    assert bound(current_app) is None


# g: an AppGlobals


def test_g_sets_gets_and_deletes_attributes() -> None:
    with app_context(App("a")):
        g.user = "ada"
        assert g.user == "ada"
        assert g._get_current_object().user == "ada"
        del g.user
        assert "user" not in g


def test_g_missing_attribute_raises_attribute_error() -> None:
    with app_context(App("a")):
        with pytest.raises(AttributeError, match="user"):
            _ = g.user
        with pytest.raises(AttributeError, match="user"):
            del g.user


def test_g_get_returns_the_attribute_or_a_default() -> None:
    with app_context(App("a")):
        g.user = "ada"
        assert g.get("user") == "ada"
        assert g.get("missing") is None
        assert g.get("missing", 0) == 0


def test_g_pop_returns_and_removes_the_attribute() -> None:
    with app_context(App("a")):
        g.user = "ada"
        assert g.pop("user") == "ada"
        assert "user" not in g


def test_g_pop_of_a_missing_attribute_returns_the_default() -> None:
    with app_context(App("a")):
        assert g.pop("missing", None) is None
        assert g.pop("missing", 0) == 0


def test_g_pop_of_a_missing_attribute_without_default_raises_key_error() -> None:
    with app_context(App("a")), pytest.raises(KeyError, match="missing"):
        g.pop("missing")


def test_g_setdefault_sets_only_a_missing_attribute() -> None:
    with app_context(App("a")):
        assert g.setdefault("user", "ada") == "ada"
        assert g.setdefault("user", "bob") == "ada"
        assert g.user == "ada"
        assert g.setdefault("other") is None
        assert g.other is None


def test_g_in_tells_whether_an_attribute_is_set() -> None:
    with app_context(App("a")):
        assert "user" not in g
        g.user = "ada"
        assert "user" in g


def test_g_iterates_over_the_attribute_names_in_order() -> None:
    with app_context(App("a")):
        g.b = 1
        g.a = 2
        assert list(g) == ["b", "a"]


def test_g_is_an_app_globals_in_a_context() -> None:
    with app_context(App("a")):
        assert isinstance(g, AppGlobals)
        assert bool(g) is True


def test_g_repr_in_a_context_names_the_app() -> None:
    with app_context(App("a")):
        assert repr(g) == "<asignals.g of <App a>>"
        assert str(g) == "<asignals.g of <App a>>"


def test_app_globals_repr_outside_its_context_is_the_plain_object_repr() -> None:
    outer_g = AppGlobals()

    with app_context(App("a")):
        assert repr(outer_g).startswith("<asignals._context.AppGlobals object at ")


# asignals.testing


@pytest.mark.anyio
async def test_record_signals_records_every_appcontext_signal_of_app_context() -> None:
    app = App("a")

    with record_signals(*APPCONTEXT_SIGNALS) as recorded:
        async with app_context(app):
            pass

    assert [(s.signal, s.sender, s.kwargs) for s in recorded] == [
        (appcontext_pushed, app, {}),
        (appcontext_tearing_down, app, {"exc": None}),
        (appcontext_popped, app, {}),
    ]

"""The error hierarchy (asignals._exceptions), and the checks where blinker
has no rule: each error is an asignals class and the builtin raised before."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import anyio
import pytest

import asignals
from asignals import (
    ArgumentError,
    AsignalsError,
    BackgroundError,
    BackgroundLimitError,
    ContextError,
    FlashError,
    FlaskNameError,
    InvalidValueError,
    Namespace,
    NeedsAwaitError,
    ReceiverCancelledError,
    SendTimeoutError,
    Signal,
    UsageError,
)

HIERARCHY = [
    (ArgumentError, TypeError),
    (FlaskNameError, AttributeError),
    (InvalidValueError, ValueError),
    (ContextError, RuntimeError),
    (NeedsAwaitError, RuntimeError),
    (UsageError, RuntimeError),
    (FlashError, RuntimeError),
    (BackgroundError, RuntimeError),
    (BackgroundLimitError, BackgroundError),
    (ReceiverCancelledError, RuntimeError),
    (SendTimeoutError, TimeoutError),
]


@pytest.mark.parametrize(("error", "builtin"), HIERARCHY)
def test_each_error_is_an_asignals_error_and_the_builtin_it_was(
    error: type[Exception], builtin: type[Exception]
) -> None:
    assert issubclass(error, AsignalsError)
    assert issubclass(error, builtin)
    assert error.__doc__


def test_every_error_class_is_exported() -> None:
    for error in [AsignalsError, *(error for error, _ in HIERARCHY)]:
        assert error.__name__ in asignals.__all__
        assert getattr(asignals, error.__name__) is error


# What raises them.


def test_connecting_something_not_callable_is_an_argument_error() -> None:
    with pytest.raises(ArgumentError, match="must be callable"):
        Signal().connect(42)  # type: ignore[type-var]


async def _generator(sender: Any, **kwargs: Any) -> AsyncIterator[None]:
    yield None


class _GeneratorMethod:
    async def __call__(self, sender: Any, **kwargs: Any) -> AsyncIterator[None]:
        yield None


@pytest.mark.parametrize(
    "receiver",
    [_generator, partial(_generator), _GeneratorMethod()],
    ids=["function", "partial", "callable object"],
)
def test_connecting_an_async_generator_function_is_refused(receiver: Any) -> None:
    sig = Signal()
    with pytest.raises(ArgumentError, match="async generator function, whose body would never"):
        sig.connect(receiver, weak=False)
    assert not sig.receivers


@pytest.mark.parametrize("value", [None, 1, "yes"])
def test_signal_concurrent_takes_a_bool(value: Any) -> None:
    with pytest.raises(ArgumentError, match="concurrent takes True or False"):
        Signal(concurrent=value)


def test_namespace_concurrent_takes_a_bool_or_none() -> None:
    ns = Namespace()
    assert ns.signal("a", concurrent=None).concurrent is False
    with pytest.raises(ArgumentError, match="concurrent takes True, False or None"):
        ns.signal("b", concurrent=1)  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match="already exists with concurrent=False"):
        ns.signal("a", concurrent=True)


@pytest.mark.anyio
async def test_concurrent_option_takes_a_bool_and_none_means_the_default() -> None:
    sig = Signal(concurrent=True)
    sig.connect(lambda sender, **kwargs: 1, weak=False)
    assert [v for _, v in await sig.send_async(None, _concurrent=None)] == [1]
    with pytest.raises(ArgumentError, match="_concurrent takes True, False or None"):
        await sig.send_async(None, _concurrent=1)


@pytest.mark.anyio
async def test_a_wrapper_that_is_not_callable_names_the_option() -> None:
    sig = Signal()
    sig.connect(lambda sender, **kwargs: 1, weak=False)

    async def coroutine(sender: Any, **kwargs: Any) -> int:
        return 2

    sig.connect(coroutine)
    with pytest.raises(ArgumentError, match="_sync_wrapper must be a callable"):
        await sig.send_async(None, _sync_wrapper=1)
    with pytest.raises(ArgumentError, match="_async_wrapper must be a callable"):
        sig.send(None, _async_wrapper="no")


@pytest.mark.anyio
async def test_a_timeout_is_a_send_timeout_error() -> None:
    sig = Signal()

    async def never(sender: Any, **kwargs: Any) -> None:
        await anyio.sleep_forever()

    sig.connect(never)
    with pytest.raises(SendTimeoutError, match="did not finish within"):
        await sig.send_async(None, _timeout=0.01)
    with pytest.raises(InvalidValueError, match="_timeout must be a positive"):
        await sig.send_async(None, _timeout=-1)


def test_send_with_async_receivers_on_no_loop_needs_await() -> None:
    sig = Signal()

    async def receiver(sender: Any, **kwargs: Any) -> None:
        pass

    sig.connect(receiver)
    with pytest.raises(NeedsAwaitError, match="send_async"):
        sig.send(None)


def test_outside_a_context_is_a_context_error() -> None:
    with pytest.raises(ContextError, match="outside of an application context"):
        asignals.current_app.name  # noqa: B018
    with pytest.raises(ContextError, match="outside of a request"):
        asignals.request.path  # noqa: B018
    with pytest.raises(ContextError, match="outside a request"):
        asignals.flash("hi")


def test_send_background_without_a_lifespan_is_a_background_error() -> None:
    sig = Signal()
    sig.connect(lambda sender, **kwargs: None, weak=False)
    with pytest.raises(BackgroundError, match="outside of an application context"):
        sig.send_background(None)
    with (
        asignals.app_context("app"),
        pytest.raises(BackgroundError, match="pushed by hand"),
    ):
        sig.send_background(None)


def test_pushing_a_context_twice_is_a_usage_error() -> None:
    ctx = asignals.app_context("app")
    with ctx, pytest.raises(UsageError, match="already pushed"):
        ctx.push()

"""Apps and receivers for the context tests (test_context.py,
test_context_proxies.py, test_context_propagation.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from starlette.applications import Starlette

import asignals
from asignals import Signal


class App:
    """A stand-in application: an app context takes any object as its app."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<App {self.name}>"


def bound(proxy: Any) -> Any:
    """The object ``proxy`` stands for here, or None outside its context."""
    try:
        return proxy._get_current_object()
    except RuntimeError:
        return None


@contextmanager
def connected(*pairs: tuple[Signal, Callable[..., Any]]) -> Iterator[None]:
    """Connect each (signal, receiver) strongly for the block, then disconnect."""
    with ExitStack() as stack:
        for signal, receiver in pairs:
            stack.enter_context(signal.connected_to(receiver))
        yield


def make_app(*routes: Any) -> Starlette:
    return asignals.install(Starlette(routes=list(routes)))

"""The ``_`` options of a send, told apart from the receivers' arguments.

As in blinker, a keyword that starts with ``_`` and is not an option of the
method is passed to the receivers (published blinker users send their own,
such as ``_request_id=``). Three mistakes are errors instead, each with a
message that names the fix: a near-miss of an option (``_concurent``), an
option of another send method (``_timeout`` on ``send()``), and the sender
given as ``sender=``.
"""

from __future__ import annotations

from typing import Any

from ._exceptions import ArgumentError, InvalidValueError

OPTIONS = {
    "send": ("_async_wrapper",),
    "send_async": ("_sync_wrapper", "_concurrent", "_timeout"),
    "send_background": ("_concurrent", "_timeout"),
}
ALL_OPTIONS = frozenset(name for names in OPTIONS.values() for name in names)

# Keyword names already seen to be plain receiver arguments. Checking a call's
# keywords against it costs one C call; a name seen for the first time takes
# the slow path once. Bounded, as keywords can be made at run time.
_KNOWN: set[str] = set()
_KNOWN_LIMIT = 4096
known = _KNOWN.issuperset


def take(kwargs: dict[str, Any], method: str) -> dict[str, Any]:
    """Take this method's options out of ``kwargs`` and return them; raise
    for a keyword that cannot be a receiver argument. Remember the good
    names, so that later calls with them skip this."""
    if "sender" in kwargs:
        raise ArgumentError(
            f"{method}() takes the sender as its first positional argument, not "
            f"as sender=...: call signal.{method}(sender, **kwargs)"
        )
    own = OPTIONS[method]
    options = {name: kwargs.pop(name) for name in own if name in kwargs}
    for name in kwargs:
        if name.startswith("_"):
            _check_not_an_option(name, method)
    if len(_KNOWN) < _KNOWN_LIMIT:
        _KNOWN.update(kwargs)
    return options


def _check_not_an_option(name: str, method: str) -> None:
    own = OPTIONS[method]
    if name in ALL_OPTIONS:
        others = [m for m, names in OPTIONS.items() if name in names]
        raise ArgumentError(
            f"{name} is an option of {' and '.join(f'{m}()' for m in others)}, not of "
            f"{method}() (whose options are {', '.join(own)}): call "
            f"{others[0]}() for it, or give the receivers' argument another name"
        )
    close = [option for option in sorted(ALL_OPTIONS) if _near(name, option)]
    if close:
        option = close[0]
        where = "" if option in own else f" It is an option of {_owner(option)}."
        raise ArgumentError(
            f"{method}() got {name}=, which looks like a misspelt option: did you "
            f"mean {option}?{where} A keyword starting with '_' that is not an "
            "option is passed to the receivers, so a misspelt option would go to "
            "them unnoticed; rename the argument if it is meant for them."
        )


def _owner(option: str) -> str:
    return " and ".join(f"{m}()" for m, names in OPTIONS.items() if option in names)


def _near(name: str, option: str) -> bool:
    """Whether ``name`` is at most two edits (insert, delete, substitute, or
    swap two neighbours) from ``option``: a typo, not another word."""
    if abs(len(name) - len(option)) > 2:
        return False
    previous2: list[int] = []
    previous = list(range(len(option) + 1))
    for i, a in enumerate(name, 1):
        current = [i]
        for j, b in enumerate(option, 1):
            cost = 0 if a == b else 1
            value = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a == option[j - 2] and name[i - 2] == b:
                value = min(value, previous2[j - 2] + 1)
            current.append(value)
        previous2, previous = previous, current
    return previous[-1] <= 2


def check_timeout(timeout: object) -> float | None:
    if timeout is not None and not (
        isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0
    ):
        raise InvalidValueError(
            f"_timeout must be a positive number of seconds or None, not {timeout!r}"
        )
    return timeout


def check_concurrent(value: object, name: str = "_concurrent") -> bool | None:
    """``value`` as given for ``_concurrent``: a bool, or None for the
    signal's default."""
    if value is not None and not isinstance(value, bool):
        raise ArgumentError(
            f"{name} takes True, False or None (the signal's default), not {value!r}"
        )
    return value


def check_wrapper(value: object, name: str) -> Any:
    if value is not None and not callable(value):
        raise ArgumentError(
            f"{name} must be a callable that takes a receiver and returns what to "
            f"call instead, not {value!r}"
        )
    return value

"""Short, bounded text for any value, with secrets masked: what traces (and
the monitor) show of a send's arguments.

A summary takes time and memory bounded by its length, whatever the value:
a string or ``bytes`` of any size is cut before it is copied, a dict or a
set is never sorted, an int too long is described rather than written out,
nesting stops a few levels down, and a ``repr()`` that raises is named. A
value under a key that looks secret (``password``, ``token``, ...) is
masked, at any depth.

>>> summary({"user": "ada", "password": "hunter2", "tags": list(range(100))})
"{'user': 'ada', 'password': ***, 'tags': [0, 1, 2, 3, 4, 5, 6, 7, ...]}"
>>> summary(b"x" * 10_000_000)
"b'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...' (10,000,000 bytes)"
"""

from __future__ import annotations

import builtins
import reprlib
from collections.abc import Iterable
from itertools import islice
from typing import Any

#: What a masked value shows.
MASK = "***"

#: Parts of a name that make it look secret (compared in lower case).
SECRET_PARTS = (
    "password",
    "passwd",
    "token",
    "secret",
    "authorization",
    "cookie",
    "key",
    "session",
    "credential",
)

# Ints longer than this many bits are described, not written out (writing
# out an int takes time quadratic in its length).
_LONG_INT_BITS = 256


def looks_secret(name: object, parts: Iterable[str] = SECRET_PARTS) -> bool:
    """Whether a value under ``name`` should be masked."""
    if not isinstance(name, str):
        return False
    lowered = name.lower()
    return any(part in lowered for part in parts)


class _Summary(reprlib.Repr):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxtuple = self.maxlist = self.maxarray = self.maxdeque = 8
        self.maxdict = self.maxset = self.maxfrozenset = 8
        self.maxstring = self.maxlong = limit // 2
        self.maxother = limit
        self.fillvalue = "..."

    def repr1(self, x: Any, level: int) -> str:
        # Subclasses of str and bytes (markup, for one) are cut as their
        # base, not written out whole by their own repr().
        if isinstance(x, str):
            return self.repr_str(str.__str__(x[: self.maxstring + 1]), level)
        if isinstance(x, (bytes, bytearray, memoryview)):
            return self.repr_bytes(x, level)
        if type(x) is int or type(x) is bool:
            return self.repr_int(x, level)
        return super().repr1(x, level)

    def repr_str(self, x: str, level: int) -> str:
        text = builtins.repr(x[: self.maxstring])
        return text if len(x) <= self.maxstring else text[:-1] + "..." + text[-1]

    def repr_bytes(self, x: bytes | bytearray | memoryview, level: int) -> str:
        size = x.nbytes if isinstance(x, memoryview) else len(x)
        head = builtins.repr(bytes(x[: self.maxstring]))
        if size <= self.maxstring:
            return head
        return f"{head[:-1]}...{head[-1]} ({size:,} bytes)"

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > _LONG_INT_BITS:
            return f"<int of {x.bit_length():,} bits>"
        return builtins.repr(x)

    def repr_dict(self, x: dict[Any, Any], level: int) -> str:
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        items = []
        for key, value in islice(x.items(), self.maxdict):
            shown = MASK if looks_secret(key) else self.repr1(value, level - 1)
            items.append(f"{self.repr1(key, level - 1)}: {shown}")
        if len(x) > self.maxdict:
            items.append("...")
        return "{" + ", ".join(items) + "}"

    def _unsorted(self, x: Any, level: int, left: str, right: str, most: int) -> str:
        if not x:
            return f"{type(x).__name__}()"
        if level <= 0:
            return left + "..." + right
        items = [self.repr1(item, level - 1) for item in islice(x, most)]
        if len(x) > most:
            items.append("...")
        return left + ", ".join(items) + right

    def repr_set(self, x: set[Any], level: int) -> str:
        return self._unsorted(x, level, "{", "}", self.maxset)

    def repr_frozenset(self, x: frozenset[Any], level: int) -> str:
        return self._unsorted(x, level, "frozenset({", "})", self.maxfrozenset)

    def repr_instance(self, x: Any, level: int) -> str:
        try:
            text = builtins.repr(x)
        except Exception:
            return f"<{type(x).__qualname__} object (its repr() raised)>"
        if not isinstance(text, str):
            return f"<{type(x).__qualname__} object>"
        text = str.__str__(text[: self.maxother + 1])
        return text if len(text) <= self.maxother else text[: self.maxother - 3] + "..."


_summaries: dict[int, _Summary] = {}


def summary(value: Any, limit: int = 100) -> str:
    """Text for ``value`` of about ``limit`` characters per part, bounded in
    time and memory, with values under secret-looking keys masked."""
    made = _summaries.get(limit)
    if made is None:
        made = _summaries.setdefault(limit, _Summary(limit))
    try:
        return made.repr(value)
    except Exception:
        return f"<{type(value).__qualname__} object (could not be shown)>"


def argument(name: str, value: Any, limit: int = 100) -> str:
    """:func:`summary` of an argument, or the mask if its name looks
    secret."""
    return MASK if looks_secret(name) else summary(value, limit)

"""Short, bounded text for any value, with secrets masked: what traces show
of a send's arguments.

A summary takes time and memory bounded by its length for strings, bytes,
numbers, mappings (dicts and their subclasses, Starlette's ``Headers`` and
forms: anything registered as a :class:`~collections.abc.Mapping`), their
keys, values and items, lists, tuples, sets, deques and dataclasses: a
string or ``bytes`` of any size is cut before it is copied, a container
shows its first few items unsorted, an int too long is described rather
than written out, nesting stops a few levels down. Any other object is
shown by its own ``repr()``, which runs in full, then is cut short; so are
dataclasses and named tuples whose class wrote a ``repr()`` of its own.

What is masked, as ``***``: a value under a name that looks secret
(``password``, ``token``, ...: :data:`SECRET_PARTS`, in any case), as a
mapping's key (str or bytes), a dataclass's or named tuple's field, the
first item of a pair, at any depth; in the ``repr()`` of any other object,
what follows such a name and ``=``, ``:`` or ``,`` (an authorization
scheme's credentials too); and the password of a URL, in a string or a
``repr()`` (``redis://:***@host``).

>>> summary({"user": "ada", "password": "hunter2", "tags": list(range(100))})
"{'user': 'ada', 'password': ***, 'tags': [0, 1, 2, 3, 4, 5, 6, 7, ...]}"
>>> summary(b"x" * 10_000_000, limit=20)
"b'xxxxxxxxxxxxxxxxxxxx...' (10,000,000 bytes)"
"""

from __future__ import annotations

import dataclasses
import re
from collections import deque
from collections.abc import Iterable, Mapping, MappingView
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


def _secret_in_text(parts: tuple[str, ...]) -> re.Pattern[str] | None:
    """In the repr() of an object summary() does not take apart: a
    secret-looking name, quoted or not, then "=", ":" or "," and the value:
    quoted, an authorization scheme and its credentials, or a word.
    (Possessive, and the name looked ahead for once: linear in the text's
    length.)"""
    if not parts:
        return None
    return re.compile(
        r"""(?i)(?<![\w.-])(['"]?)(?=[\w.-]*?(?:"""
        + "|".join(re.escape(part) for part in parts)
        + r"""))([\w.-]++)\1(\s*+[=:,]\s*+)"""
        r"""('(?:[^'\\]|\\.)*+'?|"(?:[^"\\]|\\.)*+"?|"""
        r"""(?:bearer|basic|digest|token)\s++[^\s,)\]}>]*+|[^\s,)\]}>]++)"""
    )


class Secrets:
    """Which names look secret: those that contain one of ``parts``, in any
    case. A summary masks the values under them."""

    __slots__ = ("_in_text", "_known", "parts")

    def __init__(self, parts: Iterable[str] = ()) -> None:
        if isinstance(parts, str):
            raise TypeError(
                f"the secret names must be a collection of strings, such as "
                f"(*SECRET_PARTS, {parts!r}), not the string {parts!r}"
            )
        self.parts = tuple(dict.fromkeys(str.__str__(part).lower() for part in parts))
        if any(not part for part in self.parts):
            raise ValueError("a secret name part must not be empty: it would mask everything")
        self._in_text = _secret_in_text(self.parts)
        # The answers for the names seen last (the same few, send after send).
        self._known: dict[str, bool] = {}

    def __contains__(self, name: object) -> bool:
        """Whether a value under ``name`` (a str, or bytes) is masked."""
        if isinstance(name, bytes):
            name = name[:_NAME_CHARS].decode("latin-1")
        if not isinstance(name, str):
            return False
        known = self._known.get(name) if type(name) is str else None
        if known is not None:
            return known
        lowered = name[:_NAME_CHARS].lower()
        found = any(part in lowered for part in self.parts)
        if type(name) is str and len(name) <= _NAME_CHARS:
            if len(self._known) >= _NAMES_KNOWN:
                self._known.clear()
            self._known[name] = found
        return found

    def in_text(self, text: str) -> str:
        """``text`` with what follows a secret-looking name masked."""
        pattern = self._in_text
        if pattern is None:
            return text
        return pattern.sub(lambda m: f"{m[1]}{m[2]}{m[1]}{m[3]}{MASK}", text)


# The password in a URL (scheme://user:password@host), to the last "@"
# before the path; and in a text cut short, what may be the start of one.
_PASSWORD_IN_URL = re.compile(r"(://[^/@\s:]*:)[^/\s]*@")
_PASSWORD_CUT = re.compile(r"(://[^/@\s:]*:)[^/\s@]*$")

# Ints longer than this many bits are described, not written out (writing
# out an int takes time quadratic in its length).
_LONG_INT_BITS = 256
# How much of a name is looked at.
_NAME_CHARS = 256
# How many names' answers a Secrets keeps.
_NAMES_KNOWN = 1024
# How many items of a container, and how many levels of nesting, are shown.
_ITEMS = 8
_LEVELS = 3


#: The names that look secret by default.
DEFAULT_SECRETS = Secrets(SECRET_PARTS)


def looks_secret(name: object, secrets: Secrets = DEFAULT_SECRETS) -> bool:
    """Whether a value under ``name`` (a str, or bytes) should be masked."""
    return name in secrets


def summary(value: Any, limit: int = 100, secrets: Secrets = DEFAULT_SECRETS) -> str:
    """Text for ``value``: each string, ``bytes`` or ``repr()`` in it cut
    at about ``limit`` characters, the whole at about four times that;
    values under secret-looking names masked."""
    try:
        text = _show(value, _LEVELS, limit, secrets)
    except Exception:
        return f"<{type(value).__qualname__} object (could not be shown)>"
    return text if len(text) <= 4 * limit else text[: 4 * limit - 3] + "..."


def argument(name: str, value: Any, limit: int = 100, secrets: Secrets = DEFAULT_SECRETS) -> str:
    """:func:`summary` of an argument, or the mask if its name looks
    secret."""
    return MASK if name in secrets else summary(value, limit, secrets)


def _show(x: Any, level: int, limit: int, secrets: Secrets) -> str:
    if isinstance(x, str):
        # Cut as a str before anything else: a subclass's repr() (markup's)
        # may write it out whole.
        text = _hide_passwords(str.__str__(x[:limit]), cut=len(x) > limit)
        text = repr(text)
        return text if len(x) <= limit else f"{text[:-1]}...{text[-1]}"
    if isinstance(x, (bytes, bytearray, memoryview)):
        size = x.nbytes if isinstance(x, memoryview) else len(x)
        head = repr(bytes(x[:limit]))
        return head if size <= limit else f"{head[:-1]}...{head[-1]} ({size:,} bytes)"
    kind = type(x)
    if x is None or kind is bool or kind is float:
        return repr(x)
    if kind is int:
        bits = x.bit_length()
        return repr(x) if bits <= _LONG_INT_BITS else f"<int of {bits:,} bits>"
    if isinstance(x, Mapping):
        return _mapping(x, level, limit, secrets)
    if dataclasses.is_dataclass(x) and _generated_repr(kind):
        # The fields its repr() shows.
        shown = (field.name for field in dataclasses.fields(x) if field.repr)
        return _fields(x, list(islice(shown, _ITEMS + 1)), level, limit, secrets)
    if isinstance(x, tuple) and getattr(kind.__repr__, "__module__", None) == "collections":
        # A named tuple, shown as its repr() shows it.
        return _fields(x, list(x._fields[: _ITEMS + 1]), level, limit, secrets)  # type: ignore[attr-defined]
    if isinstance(x, (list, tuple, set, frozenset, deque, MappingView)):
        return _items(x, level, limit, secrets)  # type: ignore[arg-type]
    try:
        text = repr(x)
    except Exception:
        return f"<{kind.__qualname__} object (its repr() raised)>"
    if not isinstance(text, str):
        return f"<{kind.__qualname__} object>"
    text = str.__str__(text[: limit + 1])
    cut = len(text) > limit
    text = _hide_passwords(text[: limit - 3] if cut else text, cut) + ("..." if cut else "")
    return secrets.in_text(text)


def _hide_passwords(text: str, cut: bool) -> str:
    """``text`` with the passwords of URLs masked, and, if it was cut short,
    what may be the start of one at its end."""
    text = _PASSWORD_IN_URL.sub(r"\1***@", text)
    return _PASSWORD_CUT.sub(r"\1***", text) if cut else text


def _generated_repr(kind: type) -> bool:
    """Whether instances of the dataclass ``kind`` have the repr() that
    dataclasses made (not one of the class's own, which may hide more)."""
    owner = next((c for c in kind.__mro__ if "__repr__" in c.__dict__), object)
    params = owner.__dict__.get("__dataclass_params__")
    return (
        params is not None
        and params.repr
        and hasattr(owner.__dict__["__repr__"], "__wrapped__")  # dataclasses' guard
    )


def _mapping(x: Mapping[Any, Any], level: int, limit: int, secrets: Secrets) -> str:
    name = "" if type(x) is dict else type(x).__qualname__
    if level <= 0:
        body = "{...}" if x else "{}"
    else:
        shown = [
            f"{_show(key, level - 1, limit, secrets)}: "
            + (MASK if key in secrets else _show(value, level - 1, limit, secrets))
            for key, value in islice(x.items(), _ITEMS)
        ]
        if len(x) > _ITEMS:
            shown.append("...")
        body = "{" + ", ".join(shown) + "}"
    return f"{name}({body})" if name else body


def _fields(x: Any, names: list[str], level: int, limit: int, secrets: Secrets) -> str:
    if level <= 0:
        return f"{type(x).__qualname__}(...)"
    shown = [
        f"{name}="
        + (MASK if name in secrets else _show(getattr(x, name), level - 1, limit, secrets))
        for name in names[:_ITEMS]
    ]
    if len(names) > _ITEMS:
        shown.append("...")
    return f"{type(x).__qualname__}({', '.join(shown)})"


def _items(x: Iterable[Any], level: int, limit: int, secrets: Secrets) -> str:
    kind = type(x)
    left, right = {
        list: ("[", "]"),
        tuple: ("(", ")"),
        set: ("{", "}"),
        frozenset: ("frozenset({", "})"),
        deque: ("deque([", "])"),
    }.get(kind, (f"{kind.__qualname__}([", "])"))
    size = len(x)  # type: ignore[arg-type]
    if not size:
        return f"{kind.__qualname__}()" if kind in (set, frozenset, deque) else left + right
    if level <= 0:
        return left + "..." + right
    if isinstance(x, (tuple, list)) and size == 2 and x[0] in secrets:
        # A (name, value) pair: form fields and headers as lists of pairs.
        return f"{left}{_show(x[0], level - 1, limit, secrets)}, {MASK}{right}"
    shown = [_show(item, level - 1, limit, secrets) for item in islice(x, _ITEMS)]
    if size > _ITEMS:
        shown.append("...")
    elif kind is tuple and size == 1:
        shown[0] += ","
    return left + ", ".join(shown) + right

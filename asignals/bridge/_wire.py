"""What a bridged send looks like on the wire: a JSON envelope, signed when
the bridge has a secret, refused at the send if it cannot cross.

A message is ``asignals1 <origin> <signature> <payload>``: the format's tag,
the id of the process that sent it (so that a process drops its own
messages without reading them), the payload's HMAC-SHA256 in hex (``-``
when the bridge has no secret) and the payload, a JSON object::

    {"n": <the send's number in its process>, "origin": "<origin>", "signal": "<name>",
     "sender": {"value": <sender>} | {"app": true}, "kwargs": {...},
     "trace": {"traceparent": "...", ...}}

``trace``, present while the sending process is traced (:mod:`asignals.otel`),
is the W3C trace context of the span that made the message: a few short
string fields; a trace context that is not is ignored, and the send taken.

Only JSON crosses, never pickle: what JSON cannot carry as it is (a tuple, a
set, bytes, a dict with keys that are not strings, NaN) is refused at the
send with the key that holds it, rather than arriving changed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Mapping
from typing import Any

from .._exceptions import ArgumentError, InvalidValueError
from .._tracing import CARRIED_CHARS, CARRIED_FIELDS

TAG = b"asignals1"

#: Types of senders that cross by value.
SENDER_TYPES = (type(None), str, int, float, bool)

# How deep a value may nest: deeper is refused (JSON decoders recurse).
_MAX_DEPTH = 64
# Ints longer than this many bits may be over Python's limit on writing an
# int out as text (4300 digits by default), which JSON does.
_LONG_INT_BITS = 14_000


class Envelope:
    """A send as it crosses: who made it, and what the receivers get."""

    __slots__ = ("app", "kwargs", "number", "origin", "sender", "signal", "trace")

    def __init__(
        self,
        number: int,
        origin: str,
        signal: str,
        sender: Any,
        app: bool,
        kwargs: dict[str, Any],
        trace: dict[str, str] | None = None,
    ) -> None:
        #: Its place among the sends of its process, from 1 up.
        self.number = number
        self.origin = origin
        self.signal = signal
        self.sender = sender
        #: The sender was the sending process's app: it arrives as the
        #: receiving process's own.
        self.app = app
        self.kwargs = kwargs
        #: The trace context it carries (W3C ``traceparent`` and
        #: ``tracestate``), or None.
        self.trace = trace


class MessageError(Exception):
    """A message that cannot be taken: foreign, malformed, unsigned,
    forged or too large. The listener logs it and goes on."""


def check_sender(signal_name: str, sender: Any) -> None:
    """Refuse a sender that cannot cross by value."""
    if type(sender) not in SENDER_TYPES:
        raise ArgumentError(
            f"Signal {signal_name!r} is shared through a bridge, and its sender "
            f"{sender!r} (a {type(sender).__qualname__}) cannot cross to other "
            "processes: only None, str, int, float and bool cross by value, and the app "
            "itself (it arrives as the receiving process's app). Send with a plain "
            "value (an id or a name) as sender."
        )
    if type(sender) is float and not math.isfinite(sender):
        raise ArgumentError(
            f"Signal {signal_name!r} is shared through a bridge, and its sender "
            f"{sender!r} is not a finite number, which JSON cannot carry."
        )
    problem = _problem(sender, 0)
    if problem is not None:
        raise ArgumentError(
            f"Signal {signal_name!r} is shared through a bridge, and its sender is "
            f"{problem[1]}, which JSON cannot carry."
        )


def check_arguments(signal_name: str, kwargs: Mapping[str, Any]) -> None:
    """Refuse arguments that JSON cannot carry as they are, naming where."""
    for key, value in kwargs.items():
        problem = _problem(value, 0)
        if problem is not None:
            where, what = problem
            raise ArgumentError(
                f"Signal {signal_name!r} is shared through a bridge, and its argument "
                f"{key!r}{where} is {what}, which cannot cross to other processes: "
                "arguments cross as JSON (None, bool, int, float, str, lists, and dicts "
                "with str keys), never pickled. Send a JSON value (an id rather than an "
                "object, a list rather than a tuple or set, text rather than bytes)."
            )


def _problem(value: Any, depth: int) -> tuple[str, str] | None:
    """Where in ``value`` and what JSON cannot carry, or None."""
    kind = type(value)
    if kind is bool or value is None:
        return None
    if kind is str:
        try:
            value.encode()
        except UnicodeEncodeError:
            return "", "a str that is not valid Unicode (a lone surrogate)"
        return None
    if kind is int:
        if value.bit_length() > _LONG_INT_BITS:
            try:
                str(value)
            except ValueError:  # over Python's limit on int-to-text conversion
                return "", "an int too long to write out as text"
        return None
    if kind is float:
        return None if math.isfinite(value) else ("", f"{value!r}")
    if depth >= _MAX_DEPTH:
        return "", f"nested deeper than {_MAX_DEPTH} levels"
    if kind is list:
        for index, item in enumerate(value):
            problem = _problem(item, depth + 1)
            if problem is not None:
                return f"[{index}]{problem[0]}", problem[1]
        return None
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                return "", f"a dict with the key {key!r} (a {type(key).__qualname__}, not a str)"
            problem = _problem(item, depth + 1)
            if problem is not None:
                return f"[{key!r}]{problem[0]}", problem[1]
        return None
    return "", f"a {kind.__qualname__} ({_short_repr(value)})"


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        return "an object whose repr() failed"
    return text if len(text) <= 60 else text[:57] + "..."


def encode(envelope: Envelope, secret: bytes | None, limit: int) -> bytes:
    """The message for ``envelope``: raise if it is larger than ``limit``
    bytes."""
    sender: dict[str, Any] = {"app": True} if envelope.app else {"value": envelope.sender}
    data = {
        "n": envelope.number,
        "origin": envelope.origin,
        "signal": envelope.signal,
        "sender": sender,
        "kwargs": envelope.kwargs,
    }
    if envelope.trace is not None:
        data["trace"] = envelope.trace
    payload = json.dumps(
        data,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    ).encode()
    signature = b"-" if secret is None else _sign(secret, payload)
    message = b" ".join((TAG, envelope.origin.encode(), signature, payload))
    if len(message) > limit:
        raise InvalidValueError(
            f"A send of signal {envelope.signal!r} makes a bridge message of "
            f"{len(message):,} bytes, over the bridge's max_message_bytes={limit:,}: "
            "nothing was sent to other processes (the local receivers were not called "
            "either). Send less (an id the receivers look up), or raise "
            "max_message_bytes."
        )
    return message


def decode(message: bytes, secret: bytes | None, limit: int) -> Envelope:
    """The envelope in ``message``; :class:`MessageError` says why not."""
    if len(message) > limit:
        raise MessageError(f"a message of {len(message):,} bytes, over {limit:,}")
    parts = message.split(b" ", 3)
    if len(parts) != 4 or parts[0] != TAG:
        raise MessageError(f"not an asignals message: {message[:40]!r}")
    _, sent_by, signature, payload = parts
    if secret is not None:
        if signature == b"-":
            raise MessageError("an unsigned message, and this bridge has a secret")
        if not hmac.compare_digest(signature, _sign(secret, payload)):
            raise MessageError("a message whose signature does not match this bridge's secret")
    try:
        data = json.loads(payload, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except ValueError as exc:  # also UnicodeDecodeError
        raise MessageError(f"a payload that is not JSON ({exc})") from None
    except RecursionError:
        raise MessageError("a payload nested too deep") from None
    try:
        number = data["n"]
        origin = data["origin"]
        name = data["signal"]
        sender = data["sender"]
        kwargs = data["kwargs"]
    except (TypeError, KeyError) as exc:
        raise MessageError(f"a payload without {exc}") from None
    if not all(type(x) is str for x in (origin, name)) or type(number) is not int:
        raise MessageError("a payload whose origin or signal is not a string, or n an int")
    if origin.encode() != sent_by:
        raise MessageError(f"a message from {sent_by!r} whose payload says {origin!r}")
    if type(kwargs) is not dict or type(sender) is not dict:
        raise MessageError("a payload whose sender or kwargs is not an object")
    app = sender.get("app") is True
    if not app and "value" not in sender:
        raise MessageError("a payload whose sender has neither a value nor the app")
    value = sender.get("value")
    if type(value) not in SENDER_TYPES:
        raise MessageError(f"a payload whose sender is a {type(value).__name__}")
    trace = data.get("trace")
    if trace is not None and not (
        type(trace) is dict
        and len(trace) <= CARRIED_FIELDS
        and all(type(v) is str and len(k) + len(v) <= CARRIED_CHARS for k, v in trace.items())
    ):
        # Only the trace is left out: it never costs the send.
        trace = None
    return Envelope(number, origin, name, value, app, kwargs, trace)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    made = dict(pairs)
    if len(made) != len(pairs):
        raise ValueError("an object with a key given twice")
    return made


def prefix(origin: str) -> bytes:
    """How every message that ``origin`` sends begins."""
    return b" ".join((TAG, origin.encode(), b""))


def _sign(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, payload, hashlib.sha256).hexdigest().encode()

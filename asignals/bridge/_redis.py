"""The backend seam of the bridge, and its one backend: Redis, through
coredis (whose I/O runs on anyio, so on asyncio and trio alike).

A backend reports a lost connection by raising :class:`BackendDown`, and
does this:

- ``connected()``: an async context manager that holds the connection
  that publishing uses, and ``publish_many(messages, stream_maxlen)``,
  which sends (channel, message) pairs in order: to every subscriber of the
  channel (``pubsub``), or appended to the channel's stream (``stream``);
- ``subscribe(channels)`` (``pubsub``) and ``read(positions, block)``
  (``stream``, from after the given position in each stream, which it moves
  on as it gives each message): async context managers, entered once the
  bridge is listening, that yield an async iterator of the messages;
- ``work(stream, group, consumer)``: a consumer group's share of a stream
  (:class:`WorkQueue`: ``next``, ``touch`` to renew the claim on what runs,
  ``claim`` to run each send once, ``ack``, ``dead_letter``), for exclusive
  receivers.

Reconnecting, backoff and what the app learns of an outage are the
bridge's, not the backend's: a backend only says that the connection is
gone. Another engine (NATS JetStream, say) would implement these.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from contextlib import asynccontextmanager, suppress
from typing import NoReturn, cast
from urllib.parse import urlsplit

import anyio
import anyio.abc

try:
    from coredis import Redis
    from coredis.exceptions import ConnectionError as RedisConnectionError
    from coredis.exceptions import (
        RedisError,
        StreamDuplicateConsumerGroupError,
        WrongTypeError,
    )
    from coredis.response.types import StreamEntry, StreamPendingExt
    from coredis.retry import NoRetryPolicy
    from coredis.tokens import PureToken
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError(
        "asignals.bridge needs coredis: pip install coredis (the redis extra of asignals brings it)"
    ) from exc


logger = logging.getLogger("asignals")


class BackendDown(Exception):
    """The backend lost (or could not make) its connection."""


# What coredis raises for a connection that is gone or cannot be made (and,
# from its clean-up, for one closed under it while it is cancelled).
_DOWN = (RedisConnectionError, OSError, TimeoutError, EOFError, anyio.ClosedResourceError)


def _raise_from(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Raise what coredis' task groups raised, as one exception: a
    cancellation (coredis' clean-up may fail beside it on a connection
    closed under it: that is no outage), else :class:`BackendDown` for a
    lost connection, else the group as it is."""
    cancelled, rest = group.split(anyio.get_cancelled_exc_class())
    down, other = rest.split((BackendDown, *_DOWN)) if rest is not None else (None, None)
    if other is not None:
        raise group
    if cancelled is not None:
        raise next(_leaves(cancelled))
    assert down is not None
    first = next(_leaves(down))
    if isinstance(first, BackendDown):
        raise first
    raise BackendDown(str(first) or type(first).__name__) from first


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


class RedisBackend:
    """Redis, through coredis: pub/sub, streams and consumer groups."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self._client: Redis[bytes] | None = None

    async def reachable(self) -> None:
        """Raise :class:`BackendDown` unless Redis's address takes a
        connection now. Tried before each connection coredis makes: coredis
        leaves the streams of a connection it could not make unclosed (a
        ResourceWarning each time), which a reconnection loop must not pile
        up while Redis is down."""
        parts = urlsplit(self.url)
        try:
            with anyio.fail_after(self.timeout):
                if parts.scheme == "unix":
                    stream: anyio.abc.ByteStream = await anyio.connect_unix(parts.path)
                else:
                    stream = await anyio.connect_tcp(
                        parts.hostname or "localhost", parts.port or 6379
                    )
        except (OSError, TimeoutError) as exc:
            raise BackendDown(f"cannot connect to {parts.netloc or parts.path}: {exc}") from exc
        await stream.aclose()

    def _new_client(self) -> Redis[bytes]:
        # Retries are the bridge's: a command fails at once when Redis is
        # down, so that the bridge can tell the app and back off.
        return Redis.from_url(
            self.url,
            retry_policy=NoRetryPolicy(),
            connect_timeout=self.timeout,
            stream_timeout=self.timeout,
        )

    @asynccontextmanager
    async def connected(self) -> AsyncIterator[None]:
        await self.reachable()
        client = self._new_client()
        try:
            async with client:
                self._client = client
                yield
        except BaseExceptionGroup as group:
            _raise_from(group)
        finally:
            self._client = None

    async def publish_many(
        self, messages: Sequence[tuple[str, bytes]], stream_maxlen: int | None
    ) -> list[Exception | None]:
        """Send ``messages`` (channel or stream, message), in order, in one
        round trip: ``PUBLISH`` each, or with ``stream_maxlen``, ``XADD``
        each to its stream, kept to about that many entries. Returns, for
        each, None, or the error Redis refused it with (a stream's key
        holding another type); raises :class:`BackendDown` if the connection
        failed (then any of them may have gone out) or Redis refuses commands
        whatever their key (out of memory, read-only)."""
        client = self._client
        if client is None:
            raise BackendDown("not connected")
        requests: list[Awaitable[object]] = []
        try:
            async with client.pipeline(transaction=False, raise_on_error=False) as pipe:
                for channel, message in messages:
                    if stream_maxlen is None:
                        requests.append(pipe.publish(channel, message))
                    else:
                        requests.append(
                            pipe.xadd(
                                channel,
                                {b"m": message},
                                trim_strategy=PureToken.MAXLEN,
                                threshold=stream_maxlen,
                                trim_operator=PureToken.APPROXIMATELY,
                            )
                        )
            outcomes: list[Exception | None] = []
            for request in requests:
                try:
                    await request
                except WrongTypeError as exc:
                    # This message's key holds something else: only it fails.
                    outcomes.append(exc)
                else:
                    outcomes.append(None)
        except BaseExceptionGroup as group:
            _raise_from(group)
        except _DOWN as exc:
            raise BackendDown(str(exc) or type(exc).__name__) from exc
        except RedisError as exc:
            # Every command fails (out of memory, read-only replica, ...):
            # kept, and sent again.
            raise BackendDown(f"Redis refused the messages: {exc}") from exc
        return outcomes

    @asynccontextmanager
    async def read(
        self, positions: dict[str, bytes], block: float
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Read the streams in ``positions`` (a stream's key: the id of the
        last entry taken from it, or ``b""`` for "from now on") from after
        those entries: yields an async iterator of the messages, which moves
        each stream's position as it gives its entries. ``block``: seconds a
        read waits for new entries before it asks again."""
        await self.reachable()
        client = self._new_client()
        try:
            async with client:
                for stream, position in positions.items():
                    if not position:
                        # From now on: after the last entry there is now.
                        last = await client.xrevrange(stream, "+", "-", count=1)
                        positions[stream] = _as_bytes(last[0].identifier) if last else b"0-0"

                async def messages() -> AsyncIterator[bytes]:
                    while True:
                        read = await client.xread(
                            dict(positions), count=100, block=int(block * 1000)
                        )
                        for stream, entries in (read or {}).items():
                            key = _as_bytes(stream).decode()
                            for entry in entries:
                                positions[key] = _as_bytes(entry.identifier)
                                message = entry.field_values.get(b"m")
                                if message is not None:
                                    yield _as_bytes(message)

                yield messages()
        except BaseExceptionGroup as group:
            _raise_from(group)
        except _DOWN as exc:
            raise BackendDown(str(exc) or type(exc).__name__) from exc

    @asynccontextmanager
    async def work(self, stream: str, group: str, consumer: str) -> AsyncIterator[WorkQueue]:
        """The consumer group ``group`` of ``stream`` (made if needed, taking
        the entries added from now on), as ``consumer``."""
        await self.reachable()
        client = self._new_client()
        try:
            async with client:
                with suppress(StreamDuplicateConsumerGroupError):  # made already
                    await client.xgroup_create(stream, group, "$", mkstream=True)
                yield WorkQueue(client, stream, group, consumer)
        except BaseExceptionGroup as group_error:
            _raise_from(group_error)
        except _DOWN as exc:
            raise BackendDown(str(exc) or type(exc).__name__) from exc

    @asynccontextmanager
    async def subscribe(self, channels: Sequence[str]) -> AsyncIterator[AsyncIterator[bytes]]:
        await self.reachable()
        client = self._new_client()
        try:
            async with (
                client,
                client.pubsub(
                    channels=list(channels),
                    retry_policy=NoRetryPolicy(),
                    ignore_subscribe_messages=True,
                ) as pubsub,
            ):

                async def messages() -> AsyncIterator[bytes]:
                    async for message in pubsub:
                        if message["type"] == "message":
                            data = message["data"]
                            yield data if isinstance(data, bytes) else str(data).encode()

                yield messages()
        except BaseExceptionGroup as group:
            _raise_from(group)
        except _DOWN as exc:
            raise BackendDown(str(exc) or type(exc).__name__) from exc


def _as_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


# Renew a consumer's claim on a pending entry, if it is still its own:
# XPENDING for that consumer, then XCLAIM with no idle minimum (which resets
# the entry's idle time). KEYS[1]: the stream; ARGV: group, entry, consumer.
# 1 if renewed, 0 if another consumer has it.
_RENEW = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1, ARGV[3])
if #pending == 0 then
    return 0
end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 1
"""


class WorkQueue:
    """One consumer of a stream's consumer group: each entry goes to one
    consumer of the group, stays pending until acknowledged, and is taken
    over by another consumer once it has been pending too long."""

    def __init__(self, client: Redis[bytes], stream: str, group: str, consumer: str) -> None:
        self.client = client
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self._cursor = b"0-0"

    async def next(self, min_idle: float, block: float) -> tuple[bytes, int, bytes] | None:
        """The next entry to run, as ``(id, times delivered, message)``, or
        None: first one pending for longer than ``min_idle`` seconds (its
        consumer died, or failed), now this consumer's; else a new one,
        waiting at most ``block`` seconds for it. One at a time: an entry
        fetched waits for no other to run, so it is not taken over while it
        waits. Entries that trimming removed while pending are logged."""
        try:
            # From where the last look stopped (Redis looks at a few pending
            # entries per call), round and round.
            claimed = await self.client.xautoclaim(
                self.stream, self.group, self.consumer, int(min_idle * 1000), self._cursor, count=1
            )
            self._cursor = _as_bytes(claimed[0])
            entries = cast("tuple[StreamEntry, ...]", claimed[1])
            lost = claimed[2] if len(claimed) > 2 else ()
            if lost:
                logger.error(
                    "%d sends pending in group %r of %s were trimmed from the stream "
                    "before they ran (raise stream_maxlen): %s",
                    len(lost),
                    self.group,
                    self.stream,
                    lost,
                )
            if entries:
                entry = entries[0]
                pending = cast(
                    "tuple[StreamPendingExt, ...]",
                    await self.client.xpending(
                        self.stream,
                        self.group,
                        entry.identifier,
                        entry.identifier,
                        1,
                        consumer=self.consumer,
                    ),
                )
                delivered = pending[0].delivered if pending else 1
                return (
                    _as_bytes(entry.identifier),
                    delivered,
                    _as_bytes(entry.field_values.get(b"m", b"")),
                )
            read = await self.client.xreadgroup(
                self.group,
                self.consumer,
                {self.stream: ">"},
                count=1,
                block=int(block * 1000),
            )
        except _DOWN as exc:
            raise BackendDown(str(exc) or type(exc).__name__) from exc
        for entries in (read or {}).values():
            for entry in entries:
                return (
                    _as_bytes(entry.identifier),
                    1,
                    _as_bytes(entry.field_values.get(b"m", b"")),
                )
        return None

    async def touch(self, entry: bytes) -> bool:
        """Reset the idle time of ``entry`` while this consumer runs it, so
        that no other takes it over; False if another has taken it."""
        try:
            # In one script, so that no other consumer takes the entry between
            # the check and the renewal.
            kept = await self.client.eval(
                _RENEW, keys=[self.stream], args=[self.group, entry, self.consumer]
            )
        except _DOWN as exc:
            raise BackendDown(str(exc) or type(exc).__name__) from exc
        return kept == 1

    async def claim(self, key: str, entry: bytes, ttl: int) -> bool:
        """Whether ``entry`` is the copy of its send to run: the first copy
        to claim ``key`` (kept ``ttl`` seconds) is, every time it is tried;
        another copy of the same send (one published twice) is not."""
        try:
            if await self.client.set(key, entry, condition=PureToken.NX, ex=ttl):
                return True
            return await self.client.get(key) == entry
        except _DOWN as exc:
            raise BackendDown(str(exc) or type(exc).__name__) from exc

    async def ack(self, entry: bytes) -> None:
        try:
            await self.client.xack(self.stream, self.group, [entry])
        except _DOWN as exc:
            raise BackendDown(str(exc) or type(exc).__name__) from exc

    async def dead_letter(
        self, entry: bytes, message: bytes, delivered: int, why: str, maxlen: int
    ) -> str:
        """Move the entry to the dead-letter stream (returned; it keeps about
        ``maxlen`` entries), acknowledged."""
        dead = f"{self.stream}:dead"
        try:
            await self.client.xadd(
                dead,
                {
                    b"m": message,
                    b"group": self.group.encode(),
                    b"entry": entry,
                    b"delivered": str(delivered).encode(),
                    b"reason": why.encode(),
                },
                trim_strategy=PureToken.MAXLEN,
                threshold=maxlen,
                trim_operator=PureToken.APPROXIMATELY,
            )
            await self.client.xack(self.stream, self.group, [entry])
        except _DOWN as exc:
            raise BackendDown(str(exc) or type(exc).__name__) from exc
        return dead

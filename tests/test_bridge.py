"""The Redis bridge in one process, against a real redis-server: what it
publishes, what it takes from "other processes" (a plain coredis client
that publishes as one would), what it refuses, and outages. The fan-out
across real OS processes is in test_bridge_processes.py."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
import pytest
from coredis import Redis
from coredis.tokens import PureToken
from redis_server import RedisServer, free_port
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import asignals
from asignals.bridge import (
    BridgeError,
    BridgeFullError,
    RedisBridge,
    _wire,
    bridge_connected,
    bridge_disconnected,
    origin,
)

pytestmark = pytest.mark.anyio

# Every wait in these tests is bounded by this many seconds.
WAIT = 10


@pytest.fixture
def signal() -> asignals.NamedSignal:
    """A shared signal of the test's own (each test a new one, so that the
    signal is shared by that test's bridge only)."""
    return asignals.NamedSignal("order-placed")


def remote_message(
    name: str,
    sender: Any = "shop",
    kwargs: dict[str, Any] | None = None,
    *,
    number: int = 1,
    from_: str = "other-host:1:abcd",
    app: bool = False,
    secret: bytes | None = None,
) -> bytes:
    """A message as another process's bridge publishes it."""
    envelope = _wire.Envelope(number, from_, name, sender, app, kwargs or {})
    return _wire.encode(envelope, secret, 1 << 20)


@asynccontextmanager
async def subscribed(url: str, channel: str) -> AsyncIterator[Callable[[], Any]]:
    """A plain subscriber: yields a function that waits for the next message."""
    client: Redis[bytes] = Redis.from_url(url)
    async with client, client.pubsub(channels=[channel], ignore_subscribe_messages=True) as pubsub:

        async def next_message() -> bytes:
            with anyio.fail_after(WAIT):
                async for message in pubsub:
                    if message["type"] == "message":
                        return message["data"]  # type: ignore[return-value]
            raise AssertionError("the subscription ended")

        yield next_message


async def publish(url: str, channel: str, message: bytes) -> None:
    client: Redis[bytes] = Redis.from_url(url)
    async with client:
        await client.publish(channel, message)


class Received:
    """A receiver that keeps what it got, and an event per call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, dict[str, Any], str | None, Any]] = []
        self._event = anyio.Event()

    def __call__(self, sender: Any, **kwargs: Any) -> None:
        current = asignals.current_app._get_current_object() if asignals.current_app else None
        self.calls.append((sender, kwargs, origin(), current))
        self._event.set()

    async def wait(self, count: int = 1) -> None:
        with anyio.fail_after(WAIT):
            while len(self.calls) < count:
                self._event = anyio.Event()
                await self._event.wait()


# What is refused at the send, before anything runs (no Redis needed).


def test_senders_that_cannot_cross_are_refused(signal: asignals.NamedSignal) -> None:
    bridge = RedisBridge("redis://127.0.0.1:1/0")
    bridge.share(signal)
    calls: list[Any] = []
    signal.connect(lambda sender, **kw: calls.append(sender), weak=False)
    with pytest.raises(TypeError, match=r"sender <object .*cannot cross.*plain value"):
        signal.send(object())
    with pytest.raises(TypeError, match="not a finite number"):
        signal.send(float("nan"))
    assert calls == []
    for sender in (None, "shop", 7, 1.5, True):
        signal.send(sender)
    assert calls == [None, "shop", 7, 1.5, True]


@pytest.mark.parametrize(
    ("value", "where", "what"),
    [
        ((1, 2), "'items'", "a tuple"),
        ({1, 2}, "'items'", "a set"),
        (b"raw", "'items'", "a bytes"),
        ({"a": [1, {2: 3}]}, r"'items'\['a'\]\[1\]", "a dict with the key 2"),
        ([1.0, float("inf")], r"'items'\[1\]", "inf"),
        (object(), "'items'", "a object"),
    ],
)
def test_arguments_that_json_cannot_carry_are_refused_naming_where(
    signal: asignals.NamedSignal, value: Any, where: str, what: str
) -> None:
    bridge = RedisBridge("redis://127.0.0.1:1/0")
    bridge.share(signal)
    with pytest.raises(TypeError, match=rf"argument {where} is {what}.*never pickled"):
        signal.send("shop", items=value)
    assert len(bridge._queue) == 0


def test_arguments_nested_too_deep_are_refused(signal: asignals.NamedSignal) -> None:
    bridge = RedisBridge("redis://127.0.0.1:1/0")
    bridge.share(signal)
    deep: list[Any] = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(TypeError, match="nested deeper than 64 levels"):
        signal.send("shop", items=deep)


def test_a_message_over_the_size_cap_is_refused_at_the_send(
    signal: asignals.NamedSignal,
) -> None:
    bridge = RedisBridge("redis://127.0.0.1:1/0", max_message_bytes=1000)
    bridge.share(signal)
    calls: list[Any] = []
    signal.connect(lambda sender, **kw: calls.append(sender), weak=False)
    with pytest.raises(ValueError, match=r"bridge message of 2,\d+ bytes.*max_message_bytes=1,000"):
        signal.send("shop", text="x" * 2000)
    assert calls == []
    signal.send("shop", text="x" * 100)
    assert calls == ["shop"]


def test_share_takes_named_signals_of_ones_own() -> None:
    bridge = RedisBridge("redis://127.0.0.1:1/0")
    with pytest.raises(TypeError, match="named signals"):
        bridge.share(asignals.Signal())
    with pytest.raises(TypeError, match="asignals' own signals"):
        bridge.share(asignals.request_started)
    first = asignals.NamedSignal("same-name")
    bridge.share(first)
    with pytest.raises(ValueError, match="another signal named 'same-name'"):
        bridge.share(asignals.NamedSignal("same-name"))
    with pytest.raises(RuntimeError, match="already shared through another bridge"):
        RedisBridge("redis://127.0.0.1:1/0").share(first)
    bridge.share(first)  # again: nothing changes
    assert bridge.shared == [first]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"mode": "carrier-pigeon"}, "mode must be"),
        ({"when_full": "block"}, "when_full must be"),
        ({"queue_size": 0}, "queue_size must be"),
        ({"reconnect_delay": (2.0, 1.0)}, "reconnect_delay must be"),
    ],
)
def test_bad_settings_say_what_is_expected(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RedisBridge("redis://127.0.0.1:1/0", **settings)
    with pytest.raises(ValueError, match="must be a Redis URL"):
        RedisBridge("http://127.0.0.1:6379")


def test_the_middleware_takes_only_a_bridge() -> None:
    with pytest.raises(TypeError, match="RedisBridge"):
        asignals.install(Starlette(), bridge="redis://127.0.0.1:6379")  # type: ignore[arg-type]


# Against a real redis-server.


async def test_a_send_runs_here_and_is_published(
    redis_server: RedisServer, signal: asignals.NamedSignal
) -> None:
    bridge = RedisBridge(redis_server.url)
    bridge.share(signal)
    local = Received()
    signal.connect(local, weak=False)
    async with bridge, subscribed(redis_server.url, "asignals:order-placed") as next_message:
        await signal.send_async("shop", order_id=7, lines=[{"sku": "a", "qty": 2}])
        signal.send(3, note=None)
        with anyio.fail_after(WAIT):
            await bridge.flush()
        first = _wire.decode(await next_message(), None, 1 << 20)
        second = _wire.decode(await next_message(), None, 1 << 20)
    assert [c[:3] for c in local.calls] == [
        ("shop", {"order_id": 7, "lines": [{"sku": "a", "qty": 2}]}, None),
        (3, {"note": None}, None),
    ]
    assert (first.origin, first.number, first.signal) == (bridge.id, 1, "order-placed")
    assert (first.sender, first.app, first.kwargs) == (
        "shop",
        False,
        {"order_id": 7, "lines": [{"sku": "a", "qty": 2}]},
    )
    assert (second.number, second.sender, second.kwargs) == (2, 3, {"note": None})
    assert bridge.stats["published"] == 2


async def test_a_send_from_elsewhere_runs_the_receivers_here_in_the_background(
    redis_server: RedisServer, signal: asignals.NamedSignal
) -> None:
    bridge = RedisBridge(redis_server.url)
    bridge.share(signal)
    received = Received()
    signal.connect(received, weak=False)
    async with bridge:
        await publish(
            redis_server.url,
            "asignals:order-placed",
            remote_message("order-placed", "shop", {"order_id": 7}),
        )
        await received.wait()
    sender, kwargs, where, _ = received.calls[0]
    assert (sender, kwargs, where) == ("shop", {"order_id": 7}, "other-host:1:abcd")
    assert bridge.stats["received"] == 1


async def test_own_sends_do_not_come_back_and_sends_from_receivers_of_remote_ones_stay_here(
    redis_server: RedisServer, signal: asignals.NamedSignal
) -> None:
    bridge = RedisBridge(redis_server.url)
    bridge.share(signal)
    received = Received()
    cascades: list[str | None] = []

    def cascade(sender: Any, **kwargs: Any) -> None:
        if sender == "remote":
            # A send by a receiver of a send from elsewhere: not published.
            signal.send("cascade")
        cascades.append(origin())

    signal.connect(received, weak=False)
    signal.connect(cascade, weak=False)
    async with bridge, subscribed(redis_server.url, "asignals:order-placed") as next_message:
        signal.send("local")
        with anyio.fail_after(WAIT):
            await bridge.flush()
        own = await next_message()
        # The bridge saw its own message too, and ran nothing for it.
        await publish(redis_server.url, "asignals:order-placed", own)
        await publish(
            redis_server.url, "asignals:order-placed", remote_message("order-placed", "remote")
        )
        await received.wait(3)  # local, remote, cascade
        with anyio.fail_after(WAIT):
            await bridge.flush()
        # Nothing more was published: the next message is one of ours.
        await publish(redis_server.url, "asignals:order-placed", b"marker")
        assert await next_message() == own
        assert await next_message() == remote_message("order-placed", "remote")
        assert await next_message() == b"marker"
    assert [c[0] for c in received.calls] == ["local", "remote", "cascade"]
    assert [c[2] for c in received.calls] == [None, "other-host:1:abcd", "other-host:1:abcd"]
    assert bridge.stats["published"] == 1


async def test_a_send_that_arrives_twice_runs_once(
    redis_server: RedisServer, signal: asignals.NamedSignal
) -> None:
    bridge = RedisBridge(redis_server.url)
    bridge.share(signal)
    received = Received()
    signal.connect(received, weak=False)
    async with bridge:
        for number in (1, 2, 2, 1, 3):
            await publish(
                redis_server.url,
                "asignals:order-placed",
                remote_message("order-placed", number, number=number),
            )
        await received.wait(3)
        # A last one, from another process, shows the duplicates were taken.
        await publish(
            redis_server.url,
            "asignals:order-placed",
            remote_message("order-placed", "last", from_="third:1:ef"),
        )
        await received.wait(4)
    assert sorted(c[0] for c in received.calls[:3]) == [1, 2, 3]
    assert received.calls[3][0] == "last"
    assert bridge.stats["duplicates"] == 2


async def test_messages_that_cannot_be_taken_are_logged_and_skipped(
    redis_server: RedisServer, signal: asignals.NamedSignal, caplog: pytest.LogCaptureFixture
) -> None:
    bridge = RedisBridge(redis_server.url, secret="s3cret", max_message_bytes=4000)
    bridge.share(signal)
    received = Received()
    signal.connect(received, weak=False)
    channel = "asignals:order-placed"
    key = b"s3cret"

    def signed(payload: bytes) -> bytes:
        return b" ".join((_wire.TAG, b"x", _wire._sign(key, payload), payload))

    bad = [
        b"hello",  # foreign
        signed(b"{not json"),
        remote_message("order-placed", "unsigned", number=1),
        remote_message("order-placed", "forged", number=2, secret=b"wrong"),
        remote_message("order-placed", "big", {"x": "y" * 5000}, number=3, secret=key),
        remote_message("another-signal", "other", number=4, secret=key),
        signed(json.dumps({"n": 5, "origin": "x"}).encode()),
        # Signed, but sent as another process than its payload says.
        remote_message("order-placed", "liar", number=7, secret=key).replace(
            b"other-host:1:abcd", b"liar", 1
        ),
    ]
    with caplog.at_level(logging.WARNING, logger="asignals"):
        async with bridge:
            for message in bad:
                await publish(redis_server.url, channel, message)
            await publish(
                redis_server.url,
                channel,
                remote_message("order-placed", "good", number=6, secret=key),
            )
            await received.wait()
    assert [c[0] for c in received.calls] == ["good"]
    assert bridge.stats["refused"] == len(bad)
    text = caplog.text
    for why in (
        "not an asignals message",
        "not JSON",
        "an unsigned message",
        "signature does not match",
        "over 4,000",
        "without 'signal'",
        "whose payload says",
    ):
        assert why in text


async def test_a_bridge_with_a_secret_signs_what_it_sends(
    redis_server: RedisServer, signal: asignals.NamedSignal
) -> None:
    bridge = RedisBridge(redis_server.url, secret=b"s3cret")
    bridge.share(signal)
    async with bridge, subscribed(redis_server.url, "asignals:order-placed") as next_message:
        signal.send("shop")
        message = await next_message()
    assert _wire.decode(message, b"s3cret", 1 << 20).sender == "shop"
    with pytest.raises(_wire.MessageError, match="signature"):
        _wire.decode(message, b"other", 1 << 20)


async def test_starting_without_redis_fails_after_the_connect_timeout(
    signal: asignals.NamedSignal, tmp_path: Any
) -> None:
    bridge = RedisBridge(
        f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.5, reconnect_delay=(0.05, 0.1)
    )
    bridge.share(signal)
    with anyio.fail_after(WAIT), pytest.raises(BridgeError, match=r"within connect_timeout=0\.5"):
        async with bridge:
            pass


async def test_redis_restarted_tells_the_app_and_publishes_what_waited(
    redis_server: RedisServer, signal: asignals.NamedSignal
) -> None:
    bridge = RedisBridge(redis_server.url, reconnect_delay=(0.05, 0.2))
    bridge.share(signal)
    events: list[tuple[str, Any]] = []
    changed = anyio.Event()

    def on_connected(sender: Any, reconnect: bool) -> None:
        events.append(("connected", reconnect))
        changed.set()

    def on_disconnected(sender: Any, error: BaseException) -> None:
        events.append(("disconnected", sender))
        changed.set()

    async def until(count: int) -> None:
        nonlocal changed
        with anyio.fail_after(WAIT):
            while len(events) < count:
                changed = anyio.Event()
                await changed.wait()

    with (
        bridge_connected.connected_to(on_connected, sender=bridge),
        bridge_disconnected.connected_to(on_disconnected, sender=bridge),
    ):
        async with bridge:
            await until(1)
            redis_server.kill()
            await until(2)
            # Sent while Redis is down: kept, and published once it is back.
            signal.send("while-down")
            redis_server.start()
            await until(3)
            async with subscribed(redis_server.url, "asignals:order-placed") as next_message:
                signal.send("after")
                with anyio.fail_after(WAIT):
                    await bridge.flush()
                got = [_wire.decode(await next_message(), None, 1 << 20).sender]
    assert events == [("connected", False), ("disconnected", bridge), ("connected", True)]
    assert bridge.stats["reconnects"] == 1
    # "while-down" may have gone out before the test's subscriber was there.
    assert got in (["after"], ["while-down"])
    assert bridge.stats["published"] == 2


async def test_a_full_queue_drops_with_a_log_line_and_a_count_or_raises(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    dropping_signal = asignals.NamedSignal("dropping")
    raising_signal = asignals.NamedSignal("raising")
    dropping = RedisBridge(redis_server.url, queue_size=2, reconnect_delay=(0.2, 0.2))
    dropping.share(dropping_signal)
    raising = RedisBridge(
        redis_server.url, queue_size=2, when_full="raise", reconnect_delay=(0.2, 0.2)
    )
    raising.share(raising_signal)
    local: list[Any] = []
    dropping_signal.connect(lambda sender, **kw: local.append(sender), weak=False)
    raising_signal.connect(lambda sender, **kw: local.append(sender), weak=False)
    with caplog.at_level(logging.ERROR, logger="asignals"):
        async with dropping, raising:
            redis_server.kill()
            for n in range(4):
                dropping_signal.send(n)
            raising_signal.send("a")
            raising_signal.send("b")
            with pytest.raises(BridgeFullError, match="queue_size=2"):
                raising_signal.send("c")
            redis_server.start()
    # Dropped sends still ran here; a refused one did not.
    assert local == [0, 1, 2, 3, "a", "b"]
    assert dropping.stats["dropped"] == 2
    assert raising.stats["dropped"] == 0
    assert "outbound queue is full" in caplog.text


def test_install_starts_and_stops_the_bridge_with_the_lifespan(
    redis_server: RedisServer, signal: asignals.NamedSignal, anyio_backend: str
) -> None:
    app = Starlette()
    bridge = RedisBridge(redis_server.url)
    bridge.share(signal)
    asignals.install(app, bridge=bridge, name="shop")
    remote: list[tuple[Any, str | None, Any]] = []
    arrived = threading.Event()

    def receiver(sender: Any, **kwargs: Any) -> None:
        if origin() is not None:
            remote.append((sender, origin(), asignals.current_app._get_current_object()))
            arrived.set()

    signal.connect(receiver, weak=False)
    channel = "asignals:order-placed"
    with TestClient(app, backend=anyio_backend) as client:
        assert repr(bridge).endswith("running>")
        client.portal.call(publish, redis_server.url, channel, remote_message("x", app=True))
        client.portal.call(
            publish, redis_server.url, channel, remote_message("order-placed", app=True, number=2)
        )
        assert arrived.wait(WAIT)
        message = client.portal.call(_sent_by_the_app, redis_server.url, bridge, signal, app)
    assert repr(bridge).endswith("closed>")
    published = _wire.decode(message, None, 1 << 20)
    assert published.app is True
    assert published.sender is None
    # The app as sender crossed as "the app", and arrived as this app.
    assert remote == [(app, "other-host:1:abcd", app)]
    assert bridge.stats["refused"] == 1  # the message for signal "x"


async def _sent_by_the_app(
    url: str, bridge: RedisBridge, signal: asignals.NamedSignal, app: Starlette
) -> bytes:
    async with subscribed(url, "asignals:order-placed") as next_message:
        async with asignals.app_context(app):
            await signal.send_async(app)
        with anyio.fail_after(WAIT):
            await bridge.flush()
        return await next_message()  # type: ignore[no-any-return]


# Stream mode: at least once, resumed after the last send taken.


async def xadd(url: str, stream: str, *messages: bytes) -> None:
    client: Redis[bytes] = Redis.from_url(url)
    async with client:
        for message in messages:
            await client.xadd(stream, {b"m": message})


async def test_stream_mode_appends_each_send_and_runs_those_from_elsewhere(
    redis_server: RedisServer, signal: asignals.NamedSignal
) -> None:
    bridge = RedisBridge(redis_server.url, mode="stream", stream_maxlen=50)
    bridge.share(signal)
    received = Received()
    signal.connect(received, weak=False)
    client: Redis[bytes] = Redis.from_url(redis_server.url)
    async with client:
        # Before the bridge starts: not taken (a process starts from now on).
        await xadd(redis_server.url, "asignals:order-placed", remote_message("order-placed", "old"))
        async with bridge:
            signal.send("here", n=1)
            with anyio.fail_after(WAIT):
                await bridge.flush()
            await xadd(
                redis_server.url,
                "asignals:order-placed",
                remote_message("order-placed", "there", number=2),
            )
            await received.wait(2)
        entries = await client.xrange("asignals:order-placed")
        for _ in range(100):
            await client.xadd(
                "asignals:order-placed",
                {b"m": b"x"},
                trim_strategy=PureToken.MAXLEN,
                threshold=50,
            )
        kept = await client.xlen("asignals:order-placed")
    assert [(c[0], c[2]) for c in received.calls] == [
        ("here", None),
        ("there", "other-host:1:abcd"),
    ]
    ours = _wire.decode(entries[1].field_values[b"m"], None, 1 << 20)
    assert (ours.origin, ours.sender, ours.kwargs) == (bridge.id, "here", {"n": 1})
    assert kept == 50


async def test_stream_mode_resumes_after_the_last_send_taken_and_runs_each_once(
    redis_server: RedisServer, signal: asignals.NamedSignal
) -> None:
    bridge = RedisBridge(redis_server.url, mode="stream", reconnect_delay=(0.05, 0.1))
    bridge.share(signal)
    received = Received()
    signal.connect(received, weak=False)
    reconnected = anyio.Event()

    def on_connected(sender: Any, reconnect: bool) -> None:
        if reconnect:
            reconnected.set()

    stream = "asignals:order-placed"
    with bridge_connected.connected_to(on_connected, sender=bridge):
        async with bridge:
            await xadd(
                redis_server.url,
                stream,
                *(remote_message("order-placed", n, number=n) for n in (1, 2)),
            )
            await received.wait(2)
            # Every connection but the test's own dropped: the bridge's
            # listener reconnects, and the sends made meanwhile reach it.
            client: Redis[bytes] = Redis.from_url(redis_server.url)
            async with client:
                await client.client_kill(type_=PureToken.NORMAL, skipme=True)
                await client.xadd(stream, {b"m": remote_message("order-placed", 3, number=3)})
                # Published twice (a retry): runs once.
                await client.xadd(stream, {b"m": remote_message("order-placed", 3, number=3)})
                await client.xadd(stream, {b"m": remote_message("order-placed", 4, number=4)})
            with anyio.fail_after(WAIT):
                await reconnected.wait()
            await received.wait(4)
            await xadd(redis_server.url, stream, remote_message("order-placed", "last", number=5))
            await received.wait(5)
    # Each once; in any order, as background sends run side by side.
    assert sorted(c[0] for c in received.calls[:4]) == [1, 2, 3, 4]
    assert received.calls[4][0] == "last"
    assert bridge.stats["duplicates"] == 1


async def test_stream_mode_loses_and_repeats_nothing_over_a_redis_restart(
    persistent_redis_server: RedisServer, signal: asignals.NamedSignal
) -> None:
    server = persistent_redis_server
    bridge = RedisBridge(server.url, mode="stream", reconnect_delay=(0.05, 0.1))
    bridge.share(signal)
    received = Received()
    signal.connect(received, weak=False)
    stream = "asignals:order-placed"
    async with bridge:
        await xadd(server.url, stream, remote_message("order-placed", 1, number=1))
        await received.wait(1)
        await xadd(
            server.url, stream, *(remote_message("order-placed", n, number=n) for n in (2, 3))
        )
        server.kill()
        # Sent while Redis is down: kept in the outbound queue.
        signal.send("while-down")
        server.start()
        await xadd(server.url, stream, remote_message("order-placed", 4, number=4))
        with anyio.fail_after(WAIT):
            await bridge.flush()
        await received.wait(5)
        client: Redis[bytes] = Redis.from_url(server.url)
        async with client:
            entries = await client.xrange(stream)
    remote = [c[0] for c in received.calls if c[2] is not None]
    assert sorted(remote) == [1, 2, 3, 4]
    assert [c[0] for c in received.calls if c[2] is None] == ["while-down"]
    senders = [_wire.decode(e.field_values[b"m"], None, 1 << 20).sender for e in entries]
    assert senders == [1, 2, 3, 4, "while-down"] or senders == [1, 2, 3, "while-down", 4]


# Exclusive receivers: once per send across processes.


async def pending_count(url: str, stream: str, group: str) -> int:
    client: Redis[bytes] = Redis.from_url(url)
    async with client:
        summary = await client.xpending(stream, group)
    return int(summary.pending)  # type: ignore[union-attr]


def test_exclusive_receivers_need_stream_mode(signal: asignals.NamedSignal) -> None:
    bridge = RedisBridge("redis://127.0.0.1:1/0")
    with pytest.raises(ValueError, match='need mode="stream"'):
        bridge.exclusive(signal, lambda sender, **kw: None)
    streaming = RedisBridge("redis://127.0.0.1:1/0", mode="stream")

    @streaming.exclusive(signal, name="mail")
    def mail(sender: Any, **kwargs: Any) -> None: ...

    assert streaming.shared == [signal]
    with pytest.raises(ValueError, match="already has an exclusive receiver named 'mail'"):
        streaming.exclusive(signal, lambda sender, **kw: None, name="mail")


async def test_an_exclusive_receiver_runs_once_and_acknowledges_after_success(
    redis_server: RedisServer, signal: asignals.NamedSignal
) -> None:
    bridge = RedisBridge(redis_server.url, mode="stream")
    ran = Received()
    connected = Received()
    signal.connect(connected, weak=False)
    attempts: list[int] = []

    @bridge.exclusive(signal, name="mail", idle_timeout=0.2)
    async def mail(sender: Any, **kwargs: Any) -> None:
        attempts.append(kwargs["n"])
        if kwargs["n"] == 2 and attempts.count(2) == 1:
            raise RuntimeError("the mail server is down")
        await anyio.lowlevel.checkpoint()
        ran(sender, **kwargs)

    reported: list[BaseException] = []
    with asignals.got_background_exception.connected_to(
        lambda sender, exception: reported.append(exception)
    ):
        async with bridge:
            signal.send("here", n=1)  # this process's own send: handled here too
            await xadd(
                redis_server.url,
                "asignals:order-placed",
                remote_message("order-placed", "there", {"n": 2}, number=1),
                b"garbage",
            )
            await ran.wait(2)
            assert await pending_count(redis_server.url, "asignals:order-placed", "mail") == 0
    assert sorted((c[0], c[2]) for c in ran.calls) == [
        ("here", None),
        ("there", "other-host:1:abcd"),
    ]
    assert attempts.count(1) == 1
    assert attempts.count(2) == 2
    # The local receiver ran for the local send only; the remote one's
    # receivers run through the listener, as for any shared signal.
    assert sorted(c[0] for c in connected.calls) == ["here", "there"]
    assert [str(e) for e in reported] == ["the mail server is down"]
    assert bridge.stats["exclusive_done"] == 2
    assert bridge.stats["exclusive_failed"] == 1
    # The garbage, refused by the listener and by the exclusive receiver's
    # group, each reading the stream.
    assert bridge.stats["refused"] == 2


async def test_a_send_that_keeps_failing_goes_to_the_dead_letter_stream(
    redis_server: RedisServer, signal: asignals.NamedSignal
) -> None:
    bridge = RedisBridge(redis_server.url, mode="stream")
    attempts: list[Any] = []

    @bridge.exclusive(signal, name="mail", idle_timeout=0.05, max_failures=2)
    def mail(sender: Any, **kwargs: Any) -> None:
        attempts.append(sender)
        raise ValueError("bad address")

    reported: list[BaseException] = []
    dead_letter = anyio.Event()

    def on_error(sender: Any, exception: BaseException) -> None:
        reported.append(exception)
        if isinstance(exception, BridgeError):
            dead_letter.set()

    with asignals.got_background_exception.connected_to(on_error):
        async with bridge:
            signal.send("doomed")
            with anyio.fail_after(WAIT):
                await dead_letter.wait()
        client: Redis[bytes] = Redis.from_url(redis_server.url)
        async with client:
            dead = await client.xrange("asignals:order-placed:dead")
    assert attempts == ["doomed", "doomed"]
    assert [type(e).__name__ for e in reported] == ["ValueError", "ValueError", "BridgeError"]
    assert "did not finish it in 2 attempts" in str(reported[-1])
    assert len(dead) == 1
    fields = dead[0].field_values
    assert fields[b"group"] == b"mail"
    assert fields[b"delivered"] == b"2"
    assert _wire.decode(fields[b"m"], None, 1 << 20).sender == "doomed"
    assert bridge.stats["dead_letters"] == 1
    assert await pending_count(redis_server.url, "asignals:order-placed", "mail") == 0


# What must not stop a bridge, hang it, or lose a send silently.


@pytest.mark.parametrize("mode", ["pubsub", "stream"])
async def test_redis_killed_mid_traffic_does_not_stop_the_bridge(
    redis_server: RedisServer, signal: asignals.NamedSignal, mode: Any
) -> None:
    bridge = RedisBridge(redis_server.url, mode=mode, reconnect_delay=(0.02, 0.1))
    bridge.share(signal)
    async with bridge:
        for n in range(300):
            signal.send(n)
            if n == 100:
                redis_server.kill()
                redis_server.start()
            if n % 20 == 0:
                await anyio.lowlevel.checkpoint()
        with anyio.fail_after(WAIT):
            await bridge.flush()
        assert repr(bridge).endswith("running>")
    # Kept while Redis was away, then published: none dropped.
    assert bridge.stats["published"] == 300
    assert bridge.stats["dropped"] == 0


async def test_a_message_nested_too_deep_does_not_stop_the_listener(
    redis_server: RedisServer, signal: asignals.NamedSignal
) -> None:
    bridge = RedisBridge(redis_server.url)
    bridge.share(signal)
    received = Received()
    signal.connect(received, weak=False)
    async with bridge:
        channel = "asignals:order-placed"
        await publish(redis_server.url, channel, b"asignals1 x - " + b"[" * 200_000)
        await publish(redis_server.url, channel, b'asignals1 x - {"n": NaN}')
        await publish(redis_server.url, channel, remote_message("order-placed", "after"))
        await received.wait()
    assert [c[0] for c in received.calls] == ["after"]
    assert bridge.stats["refused"] == 2


async def test_flush_returns_at_shutdown_and_after_a_restart(
    redis_server: RedisServer, signal: asignals.NamedSignal
) -> None:
    bridge = RedisBridge(redis_server.url, grace=0, reconnect_delay=(5.0, 5.0))
    bridge.share(signal)
    flushed = anyio.Event()

    async def flush_then_note() -> None:
        await bridge.flush()
        flushed.set()

    async with anyio.create_task_group() as tasks:
        async with bridge:
            redis_server.kill()
            signal.send("never")  # waits: Redis is gone for 5 s
            tasks.start_soon(flush_then_note)
            await anyio.lowlevel.checkpoint()
        # The shutdown dropped it (grace=0), logged and counted, and the
        # flush waiting for it returned.
        with anyio.fail_after(WAIT):
            await flushed.wait()
    assert bridge.stats["dropped"] == 1
    redis_server.start()
    async with bridge:
        signal.send("again")
        with anyio.fail_after(WAIT):
            await bridge.flush()
    assert bridge.stats["published"] == 1


async def test_a_second_start_is_refused_and_leaves_the_first_running(
    redis_server: RedisServer, signal: asignals.NamedSignal
) -> None:
    bridge = RedisBridge(redis_server.url)
    bridge.share(signal)
    async with bridge:
        with pytest.raises(BridgeError, match="already running"):
            async with bridge:
                pass
        assert repr(bridge).endswith("running>")
        signal.send("still")
        with anyio.fail_after(WAIT):
            await bridge.flush()
    assert bridge.stats["published"] == 1


async def test_another_bridge_takes_over_a_signal_once_the_first_shut_down(
    redis_server: RedisServer, signal: asignals.NamedSignal
) -> None:
    first = RedisBridge(redis_server.url)
    first.share(signal)
    async with first:
        pass
    second = RedisBridge(redis_server.url)
    second.share(signal)
    assert first.shared == []
    async with second:
        signal.send("through the second")
        with anyio.fail_after(WAIT):
            await second.flush()
    assert (first.stats["published"], first.stats["dropped"]) == (0, 0)
    assert second.stats["published"] == 1


def test_sends_of_the_apps_own_shutdown_code_are_published(
    redis_server: RedisServer, signal: asignals.NamedSignal, anyio_backend: str
) -> None:
    bridge = RedisBridge(redis_server.url)
    bridge.share(signal)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await signal.send_async("shutting down")

    app = asignals.install(Starlette(lifespan=lifespan), bridge=bridge, name="shop")
    with TestClient(app, backend=anyio_backend):
        pass
    assert bridge.stats["published"] == 1
    assert bridge.stats["dropped"] == 0


def test_an_app_whose_bridge_runs_elsewhere_fails_to_start_and_leaves_it_running(
    redis_server: RedisServer, signal: asignals.NamedSignal, anyio_backend: str
) -> None:
    bridge = RedisBridge(redis_server.url)
    bridge.share(signal)
    first = asignals.install(Starlette(), bridge=bridge, name="first")
    second = asignals.install(Starlette(), bridge=bridge, name="second")
    with TestClient(first, backend=anyio_backend) as client:
        with (
            pytest.raises(BridgeError, match="already running"),
            TestClient(second, backend=anyio_backend),
        ):
            pass
        assert repr(bridge).endswith("running>")
        client.portal.call(_send_and_flush, bridge, signal)
    assert bridge.stats["published"] == 1


async def _send_and_flush(bridge: RedisBridge, signal: asignals.NamedSignal) -> None:
    signal.send("first app")
    with anyio.fail_after(WAIT):
        await bridge.flush()


def test_a_background_send_of_a_shared_signal_is_published(
    redis_server: RedisServer, signal: asignals.NamedSignal, anyio_backend: str
) -> None:
    bridge = RedisBridge(redis_server.url)
    bridge.share(signal)
    ran = threading.Event()
    signal.connect(lambda sender, **kwargs: ran.set(), weak=False)

    async def order(request: Any) -> Any:
        signal.send_background("shop", order_id=7)
        return JSONResponse({"ok": True})

    app = asignals.install(
        Starlette(routes=[Route("/order", order, methods=["POST"])]), bridge=bridge, name="shop"
    )
    with TestClient(app, backend=anyio_backend) as client:
        message = client.portal.call(_published_by, redis_server.url, client, "/order")
        assert ran.wait(WAIT)
    envelope = _wire.decode(message, None, 1 << 20)
    assert (envelope.sender, envelope.kwargs) == ("shop", {"order_id": 7})


async def _published_by(url: str, client: TestClient, path: str) -> bytes:
    async with subscribed(url, "asignals:order-placed") as next_message:
        await anyio.to_thread.run_sync(client.post, path)
        return await next_message()  # type: ignore[no-any-return]


async def test_stream_mode_takes_every_send_of_a_process_that_shares_several_signals(
    redis_server: RedisServer, signal: asignals.NamedSignal
) -> None:
    other = asignals.NamedSignal("order-shipped")
    bridge = RedisBridge(redis_server.url, mode="stream")
    bridge.share(signal, other)
    received = Received()
    signal.connect(received, weak=False)
    other.connect(received, weak=False)
    async with bridge:
        # One process's sends alternate between the two signals: its numbers
        # run across both, and each stream is read on its own.
        client: Redis[bytes] = Redis.from_url(redis_server.url)
        # All at once: a read then gets one stream's entries, then the
        # other's, out of the order of their numbers.
        async with client, client.pipeline(transaction=True) as pipe:
            for n in range(1, 21):
                name = "order-placed" if n % 2 else "order-shipped"
                pipe.xadd(f"asignals:{name}", {b"m": remote_message(name, n, number=n)})
        await received.wait(20)
    assert sorted(c[0] for c in received.calls) == list(range(1, 21))
    assert bridge.stats["duplicates"] == 0


async def test_an_exclusive_receiver_slower_than_idle_timeout_keeps_its_send(
    redis_server: RedisServer, signal: asignals.NamedSignal
) -> None:
    bridge = RedisBridge(redis_server.url, mode="stream")
    finished = anyio.Event()

    @bridge.exclusive(signal, name="slow", idle_timeout=0.3)
    async def slow(sender: Any, **kwargs: Any) -> None:
        await anyio.sleep(1.2)  # four times idle_timeout
        finished.set()

    stolen: list[Any] = []
    async with bridge:
        signal.send("work")
        client: Redis[bytes] = Redis.from_url(redis_server.url)
        async with client:
            # Another process of the group, trying to take over what has
            # been idle for idle_timeout, as long as the receiver runs.
            with anyio.fail_after(WAIT):
                while not finished.is_set():
                    claimed = await client.xautoclaim(
                        "asignals:order-placed", "slow", "thief", 300, "0-0", count=10
                    )
                    stolen.extend(claimed[1])
                    with anyio.move_on_after(0.1):
                        await finished.wait()
    assert stolen == []
    assert bridge.stats["exclusive_done"] == 1


async def test_a_send_redis_refuses_is_dropped_with_a_log_line_and_the_rest_go_out(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    good, bad = asignals.NamedSignal("good"), asignals.NamedSignal("bad")
    bridge = RedisBridge(redis_server.url, mode="stream")
    bridge.share(good, bad)
    client: Redis[bytes] = Redis.from_url(redis_server.url)
    async with client:
        with caplog.at_level(logging.ERROR, logger="asignals"):
            async with bridge:
                # The bad signal's stream key holds a string: XADD fails.
                await client.set("asignals:bad", "not a stream")
                for n in range(3):
                    good.send(n)
                bad.send("refused")
                good.send(3)
                with anyio.fail_after(WAIT):
                    await bridge.flush()
        kept = await client.xlen("asignals:good")
    assert kept == 4
    assert bridge.stats["published"] == 4
    assert bridge.stats["dropped"] == 1
    assert "Redis refused sends on asignals:bad" in caplog.text


async def test_a_send_made_while_a_send_from_elsewhere_is_handled_is_said_to_stay(
    redis_server: RedisServer, signal: asignals.NamedSignal, caplog: pytest.LogCaptureFixture
) -> None:
    bridge = RedisBridge(redis_server.url)
    bridge.share(signal)
    cascaded = anyio.Event()

    def cascade(sender: Any, **kwargs: Any) -> None:
        if sender == "remote":
            signal.send("cascade")
            signal.send("cascade again")
            cascaded.set()

    signal.connect(cascade, weak=False)
    received = Received()
    signal.connect(received, weak=False)
    with caplog.at_level(logging.WARNING, logger="asignals"):
        async with bridge:
            # A send from elsewhere whose receivers send nothing: no word.
            await publish(
                redis_server.url,
                "asignals:order-placed",
                remote_message("order-placed", "quiet", number=1),
            )
            await received.wait()
            assert "stays in this process" not in caplog.text
            await publish(
                redis_server.url,
                "asignals:order-placed",
                remote_message("order-placed", "remote", number=2),
            )
            with anyio.fail_after(WAIT):
                await cascaded.wait()
    assert caplog.text.count("stays in this process") == 1
    assert bridge.stats["published"] == 0


def test_the_app_shuts_down_once_its_exclusive_receivers_are_done(
    redis_server: RedisServer, signal: asignals.NamedSignal, anyio_backend: str
) -> None:
    bridge = RedisBridge(redis_server.url, mode="stream")
    events: list[str] = []
    running = threading.Event()

    @bridge.exclusive(signal, name="mail", idle_timeout=5)
    async def mail(sender: Any, **kwargs: Any) -> None:
        events.append("receiver started")
        running.set()
        await anyio.sleep(0.3)
        events.append("receiver done")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        events.append("app's shutdown code")

    app = asignals.install(Starlette(lifespan=lifespan), bridge=bridge, name="shop")
    with TestClient(app, backend=anyio_backend) as client:
        client.portal.call(_send_and_flush, bridge, signal)
        assert running.wait(WAIT)
    assert events == ["receiver started", "receiver done", "app's shutdown code"]
    assert bridge.stats["exclusive_done"] == 1

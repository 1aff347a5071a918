"""The documentation's examples do what the pages say. (tests/test_docs.py
runs every block; these look closer at some.)"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from coredis import Redis
from docs_blocks import DOCS, blocks, runs
from redis_server import RedisServer
from starlette.testclient import TestClient

from asignals.bridge import _wire, origin


@pytest.fixture(autouse=True)
def _collected() -> Iterator[None]:
    """An example's namespace and its functions refer to each other: collect
    them after each test, so that the receivers it connected weakly to
    global signals are gone before the next test."""
    yield
    gc.collect()


def _python(page: str, containing: str = "") -> list[str]:
    """The Python blocks of ``docs/page`` that the runner runs, those that
    contain ``containing``."""
    return [block.code for block in blocks(DOCS / page) if runs(block) and containing in block.code]


def test_the_templates_and_flash_example_flashes_redirects_and_renders(
    anyio_backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    (code,) = _python("templates-and-flash.md", "SessionMiddleware")
    (template,) = [b.code for b in blocks(DOCS / "templates-and-flash.md") if b.language == "jinja"]
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "home.html").write_text(template)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs", "exec"), namespace)

    with TestClient(namespace["app"], backend=anyio_backend) as client:
        response = client.post("/save")
        again = client.get("/")

    assert response.status_code == 200
    assert [r.url.path for r in response.history] == ["/save"]
    assert '<p class="info">Saved.</p>' in response.text
    assert "Saved." not in again.text
    assert capsys.readouterr().out.splitlines() == [
        "flashed info Saved.",
        "rendered home.html",
        "rendered home.html",
    ]


def test_the_background_example_answers_then_mails_and_reports(
    anyio_backend: str, capsys: Any, caplog: pytest.LogCaptureFixture
) -> None:
    (code,) = _python("background.md", "def checkout")
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs", "exec"), namespace)

    with TestClient(namespace["app"], backend=anyio_backend) as client:
        response = client.post("/checkout")
        assert response.text == "thanks"
    # The lifespan's shutdown waited for the background send.

    assert capsys.readouterr().out.splitlines() == [
        "receipt for order 42 mailed to ada",
        "background receiver failed: LookupError('no stock for order 42')",
    ]
    (record,) = caplog.records
    assert record.name == "asignals"
    assert "update_stock" in record.getMessage()


def test_the_observers_example_runs_and_stops_observing(capsys: Any) -> None:
    (code,) = _python("core.md", "class SlowReceivers")
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs", "exec"), namespace)

    assert capsys.readouterr().out == ""  # nothing slow, nothing failed
    saved = namespace["saved"]
    assert saved._observers is None

    def broken(sender: Any, **kwargs: Any) -> None:
        raise LookupError(sender)

    saved.connect(broken)
    with namespace["observe"](namespace["SlowReceivers"](), saved), pytest.raises(LookupError):
        saved.send("doc-2")
    assert "sync send of" in capsys.readouterr().out


def test_the_bridge_examples_clear_every_workers_cache_and_run_exclusively(
    anyio_backend: str, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_example, exclusive_example = _python("bridge.md")
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    namespace: dict[str, Any] = {}
    exec(compile(cache_example, "docs", "exec"), namespace)
    signal, bridge = namespace["cache_cleared"], namespace["bridge"]
    from_elsewhere = threading.Event()

    def note(sender: Any, **kwargs: Any) -> None:
        if origin() is not None:
            from_elsewhere.set()

    signal.connect(note, weak=False)
    try:
        with TestClient(namespace["app"], backend=anyio_backend) as client:
            assert client.post("/clear/greeting").json() == {"cleared": "greeting"}
            # Another process clears "farewell": it arrives through Redis.
            client.portal.call(
                _publish,
                redis_server.url,
                "asignals:cache-cleared",
                _wire.encode(
                    _wire.Envelope(
                        1, "elsewhere:1:ab", "cache-cleared", "cache", False, {"key": "farewell"}
                    ),
                    None,
                    1 << 20,
                ),
            )
            assert from_elsewhere.wait(10)
        assert namespace["cache"] == {}
        assert namespace["cleared"] == [("greeting", None), ("farewell", "elsewhere:1:ab")]
        assert bridge.stats["published"] == 1
    finally:
        signal.disconnect(note)

    exec(compile(exclusive_example, "docs", "exec"), namespace)
    mailer = namespace["mailer"]
    assert mailer.shared == [namespace["signed_up"]]

    async def start_and_stop() -> None:
        async with mailer:
            pass

    anyio.run(start_and_stop, backend=anyio_backend)


async def _publish(url: str, channel: str, message: bytes) -> None:
    client: Redis[bytes] = Redis.from_url(url)
    async with client:
        await client.publish(channel, message)

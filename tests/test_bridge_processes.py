"""The bridge across real OS processes: three workers
(``tests/bridge_worker.py``) on one real redis-server."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis_server import RedisServer

WORKER = Path(__file__).with_name("bridge_worker.py")

# Every wait in these tests is bounded by this many seconds.
WAIT = 30.0


class Worker:
    """A worker process, its JSON lines read by a thread as they come."""

    def __init__(self, url: str, name: str, backend: str, mode: str) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), url, name, backend, mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def expect(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The next line that ``predicate`` takes (earlier ones are kept in
        ``seen``); fail if none comes in time or the process ends."""
        deadline = time.monotonic() + WAIT
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"{self.name}: nothing matching within {WAIT} s; saw {self.seen}")
            if line is None:
                assert self.process.stderr is not None
                pytest.fail(f"{self.name} ended: {self.process.stderr.read()[-2000:]}")
            self.seen.append(line)
            if predicate(line):
                return line

    def tell(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def stop(self) -> dict[str, Any]:
        """Quit; its last line, the bridge's stats."""
        self.tell("quit")
        stats = self.expect(lambda line: "stats" in line)["stats"]
        self.process.wait(WAIT)
        return stats  # type: ignore[no-any-return]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(WAIT)
        # The reader ends at the end of the output, which comes with the
        # process's: then its pipe can be closed under no one.
        self.reader.join(WAIT)
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def workers(redis_server: RedisServer, request: pytest.FixtureRequest) -> Iterator[list[Worker]]:
    backend, mode = request.param
    started = [Worker(redis_server.url, f"w{n}", backend, mode) for n in (1, 2, 3)]
    try:
        yield started
    finally:
        for worker in started:
            worker.kill()


@pytest.mark.parametrize(
    "workers",
    [(backend, mode) for backend in ("asyncio", "trio") for mode in ("pubsub", "stream")],
    indirect=True,
    ids=lambda param: "-".join(param),
)
def test_a_send_in_one_process_reaches_each_other_once(workers: list[Worker]) -> None:
    ids = [w.expect(lambda line: "ready" in line)["ready"] for w in workers]
    assert len(set(ids)) == 3
    first, second, third = workers
    first.tell("send hello")
    first.expect(lambda line: "sent" in line)
    # Here: the local receiver, as a local send.
    assert first.seen[1] == {"got": {"sender": "w1", "kwargs": {"text": "hello"}, "origin": None}}
    for other in (second, third):
        got = other.expect(lambda line: "got" in line)["got"]
        assert got == {"sender": "w1", "kwargs": {"text": "hello"}, "origin": ids[0]}
    third.tell("send back")
    third.expect(lambda line: "sent" in line)
    for other in (first, second):
        got = other.expect(lambda line: "got" in line)["got"]
        assert got == {"sender": "w3", "kwargs": {"text": "back"}, "origin": ids[2]}
    stats = [w.stop() for w in workers]
    # Each send ran once in each other process: nothing twice, nothing back.
    assert [s["published"] for s in stats] == [1, 0, 1]
    assert [s["received"] for s in stats] == [1, 2, 1]
    assert all(s["refused"] == s["duplicates"] == s["dropped"] == 0 for s in stats)
    # Each process's receiver ran twice in all: once per send.
    assert [len([line for line in w.seen if "got" in line]) for w in workers] == [2, 2, 2]

"""The demo under ``uvicorn --workers 2`` with a bridge on a real
redis-server: a signal sent in one worker runs the receivers of the other,
and the monitor served by one worker shows the requests of both."""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import socket
import threading
import time
import urllib.request
from typing import Any

import pytest
from redis_server import RedisServer
from serving import DEMO_APP, SERVER_START, UvicornProcess

# Requests to find both workers: each new connection goes to whichever worker
# accepts it first: a few reach both.
TRIES = 400


def call(url: str, method: str = "GET") -> dict[str, Any]:
    request = urllib.request.Request(url, method=method, headers={"Connection": "close"})
    with urllib.request.urlopen(request, timeout=SERVER_START) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def test_a_signal_sent_in_one_worker_reaches_the_other(redis_server: RedisServer) -> None:
    server = UvicornProcess(DEMO_APP, "--workers", "2", env={"REDIS_URL": redis_server.url})
    try:
        # Each worker starts its bridge in its lifespan, before it serves.
        server.wait_for_output("Application startup complete", 2)
        # Both workers answer (each started its bridge before serving).
        workers: set[int] = set()
        deadline = time.monotonic() + SERVER_START
        for _ in range(TRIES):
            workers.add(call(f"{server.url}/cache")["worker"])
            if len(workers) == 2 or time.monotonic() > deadline:
                break
        if len(workers) < 2:
            pytest.fail(f"only one worker answered {TRIES} requests: {workers}")
        sent = call(f"{server.url}/cache/clear", "POST")
        assert sent["bridge"] is True
        sender = sent["worker"]
        # The other worker cleared its cache too, for a send from elsewhere.
        other: dict[str, Any] | None = None
        for _ in range(TRIES):
            answer = call(f"{server.url}/cache")
            if answer["worker"] != sender and answer["cleared"]:
                other = answer
                break
            if time.monotonic() > deadline:
                break
        assert other is not None, f"no other worker cleared its cache:\n{server.output}"
        assert other["entries"] == 0
        [clear] = other["cleared"]
        assert clear["by"] == sender
        assert clear["origin"] is not None
    finally:
        server.stop()
        print(f"The server's output:\n{server.output}")


class EventStream:
    """The monitor's server-sent events, read in a thread from one
    connection (so, one worker): each message parsed, in a queue."""

    def __init__(self, url: str) -> None:
        self.connection = http.client.HTTPConnection(url.split("//", 1)[1], timeout=SERVER_START)
        self.connection.request("GET", "/signals/events")
        self.response = self.connection.getresponse()
        assert self.response.status == 200
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        # Ends when the server goes (the read fails, or reads nothing).
        with contextlib.suppress(OSError, ValueError):
            while line := self.response.readline():
                if line.startswith(b"data: "):
                    self.messages.put(json.loads(line[6:]))

    def next(self, deadline: float) -> dict[str, Any] | None:
        try:
            return self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None

    def close(self) -> None:
        """End the stream: the reader sees it end, then the connection closes."""
        with contextlib.suppress(OSError):
            self.connection.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
        self.reader.join(SERVER_START)
        self.connection.close()


def test_the_monitor_of_one_worker_shows_the_requests_of_all_linked(
    redis_server: RedisServer,
) -> None:
    """Under ``--workers 2`` with a bridge: the monitor's page, served by one
    worker, shows the other's requests too, and the send that a clear in one
    worker made run in the other is linked to the request that made it."""
    server = UvicornProcess(DEMO_APP, "--workers", "2", env={"REDIS_URL": redis_server.url})
    stream: EventStream | None = None
    try:
        server.wait_for_output("Application startup complete", 2)
        stream = EventStream(server.url)
        deadline = time.monotonic() + SERVER_START
        snapshot = stream.next(deadline)
        assert snapshot is not None
        assert (snapshot["type"], snapshot["bridged"]) == ("snapshot", True)
        here = snapshot["worker"]
        traces: dict[str, dict[str, Any]] = {t["id"]: t for t in snapshot["traces"]}

        def other_worker_seen() -> bool:
            return any(t["worker"] != here and t["kind"] == "http" for t in traces.values())

        # Requests until one served by the other worker shows here (it
        # records once the page's worker asked it to, within a second).
        cleared_by: int | None = None
        for _ in range(TRIES):
            if other_worker_seen() and cleared_by is not None:
                break
            if time.monotonic() > deadline:
                break
            if cleared_by is None:
                cleared_by = call(f"{server.url}/cache/clear", "POST")["worker"]
            else:
                call(f"{server.url}/cache")
            while (message := stream.next(time.monotonic() + 0.2)) is not None:
                traces.update((t["id"], t) for t in message["traces"])
        assert other_worker_seen(), f"no trace from the other worker:\n{server.output}"

        # The clear, published by one worker, ran in the other: its trace
        # there is linked to the send in the request that made it.
        def linked() -> tuple[dict[str, Any], dict[str, Any]] | None:
            for bridged in traces.values():
                if bridged["kind"] != "bridged" or bridged["from"] is None:
                    continue
                if bridged["sends"][0]["signal"] != "cache-cleared":
                    continue
                worker, number = bridged["from"]
                for request in traces.values():
                    if request["worker"] == worker and any(
                        s["published"] == number for s in request["sends"]
                    ):
                        return request, bridged
            return None

        while linked() is None and time.monotonic() < deadline:
            # A clear made before the other worker recorded is not there:
            # clear again.
            call(f"{server.url}/cache/clear", "POST")
            while (message := stream.next(time.monotonic() + 0.5)) is not None:
                traces.update((t["id"], t) for t in message["traces"])
        found = linked()
        assert found is not None, f"no linked clear:\n{json.dumps(list(traces.values()))}"
        request, bridged = found
        assert (request["method"], request["path"], request["status"]) == (
            "POST",
            "/cache/clear",
            200,
        )
        assert request["worker"] != bridged["worker"]
        [ran] = bridged["sends"][0]["receivers"]
        assert ran["name"].endswith(".clear_cache")
        assert ran["status"] == "done"
        # The monitor's own asking and answering left no trace.
        assert all(t["kind"] in ("http", "bridged", "lifespan") for t in traces.values())
        assert all(
            t["sends"][0]["signal"] == "cache-cleared"
            for t in traces.values()
            if t["kind"] == "bridged"
        )
    finally:
        if stream is not None:
            stream.close()
        server.stop()
        print(f"The server's output:\n{server.output}")

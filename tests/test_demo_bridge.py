"""The demo under ``uvicorn --workers 2`` with a bridge on a real
redis-server: a signal sent in one worker runs the receivers of the other."""

from __future__ import annotations

import json
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

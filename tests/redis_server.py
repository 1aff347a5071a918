"""Real redis-server processes for the bridge's tests: each on a free
loopback port, started, stopped, killed and restarted by the test.

Where ``redis-server`` is missing, tests that need it skip, saying how to
install it, unless ``ASIGNALS_REQUIRE_REDIS`` is set (``.ci/run`` sets it):
then they fail.
"""

from __future__ import annotations

import os
import selectors
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# How long a redis-server may take to start or stop, in seconds.
START_TIMEOUT = 20.0


def require_redis_server() -> str:
    """The path of redis-server, or skip (or fail, in CI) without it."""
    path = shutil.which("redis-server")
    if path is None:
        why = (
            "redis-server is not installed: the bridge's tests run against a real one "
            "(Debian: apt-get install redis-server)"
        )
        if os.environ.get("ASIGNALS_REQUIRE_REDIS"):
            pytest.fail(why + "; ASIGNALS_REQUIRE_REDIS is set, so this is a failure")
        pytest.skip(why)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server, without persistence, on 127.0.0.1."""

    def __init__(self, executable: str, directory: Path, *, persistent: bool = False) -> None:
        self.executable = executable
        self.directory = directory
        # With an append-only file written at each command, so that what it
        # held survives a stop, a kill and a restart.
        self.persistent = persistent
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it and return once it accepts connections (it says so)."""
        assert self.process is None, "already running"
        self.process = subprocess.Popen(
            [
                self.executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.persistent else "no",
                "--appendfsync",
                "always",
                "--dir",
                str(self.directory),
                "--loglevel",
                "notice",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert self.process.stdout is not None
        output = b""
        deadline = time.monotonic() + START_TIMEOUT
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while b"Ready to accept connections" not in output:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    self.kill()
                    raise RuntimeError(f"redis-server did not start: {output.decode()[-500:]}")
                chunk = os.read(self.process.stdout.fileno(), 65536)
                if not chunk:
                    code = self.process.wait(START_TIMEOUT)
                    self.process = None
                    raise RuntimeError(f"redis-server exited with {code}: {output.decode()[-500:]}")
                output += chunk
        # Its later output is not read: send it nowhere that can fill up.
        self.process.stdout.close()

    def stop(self) -> None:
        """Stop it as an operator would (SIGTERM) and wait for it."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(START_TIMEOUT)
            self.process = None

    def kill(self) -> None:
        """Kill it (SIGKILL): connections drop with no goodbye."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(START_TIMEOUT)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A running redis-server, stopped after the test."""
    server = RedisServer(require_redis_server(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def persistent_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A running redis-server whose data survives its restarts."""
    server = RedisServer(require_redis_server(), tmp_path, persistent=True)
    server.start()
    try:
        yield server
    finally:
        server.kill()

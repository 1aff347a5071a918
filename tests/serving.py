"""Serving an app with uvicorn on the loopback interface, for the tests that
need a real server: a listening socket for uvicorn in process
(test_background_shutdown.py), and uvicorn in a subprocess
(test_demo.py, test_demo_browser.py, test_lifespan_uvicorn.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import LOOPBACK

ROOT = Path(__file__).resolve().parent.parent
DEMO_APP = "examples.demo.app:app"
# Bounds, in seconds: reached only when something hangs.
SERVER_START = 30.0
SERVER_STOP = 10.0


@contextmanager
def loopback_listener() -> Iterator[socket.socket]:
    """A TCP socket bound to a free port of 127.0.0.1 and listening, closed
    at the end of the block. Connections wait in its backlog until a server
    given the socket accepts them, so nothing needs to poll for the server
    to start."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.listen()
        yield sock


class UvicornProcess:
    """``app`` (an import string such as "examples.demo.app:app", from the
    repository's root) under uvicorn in a subprocess, on a free port of
    127.0.0.1, with its output collected. uvicorn binds the port itself (the
    monitor of the demo needs the client's address, which a socket passed by
    file descriptor would not give), so the port is found free beforehand.
    ``options`` go to uvicorn's command line, ``env`` adds to its environment."""

    def __init__(self, app: str, *options: str, env: Mapping[str, str] | None = None) -> None:
        with loopback_listener() as probe:
            self.port = probe.getsockname()[1]
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.lines: list[str] = []
        self.started = threading.Event()
        # Notified at each line of output, and at its end.
        self.said = threading.Condition()
        self.ended = False
        command = [sys.executable, "-m", "uvicorn", app, *options]
        self.process = subprocess.Popen(
            [*command, "--host", LOOPBACK, "--port", str(self.port)],
            cwd=ROOT,
            env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self.said:
                self.lines.append(line)
                self.said.notify_all()
            if "Uvicorn running on" in line:
                self.started.set()
        with self.said:
            self.ended = True
            self.said.notify_all()
        self.started.set()  # the server exited: stop waiting

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_until_serving(self) -> None:
        """Wait until the server says it listens (or exits), then check that
        its port accepts connections."""
        if not self.started.wait(SERVER_START):
            pytest.fail(
                f"the server did not start within {SERVER_START} s; it said:\n{self.output}"
            )
        if self.process.poll() is not None:
            pytest.fail(
                f"the server exited with {self.process.returncode}; it said:\n{self.output}"
            )
        try:
            socket.create_connection((LOOPBACK, self.port), timeout=SERVER_START).close()
        except OSError as exc:
            pytest.fail(f"the server's port does not accept connections ({exc}):\n{self.output}")

    def wait_for_output(self, text: str, times: int = 1) -> None:
        """Wait until the server has said ``text`` ``times`` times (each
        worker of ``--workers N`` says "Application startup complete")."""

        def said() -> bool:
            return self.ended or sum(text in line for line in self.lines) >= times

        with self.said:
            if not self.said.wait_for(said, SERVER_START) or self.ended:
                pytest.fail(f"the server did not say {text!r} {times} times:\n{self.output}")

    def wait_for_exit(self) -> int:
        """Wait until the server exits by itself (as it does when the app's
        startup fails); its return code."""
        try:
            return self.process.wait(SERVER_START)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the server did not exit within {SERVER_START} s; it said:\n{self.output}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(SERVER_STOP)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(SERVER_STOP)
        self.reader.join(SERVER_STOP)
        assert self.process.stdout is not None
        self.process.stdout.close()


@contextmanager
def uvicorn_process(app: str, *options: str) -> Iterator[UvicornProcess]:
    """``app`` under uvicorn in a subprocess (with ``options`` on its command
    line), serving for the block, stopped after it. Its output is printed at
    the end (pytest shows it for a failed test)."""
    server = UvicornProcess(app, *options)
    try:
        server.wait_until_serving()
        yield server
    finally:
        server.stop()
        print(f"The server's output:\n{server.output}")

"""Server benchmark: requests per second under uvicorn, loaded by wrk on
loopback, for the bare app, a pass-through middleware, Starlette's
BaseHTTPMiddleware and asignals.install.

Run: python benchmarks/bench_uvicorn.py [--duration S] [--rounds N] [--quick]

Needs wrk (``apt-get install wrk``). The apps are in ``_uvicorn_apps.py``.
Each round loads every candidate once, in an order that rotates every round:
a fresh ``python -m uvicorn`` on a free port of 127.0.0.1 (one worker, no
access log), checked (a 200 "ok"; asignals handles the request or does not),
loaded with ``wrk -t1 -c32 -d{duration}s``, checked again (with receivers:
each ran at least once per request wrk counted), then stopped. The table
shows the median requests per second, its ratio to the bare app's, every
round's figure (to judge the noise) and the errors wrk saw, summed over the
rounds. Every step has a time limit, and the server is stopped whatever
happens.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, NoReturn

HERE = Path(__file__).resolve().parent

# (label, factory in _uvicorn_apps, whether asignals handles its requests)
CANDIDATES = [
    ("bare app", "bare", False),
    ("pass-through, where install() puts it", "pass_through", False),
    ("BaseHTTPMiddleware (call_next)", "base_http_middleware", False),
    ("install(app), 0 receivers", "asignals_install", True),
    ("install(app), 1 sync receiver on each of 6 signals", "asignals_receivers", True),
]
THREADS = 1
CONNECTIONS = 32
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


@dataclass
class Load:
    """What wrk reported for one run."""

    requests: int
    rate: float
    non_2xx_3xx: int = 0
    socket_errors: int = 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get(port: int, path: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
        return response.status, response.read()


@contextlib.contextmanager
def serving(factory: str) -> Iterator[int]:
    """Run uvicorn on ``_uvicorn_apps:factory`` in its own process group and
    yield its port once it answers; stop the whole group on the way out."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(HERE),
        "--factory",
        f"_uvicorn_apps:{factory}",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_until_serving(server, port, log)
            yield port
        finally:
            stop(server)


def wait_until_serving(server: subprocess.Popen[bytes], port: int, log: Any) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            get(port, "/calls")
            return
        except OSError as error:
            if server.poll() is not None:
                problem = f"uvicorn exited with status {server.returncode}"
            elif time.monotonic() > deadline:
                problem = (
                    f"uvicorn did not answer on 127.0.0.1:{port} within "
                    f"{START_TIMEOUT:.0f}s (last error: {error!r})"
                )
            else:
                # Polling a port that another process is opening: there is
                # nothing to wait on.
                time.sleep(0.05)
                continue
        log.seek(0)
        output = log.read().decode(errors="replace")
        raise RuntimeError(f"{problem}; its output:\n{output}")


def stop(server: subprocess.Popen[bytes]) -> None:
    """Stop the server's process group: SIGTERM, then SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, sig)
        try:
            server.wait(STOP_TIMEOUT)
            return
        except subprocess.TimeoutExpired:
            continue


def load(port: int, duration: int) -> Load:
    return wrk(port, duration, CONNECTIONS)[0]


def wrk(port: int, duration: int, connections: int, *options: str) -> tuple[Load, str]:
    """Load ``/`` of the server on ``port`` with wrk: what it reported, and
    its output."""
    command = [
        "wrk",
        f"-t{THREADS}",
        f"-c{connections}",
        f"-d{duration}s",
        *options,
        f"http://127.0.0.1:{port}/",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 30)
    out = done.stdout
    requests = re.search(r"(\d+) requests in", out)
    rate = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if done.returncode != 0 or requests is None or rate is None:
        raise RuntimeError(f"wrk failed (status {done.returncode}):\n{out}{done.stderr}")
    result = Load(int(requests[1]), float(rate[1]))
    if non_2xx := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        result.non_2xx_3xx = int(non_2xx[1])
    if errors := re.search(r"Socket errors: (.*)", out):
        result.socket_errors = sum(int(n) for n in re.findall(r"\d+", errors[1]))
    return result, out


def need_wrk(script: str) -> None:
    """Exit, saying how to install it, if wrk is not on the PATH."""
    if shutil.which("wrk") is None:
        sys.exit(
            f"{script} needs the wrk load generator: install it with "
            "`apt-get install wrk` (Debian, Ubuntu) or `brew install wrk` (macOS)."
        )


def check(label: str, port: int, handled: bool, requests: int) -> None:
    """Check that the server serves "ok" and that asignals handles its
    requests, or not, as ``label`` says; with receivers, that each ran at
    least ``requests`` times."""
    status, body = get(port, "/")
    if (status, body) != (200, b"ok"):
        raise RuntimeError(f"{label}: GET / gave {status} {body!r}, not 200 b'ok'")
    report = json.loads(get(port, "/calls")[1])
    if report["handled"] != handled:
        raise RuntimeError(f"{label}: asignals {'did' if report['handled'] else 'did not'} run")
    if any(count < requests for count in report["calls"].values()):
        raise RuntimeError(f"{label}: receiver calls {report['calls']} for {requests} requests")


def run(rounds: int, duration: int) -> dict[str, list[Load]]:
    loads: dict[str, list[Load]] = {label: [] for label, _, _ in CANDIDATES}
    for round_ in range(rounds):
        shift = round_ % len(CANDIDATES)
        for label, factory, handled in CANDIDATES[shift:] + CANDIDATES[:shift]:
            print(f"round {round_ + 1}/{rounds}: {label}", file=sys.stderr)
            with serving(factory) as port:
                check(label, port, handled, 0)
                result = load(port, duration)
                check(label, port, handled, result.requests)
            loads[label].append(result)
    return loads


def format_table(loads: dict[str, list[Load]]) -> str:
    lines = [
        "| candidate | req/s (median) | / bare app | req/s per round "
        "| non-2xx/3xx | socket errors |",
        "|---|---:|---:|---|---:|---:|",
    ]
    bare = statistics.median(r.rate for r in loads["bare app"])
    for label, results in loads.items():
        rate = statistics.median(r.rate for r in results)
        rounds = ", ".join(f"{r.rate:,.0f}" for r in results)
        lines.append(
            f"| {label} | {rate:,.0f} | {rate / bare:.2f}x | {rounds} "
            f"| {sum(r.non_2xx_3xx for r in results)} "
            f"| {sum(r.socket_errors for r in results)} |"
        )
    return "\n".join(lines)


def describe_setup(rounds: int, duration: int) -> str:
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
    wrk_version = (wrk.stdout + wrk.stderr).split()[1]
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return (
        f"Python {platform.python_version()} ({sys.implementation.name}), "
        f"{platform.machine()}, {os.cpu_count()} CPUs shared by wrk and the server; "
        f"asignals {version('asignals')}, Starlette {version('starlette')}, "
        f"uvicorn {version('uvicorn')} ({http}, {loop} loop, 1 worker), wrk {wrk_version}; "
        f"wrk -t{THREADS} -c{CONNECTIONS} -d{duration}s on 127.0.0.1; "
        f"median of {rounds} interleaved round{'' if rounds == 1 else 's'}"
    )


def exit_on_sigterm(signum: int, frame: Any) -> NoReturn:
    # Unwind through the finally blocks, which stop the server.
    sys.exit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds of load per run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (median of these)")
    parser.add_argument(
        "--quick", action="store_true", help="one round of 1 second, for a smoke run"
    )
    args = parser.parse_args()
    need_wrk("bench_uvicorn.py")
    rounds, duration = (1, 1) if args.quick else (args.rounds, args.duration)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    setup = describe_setup(rounds, duration)
    loads = run(rounds, duration)
    print(setup)
    print()
    print(format_table(loads))


if __name__ == "__main__":
    main()

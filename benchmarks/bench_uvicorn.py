"""Server benchmark: requests per second under uvicorn, loaded by wrk on
loopback, for the bare app, a pass-through middleware, Starlette's
BaseHTTPMiddleware and asignals.install, under two server setups: uvicorn's
pure-Python one (``--http h11 --loop asyncio``) and its fast one
(``--http httptools --loop uvloop``).

Run: python benchmarks/bench_uvicorn.py [--duration S] [--rounds N]
[--setup {h11-asyncio,httptools-uvloop}] [--quick]

By default 5 rounds of 5 seconds under each setup (about 5 minutes);
``--quick``: one round of 1 second (about 15 seconds), a smoke run.

Needs wrk (``apt-get install wrk``), and httptools and uvloop for the second
setup (the ``bench`` extra). The apps are in ``_uvicorn_apps.py``. Each round
loads every candidate once under each setup, the candidates in an order that
rotates every round (the two setups of a candidate back to back, their order
alternating): a fresh ``python -m uvicorn`` with the setup's flags on a free
port of 127.0.0.1 (one worker, no access log), checked (a 200 "ok"; the HTTP
implementation and event loop the setup names serve it; asignals handles the
request or does not), loaded with ``wrk -t1 -c32 -d{duration}s``, checked
again (with receivers: each ran at least once per request wrk counted), then
stopped. The receivers are connected for the app (``connect_via(app)``).

The table gives, for each setup and candidate, the median requests per
second, its ratio to the same setup's bare app, the target where there is
one, every round's figure, their spread ((max - min) / median) and the errors
wrk saw, summed over the rounds. Under it, the noise of each setup: the
spread of the bare app's rounds, against which to judge how far a ratio is
from 1; and (on Linux, from /proc) the CPU that other processes used during
the loads, with the runs they disturbed marked. Every step has a time limit,
and the server is stopped whatever happens.
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, NoReturn

HERE = Path(__file__).resolve().parent

BARE = "bare app"


@dataclass(frozen=True)
class Candidate:
    label: str
    # The factory in _uvicorn_apps that makes its app.
    factory: str
    # Whether asignals handles its requests.
    handled: bool
    # The least requests per second it should serve, as a fraction of the
    # bare app's under the same setup; None: no target.
    target: float | None = None


CANDIDATES = [
    Candidate(BARE, "bare", False),
    Candidate("pass-through, where install() puts it", "pass_through", False),
    Candidate("BaseHTTPMiddleware (call_next)", "base_http_middleware", False),
    Candidate("install(app), 0 receivers", "asignals_install", True, 0.97),
    Candidate(
        "install(app), 1 sync receiver for the app on each of 6 signals",
        "asignals_receivers",
        True,
        0.90,
    ),
]


@dataclass(frozen=True)
class Setup:
    """A uvicorn server setup: its HTTP implementation and event loop."""

    http: str
    loop: str

    @property
    def name(self) -> str:
        """As ``--setup`` takes it."""
        return f"{self.http}-{self.loop}"

    @property
    def label(self) -> str:
        return f"{self.http} + {self.loop}"

    @property
    def flags(self) -> list[str]:
        return ["--http", self.http, "--loop", self.loop]

    @property
    def packages(self) -> list[str]:
        """The packages it needs besides uvicorn (asyncio is Python's)."""
        return [self.http] + ([] if self.loop == "asyncio" else [self.loop])


SETUPS = [Setup("h11", "asyncio"), Setup("httptools", "uvloop")]
# Rounds by default: every candidate at each place of the rotating order.
ROUNDS = len(CANDIDATES)
THREADS = 1
CONNECTIONS = 32
# Other processes' CPU during a load above which its figure is marked.
DISTURBED = 0.1
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


@dataclass
class Load:
    """What wrk reported for one run."""

    requests: int
    rate: float
    non_2xx_3xx: int = 0
    socket_errors: int = 0
    # The CPU that processes other than this one, the server and wrk used
    # during the load, in CPUs (0.5: half of one); None where it is not known.
    others_cpu: float | None = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get(port: int, path: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
        return response.status, response.read()


@contextlib.contextmanager
def serving(factory: str, options: Sequence[str] = ()) -> Iterator[int]:
    """Run uvicorn on ``_uvicorn_apps:factory``, with ``options`` added to its
    command line, in its own process group and yield its port once it
    answers; stop the whole group on the way out."""
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
        *options,
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
    """Load the server and measure what other processes used meanwhile."""
    before, start = cpu_by_process(), time.monotonic()
    result = wrk(port, duration, CONNECTIONS)[0]
    after, elapsed = cpu_by_process(), time.monotonic() - start
    if before is not None and after is not None:
        ours = descendants(os.getpid())
        used = sum(
            seconds - before.get(pid, (0.0, 0))[0]
            for pid, (seconds, _) in after.items()
            if pid not in ours
        )
        result.others_cpu = max(used, 0.0) / elapsed
    return result


def cpu_by_process() -> dict[int, tuple[float, int]] | None:
    """The CPU seconds each process has used and its parent's id, from
    Linux's /proc; None elsewhere. Processes that end during the load are
    not counted, so the figure it gives is a lower bound."""
    if not os.path.isdir("/proc/self"):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[float, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # it ended
            continue
        # After the name: state, ppid, ..., utime and stime (fields 14, 15).
        found[int(entry)] = ((int(fields[11]) + int(fields[12])) / tick, int(fields[1]))
    return found


def descendants(root: int) -> set[int]:
    """``root`` and the processes it started, and theirs (the server, wrk)."""
    children: dict[int, list[int]] = {}
    for pid, (_, parent) in (cpu_by_process() or {}).items():
        children.setdefault(parent, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


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


def need_packages(script: str, setups: Sequence[Setup]) -> None:
    """Exit, saying how to install them, if a package a setup needs is missing."""
    missing = [
        package
        for setup in setups
        for package in setup.packages
        if importlib.util.find_spec(package) is None
    ]
    if missing:
        sys.exit(
            f"{script} needs {' and '.join(missing)} for its server setups: install "
            "the bench extra (`pip install -e '.[bench]'`), or pass --setup h11-asyncio."
        )


def check(setup: Setup, candidate: Candidate, port: int, requests: int) -> None:
    """Check that the server serves "ok" with the HTTP implementation and
    event loop of ``setup``, and that asignals handles its requests, or not,
    as ``candidate`` says; with receivers, that each ran at least
    ``requests`` times."""
    label = f"{candidate.label} ({setup.label})"
    status, body = get(port, "/")
    if (status, body) != (200, b"ok"):
        raise RuntimeError(f"{label}: GET / gave {status} {body!r}, not 200 b'ok'")
    report = json.loads(get(port, "/calls")[1])
    if (report["http"], report["loop"]) != ([setup.http], setup.loop):
        raise RuntimeError(
            f"{label}: served by HTTP implementation {report['http']} on the {report['loop']} loop"
        )
    if report["handled"] != candidate.handled:
        raise RuntimeError(f"{label}: asignals {'did' if report['handled'] else 'did not'} run")
    if any(count < requests for count in report["calls"].values()):
        raise RuntimeError(f"{label}: receiver calls {report['calls']} for {requests} requests")


def run(
    rounds: int, duration: int, setups: Sequence[Setup] = SETUPS
) -> dict[str, dict[str, list[Load]]]:
    """Every round's load of every candidate under every setup: by setup
    label, then by candidate label."""
    loads: dict[str, dict[str, list[Load]]] = {
        setup.label: {candidate.label: [] for candidate in CANDIDATES} for setup in setups
    }
    runs = rounds * len(CANDIDATES) * len(setups)
    done = 0
    for round_ in range(rounds):
        shift = round_ % len(CANDIDATES)
        ordered = list(setups) if round_ % 2 == 0 else list(reversed(setups))
        for candidate in CANDIDATES[shift:] + CANDIDATES[:shift]:
            for setup in ordered:
                done += 1
                print(
                    f"round {round_ + 1}/{rounds}, run {done}/{runs}: "
                    f"{candidate.label} ({setup.label})",
                    file=sys.stderr,
                )
                with serving(candidate.factory, setup.flags) as port:
                    check(setup, candidate, port, 0)
                    result = load(port, duration)
                    check(setup, candidate, port, result.requests)
                loads[setup.label][candidate.label].append(result)
    return loads


def spread(results: Sequence[Load]) -> float | None:
    """(max - min) / median of the rounds' requests per second; None for a
    single round, which shows no spread."""
    rates = [r.rate for r in results]
    if len(rates) < 2:
        return None
    return (max(rates) - min(rates)) / statistics.median(rates)


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def disturbed(result: Load) -> bool:
    """Whether other processes used more than DISTURBED of a CPU during the load."""
    return result.others_cpu is not None and result.others_cpu > DISTURBED


def others_cpu(loads: dict[str, dict[str, list[Load]]]) -> tuple[float, float] | None:
    """The mean and the most, over every run, of the CPU other processes
    used during the load; None where it is not known."""
    figures = [
        r.others_cpu
        for by_candidate in loads.values()
        for results in by_candidate.values()
        for r in results
        if r.others_cpu is not None
    ]
    return (statistics.fmean(figures), max(figures)) if figures else None


def noise(loads: dict[str, dict[str, list[Load]]]) -> dict[str, float | None]:
    """Each setup's noise: the spread of its bare app's rounds (None for a
    single round)."""
    return {setup: spread(by_candidate[BARE]) for setup, by_candidate in loads.items()}


def format_table(loads: dict[str, dict[str, list[Load]]]) -> str:
    """The table, and under it each setup's noise."""
    lines = [
        "| setup | candidate | req/s (median) | / bare app | target | req/s per round "
        "| spread | non-2xx/3xx | socket errors |",
        "|---|---|---:|---:|---|---|---:|---:|---:|",
    ]
    targets = {candidate.label: candidate.target for candidate in CANDIDATES}
    for setup, by_candidate in loads.items():
        bare = statistics.median(r.rate for r in by_candidate[BARE])
        for label, results in by_candidate.items():
            rate = statistics.median(r.rate for r in results)
            figures = ", ".join(f"{r.rate:,.0f}{'*' if disturbed(r) else ''}" for r in results)
            target = targets[label]
            lines.append(
                f"| {setup} | {label} | {rate:,.0f} | {rate / bare:.2f}x "
                f"| {'-' if target is None else f'≥ {target:.2f}x'} | {figures} "
                f"| {percent(spread(results))} | {sum(r.non_2xx_3xx for r in results)} "
                f"| {sum(r.socket_errors for r in results)} |"
            )
    lines.append("")
    if any(value is None for value in noise(loads).values()):
        lines.append("Noise: one round shows none; this run is a smoke test, not figures.")
    else:
        lines.append(
            "Noise: the spread ((max - min) / median) of the bare app's rounds, "
            + "; ".join(f"{setup} {percent(value)}" for setup, value in noise(loads).items())
            + ": a ratio that differs from 1.00x by less than that is within the noise."
        )
    if (others := others_cpu(loads)) is not None:
        lines.append(
            f"Other processes on the machine used {others[0]:.0%} of a CPU on average "
            f"during the loads, {others[1]:.0%} in the busiest run; * marks a run "
            f"during which they used more than {DISTURBED:.0%}."
        )
    return "\n".join(lines)


def describe_setup(rounds: int, duration: int, setups: Sequence[Setup] = SETUPS) -> str:
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
    wrk_version = (wrk.stdout + wrk.stderr).split()[1]
    servers = " and ".join(
        f"`{' '.join(setup.flags)}` ("
        + ", ".join(f"{package} {version(package)}" for package in setup.packages)
        + ")"
        for setup in setups
    )
    return (
        f"Python {platform.python_version()} ({sys.implementation.name}), "
        f"{platform.machine()}, {os.cpu_count()} CPUs shared by wrk and the server; "
        f"asignals {version('asignals')}, Starlette {version('starlette')}, "
        f"uvicorn {version('uvicorn')} (1 worker) with {servers}, wrk {wrk_version}; "
        f"wrk -t{THREADS} -c{CONNECTIONS} -d{duration}s on 127.0.0.1; "
        f"median of {rounds} interleaved round{'' if rounds == 1 else 's'}"
    )


def exit_on_sigterm(signum: int, frame: Any) -> NoReturn:
    # Unwind through the finally blocks, which stop the server.
    sys.exit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds of load per run")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="rounds (median of these)")
    parser.add_argument(
        "--setup",
        choices=[setup.name for setup in SETUPS],
        help="only this server setup (default: each)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="one round of 1 second, for a smoke run"
    )
    args = parser.parse_args()
    need_wrk("bench_uvicorn.py")
    setups = [setup for setup in SETUPS if args.setup in (None, setup.name)]
    need_packages("bench_uvicorn.py", setups)
    rounds, duration = (1, 1) if args.quick else (args.rounds, args.duration)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    described = describe_setup(rounds, duration, setups)
    loads = run(rounds, duration, setups)
    print(described)
    print()
    print(format_table(loads))


if __name__ == "__main__":
    main()

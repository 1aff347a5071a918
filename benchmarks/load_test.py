"""Load test: uvicorn on 127.0.0.1, loaded by wrk, with ten receivers on
every signal of a request, one in ten of them failing, and
``receiver_errors="log"``: no request may fail and no teardown be lost.

Run: python benchmarks/load_test.py [--duration S] [--connections N]

Needs wrk (``apt-get install wrk``). The app is ``_uvicorn_apps.load_test``:
``/`` answers "ok"; each of the six signals of a plain request has ten
receivers, sync and async alternately, the last of which raises; asignals
logs each failure (a handler on the ``asignals`` logger counts the records)
and the request goes on. ``/report`` gives the server's counts.

After the load, once the requests still in flight are torn down (the
counts are read until they settle, within a time limit), the run fails if
wrk saw an error or a response other than 200, if any signal was sent a
different number of times than ``request_started`` (every request that
started was finished and torn down: none lost), if fewer requests started
than wrk counted, if a receiver that should run did not or a failure was
not logged, or if the log does not name the failing receiver.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any

from _uvicorn_apps import RECEIVERS_PER_SIGNAL, SIGNALS
from bench_uvicorn import exit_on_sigterm, get, need_wrk, serving, wrk

SETTLE_TIMEOUT = 10.0
# Sends not matched by a teardown yet when /report answers: the lifespan's
# app context and the report's own request are still open.
OPEN = {SIGNALS[0].name: 2, SIGNALS[1].name: 1}


def report(port: int) -> dict[str, Any]:
    status, body = get(port, "/report")
    if status != 200:
        raise RuntimeError(f"GET /report gave {status}")
    result: dict[str, Any] = json.loads(body)
    return result


def settled(port: int) -> dict[str, Any]:
    """The server's counts once every request but the report's own is torn
    down, or the last counts read when the time limit passed."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        counts = report(port)["counts"]
        started = counts[SIGNALS[1].name] - OPEN[SIGNALS[1].name]
        if all(counts[s.name] == started for s in SIGNALS[2:]) or time.monotonic() > deadline:
            return report(port)
        # Waiting for another process to finish: nothing to wait on but time.
        time.sleep(0.05)


def problems(requests: int, non_2xx: int, socket_errors: int, result: dict[str, Any]) -> list[str]:
    counts = result["counts"]
    found = []
    if non_2xx:
        found.append(f"{non_2xx} responses were not 2xx or 3xx")
    if socket_errors:
        found.append(f"wrk saw {socket_errors} socket errors")
    started = counts[SIGNALS[1].name] - OPEN[SIGNALS[1].name]
    for sig in SIGNALS:
        sent = counts[sig.name] - OPEN.get(sig.name, 0)
        if sent != started:
            found.append(f"{sig.name} was sent {sent:,} times for {started:,} requests started")
    if started < requests:
        found.append(f"{started:,} requests started, fewer than the {requests:,} wrk counted")
    sends = sum(counts[sig.name] for sig in SIGNALS)
    if counts["calls"] != sends * (RECEIVERS_PER_SIGNAL - 1):
        found.append(
            f"{counts['calls']:,} calls of the receivers that do not fail, "
            f"for {sends:,} sends of {RECEIVERS_PER_SIGNAL - 1} each"
        )
    if counts["failed"] != sends:
        found.append(f"{counts['failed']:,} failing receivers ran, for {sends:,} sends")
    if counts["logged"] != counts["failed"]:
        found.append(f"{counts['logged']:,} errors logged, for {counts['failed']:,} failures")
    first = result["first_log_message"]
    if not first or "_failing" not in first[0]:
        found.append(f"the log did not name the failing receiver: {first}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds of load")
    parser.add_argument("--connections", type=int, default=64, help="wrk's open connections")
    args = parser.parse_args()
    need_wrk("load_test.py")
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    with serving("load_test") as port:
        status, body = get(port, "/")
        if (status, body) != (200, b"ok"):
            sys.exit(f"GET / gave {status} {body!r}, not 200 b'ok'")
        load, out = wrk(port, args.duration, args.connections, "--timeout", "10s")
        result = settled(port)
    found = problems(load.requests, load.non_2xx_3xx, load.socket_errors, result)
    counts = result["counts"]
    print(out.rstrip())
    print(
        f"server: {counts[SIGNALS[1].name] - OPEN[SIGNALS[1].name]:,} requests started; "
        + ", ".join(f"{s.name} {counts[s.name]:,}" for s in SIGNALS)
        + f"; {counts['calls']:,} receiver calls, {counts['failed']:,} failed, "
        f"{counts['logged']:,} logged"
    )
    print(f"first logged error: {result['first_log_message'][:1]}")
    for problem in found:
        print(f"FAILED: {problem}", file=sys.stderr)
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()

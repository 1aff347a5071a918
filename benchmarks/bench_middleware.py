"""Middleware benchmark: the in-process ASGI cost per request of asignals'
middleware, side by side with the bare app and a pass-through middleware.

Run: python benchmarks/bench_middleware.py [--rounds N] [--quick] [--backend trio]

No sockets: each candidate is a small Starlette app (one route returning a
PlainTextResponse), built fresh for it, called directly as ASGI in a loop
inside one event loop, with a prebuilt copy of the scope for each request, a
``receive`` that returns one ``http.request`` message and a ``send`` that
drops what it is given. Candidates are interleaved (their order rotates every
round), each round times a batch of requests per candidate, and the table
shows the median time per request and the ratios of medians.

The pass-through is a pure ASGI middleware that only awaits the app it wraps.
It is measured in the two places asignals goes: around the app, as
``SignalMiddleware(app)``, and around the app's built middleware stack, where
``asignals.install(app)`` puts it. Each asignals row is compared with the
pass-through in the same place. One more pass-through there binds a context
variable while the app runs: the least any middleware costs that makes the
request reachable from the code it runs, as ``asignals.current_app`` is. The
four ``install(app)`` rows are the
targets: no receivers; one sync receiver on each of the 6 signals of a plain
HTTP request connected for another app in the process (they must never
run), for any sender, and for this app (``connect_via(app)``, the idiom of
Flask's docs). Receivers are connected only while their candidate runs, and
every candidate is checked once (a 200 "ok" response; asignals handled the
request or did not; each receiver ran once, or never for another app) and
again after the run, so that no row can measure less than it says.

Two more rows show what asignals.monitor costs, each against the same app
(one sync receiver on each of the 6 signals, for the app) without a
monitor: with a ``SignalMonitor`` mounted in the app's routes and nobody
watching, which must cost nothing measurable (<= 1.05x), and with it
recording in a ``monitor.recording()`` block, as it does while a page of it
is open, with no page: each request's trace kept and summarised, not
encoded or sent (``bench_monitor.py`` measures pages open under uvicorn).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from contextlib import ExitStack
from contextvars import ContextVar
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

import anyio
from _in_process import SCOPE, arguments, discard, receive, setting
from _uvicorn_apps import SIGNALS, PassThrough, install_pass_through
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import asignals
from asignals.monitor import SignalMonitor

# Whether asignals handled the last request: the endpoint notes whether
# asignals.current_app was bound for it.
handled: list[bool] = []


def make_app() -> Starlette:
    async def homepage(request: Request) -> PlainTextResponse:
        if handled:
            handled[0] = bool(asignals.current_app)
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/", homepage)])


# Whom a candidate's receivers are connected for.
FOR_APP = "this app"
FOR_OTHER = "another app"
FOR_ANY = "any sender"


@dataclass
class Candidate:
    name: str
    app: ASGIApp
    # The pass-through in the same place, that this candidate is compared with.
    baseline: str | None = None
    target: str = "-"
    handled: bool = False
    # While the candidate runs: one sync receiver on each of the 6 HTTP
    # signals, connected for FOR_APP (the Starlette app the candidate wraps,
    # as connect_via(app) does), FOR_OTHER (another app in the process: they
    # must never run) or FOR_ANY; None for no receivers.
    receivers_for: str | None = None
    # The Starlette app that asignals sends for (``app`` itself after
    # install(), the wrapped app for SignalMiddleware(app)).
    sender: Starlette | None = None
    # "mounted": a SignalMonitor is mounted in the app, nobody watching;
    # "recording": it records while the candidate runs, as for an open page.
    monitor: str | None = None
    monitor_app: SignalMonitor | None = None
    receivers: dict[asignals.Signal, Callable[..., None]] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    requests: int = 0

    def __post_init__(self) -> None:
        calls = self.calls
        for signal in SIGNALS if self.receivers_for else ():
            name = signal.name
            calls[name] = 0

            def receiver(sender: Any, name: str = name, **kwargs: Any) -> None:
                calls[name] += 1

            self.receivers[signal] = receiver

    @property
    def calls_per_request(self) -> int:
        """How many times each receiver runs per request: never for another app."""
        return 0 if self.receivers_for == FOR_OTHER else 1


# The app that FOR_OTHER receivers are connected for: alive all along, never
# served.
OTHER_APP = Starlette()

AROUND = "pass-through, around the app"
IN_STACK = "pass-through, where install() puts it"
BINDS = "pass-through binding a context variable, where install() puts it"
RECEIVERS = "1 sync receiver on each of the 6 HTTP signals"
INSTALL_RECEIVERS = f"install(app), {RECEIVERS}, for {FOR_APP}"
# The targets, by whom receivers are connected for (None: no receivers).
TARGETS = {None: "<= 1.05x", FOR_OTHER: "<= 1.10x", FOR_ANY: "<= 1.40x", FOR_APP: "<= 1.40x"}


def installed(receivers_for: str | None, monitor: str | None = None) -> Candidate:
    app = make_app()
    label = "install(app), " + (
        "0 receivers" if receivers_for is None else f"{RECEIVERS}, for {receivers_for}"
    )
    monitor_app = None
    if monitor is not None:
        label += ", a SignalMonitor mounted, " + (
            "nobody watching" if monitor == "mounted" else "recording (monitor.recording())"
        )
        monitor_app = SignalMonitor()
        app.router.routes.append(Mount("/signals", app=monitor_app))
    return Candidate(
        label,
        asignals.install(app),
        baseline=IN_STACK if monitor is None else INSTALL_RECEIVERS,
        target=TARGETS[receivers_for]
        if monitor is None
        else "<= 1.05x"
        if monitor == "mounted"
        else "-",
        handled=True,
        receivers_for=receivers_for,
        sender=app,
        monitor=monitor,
        monitor_app=monitor_app,
    )


def wrapped(receivers_for: str | None) -> Candidate:
    app = make_app()
    label = "SignalMiddleware(app), " + (
        "0 receivers" if receivers_for is None else f"{RECEIVERS}, for {receivers_for}"
    )
    return Candidate(
        label,
        asignals.SignalMiddleware(app),
        baseline=AROUND,
        target=TARGETS[receivers_for],
        handled=True,
        receivers_for=receivers_for,
        sender=app,
    )


# What BindsContext binds.
_bound: ContextVar[Scope] = ContextVar("bound")


class BindsContext:
    """A pass-through that binds a context variable to the request's scope
    while the app runs: the least a middleware does that makes the request
    reachable from any code it runs, as ``asignals.current_app`` and
    ``asignals.request`` are."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = _bound.set(scope)
        try:
            await self.app(scope, receive, send)
        finally:
            _bound.reset(token)


def binds_context(app: Starlette) -> Starlette:
    """Put a BindsContext where ``asignals.install`` puts SignalMiddleware."""
    build = app.build_middleware_stack

    def build_binding() -> ASGIApp:
        return BindsContext(build())

    app.build_middleware_stack = build_binding  # type: ignore[method-assign]
    return app


def make_candidates() -> list[Candidate]:
    return [
        Candidate("bare app", make_app()),
        Candidate(AROUND, PassThrough(make_app())),
        Candidate(IN_STACK, install_pass_through(make_app())),
        Candidate(BINDS, binds_context(make_app()), baseline=IN_STACK),
        installed(None),
        installed(FOR_OTHER),
        installed(FOR_ANY),
        installed(FOR_APP),
        wrapped(None),
        wrapped(FOR_APP),
        installed(FOR_APP, monitor="mounted"),
        installed(FOR_APP, monitor="recording"),
    ]


def connected(stack: ExitStack, candidate: Candidate) -> None:
    whom = candidate.receivers_for
    sender = (
        candidate.sender if whom == FOR_APP else OTHER_APP if whom == FOR_OTHER else asignals.ANY
    )
    for signal, receiver in candidate.receivers.items():
        stack.enter_context(signal.connected_to(receiver, sender=sender))
    monitor = candidate.monitor_app
    if monitor is not None:
        if candidate.monitor == "recording":
            stack.enter_context(monitor.recording())
        stack.callback(check_monitor, candidate, monitor)


def check_monitor(candidate: Candidate, monitor: SignalMonitor) -> None:
    """Check the monitor recorded the last request's sends, each receiver
    done, if it records; else that it recorded nothing."""
    traces = monitor.traces()
    if candidate.monitor == "mounted":
        if traces or monitor.is_recording:
            raise RuntimeError(f"{candidate.name}: the monitor recorded {traces}")
        return
    last = traces[-1]["sends"] if traces else []
    seen = [
        (send["signal"], [run["status"] for run in send["receivers"]])
        for send in last
        if send["receivers"]
    ]
    if sorted(seen) != sorted((signal.name, ["done"]) for signal in SIGNALS):
        raise RuntimeError(f"{candidate.name}: the monitor recorded {seen}")


async def check(candidate: Candidate) -> None:
    """Send one request and check it was served as the candidate says."""
    scope = dict(SCOPE)
    sent: list[Message] = []

    async def record(message: Message) -> None:
        sent.append(message)

    handled[:] = [False]
    with ExitStack() as stack:
        connected(stack, candidate)
        await candidate.app(scope, receive, record)
    was_handled = handled.pop()
    problems = []
    if [m["type"] for m in sent] != ["http.response.start", "http.response.body"]:
        problems.append(f"sent {sent!r}")
    elif sent[0]["status"] != 200 or sent[1]["body"] != b"ok":
        problems.append(f"responded {sent[0]['status']} {sent[1]['body']!r}, not 200 b'ok'")
    if was_handled != candidate.handled:
        problems.append("asignals handled the request" if was_handled else "asignals did not")
    each = candidate.calls_per_request
    if candidate.calls != dict.fromkeys(candidate.calls, each):
        problems.append(f"receiver calls {candidate.calls}, not {each} each")
    if problems:
        raise RuntimeError(f"{candidate.name}: " + "; ".join(problems))
    candidate.calls.update(dict.fromkeys(candidate.calls, 0))


async def batch(candidate: Candidate, number: int) -> float:
    """Time ``number`` requests to the candidate: seconds per request."""
    app = candidate.app
    scopes = [dict(SCOPE) for _ in range(number)]
    with ExitStack() as stack:
        connected(stack, candidate)
        start = perf_counter()
        for scope in scopes:
            await app(scope, receive, discard)
        elapsed = perf_counter() - start
    candidate.requests += number
    return elapsed / number


def run(rounds: int, number: int, backend: str) -> tuple[list[Candidate], dict[str, float]]:
    candidates = make_candidates()

    async def measure() -> dict[str, float]:
        for candidate in candidates:
            await check(candidate)
        samples: dict[str, list[float]] = {c.name: [] for c in candidates}
        for round_ in range(rounds):
            shift = round_ % len(candidates)
            for candidate in candidates[shift:] + candidates[:shift]:
                samples[candidate.name].append(await batch(candidate, number))
        return {name: statistics.median(values) for name, values in samples.items()}

    times = anyio.run(measure, backend=backend)
    for candidate in candidates:
        expected = candidate.requests * candidate.calls_per_request
        if candidate.calls != dict.fromkeys(candidate.calls, expected):
            raise RuntimeError(
                f"{candidate.name}: receiver calls {candidate.calls} "
                f"for {candidate.requests} timed requests"
            )
    return candidates, times


def format_table(candidates: list[Candidate], times: dict[str, float]) -> str:
    lines = [
        "| candidate | time per request | / bare app | / baseline | target |",
        "|---|---:|---:|---:|---|",
    ]
    bare = times["bare app"]
    for c in candidates:
        time = times[c.name]
        ratio = "-" if c.baseline is None else f"{time / times[c.baseline]:.2f}x"
        lines.append(
            f"| {c.name} | {time * 1e6:,.2f} µs | {time / bare:.2f}x | {ratio} | {c.target} |"
        )
    return "\n".join(lines)


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    number = 100 if args.quick else 1000
    candidates, times = run(args.rounds, number, args.backend)
    print(setting(args.backend, args.rounds, number))
    print()
    print(format_table(candidates, times))


if __name__ == "__main__":
    main()

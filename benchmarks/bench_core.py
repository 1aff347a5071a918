"""Signal core benchmark: asignals side by side with blinker, Django's
dispatcher and the forwarding floor, in one process.

Run: python benchmarks/bench_core.py [--rounds N] [--quick]

Candidates are interleaved (their order rotates every round), each round times
a batch of calls per candidate, and the table shows the median time per call
and the ratios of medians. The forwarding floor is the least a dispatcher with
blinker's call shape can do in pure Python: a plain function that calls each
receiver of a tuple as ``receiver(sender, **kwargs)`` (awaiting it, for the
async floor) and collects ``(receiver, result)`` pairs.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import timeit
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from time import perf_counter
from typing import Any

import anyio
import blinker
import django  # type: ignore[import-untyped]
import django.dispatch  # type: ignore[import-untyped]

import asignals

SENDER = object()
# Every candidate is called the way real code calls a signal, with a sender and
# two keyword arguments (as Flask sends template_rendered).
CALL = "{target}(sender, template=template, context=context)"
CALL_GLOBALS: dict[str, Any] = {
    "sender": SENDER,
    "template": "page.html",
    "context": {"user": "ada"},
}


def make_sync_receivers(n: int) -> list[Callable[..., Any]]:
    receivers = []
    for i in range(n):

        def receiver(sender: Any, i: int = i, **kwargs: Any) -> int:
            return i

        receivers.append(receiver)
    return receivers


def make_async_receivers(n: int, sleep: Callable[[float], Awaitable[None]] | None) -> list[Any]:
    """Async receivers that return at once, or, given ``sleep``, yield to the
    event loop once first."""
    receivers = []
    for i in range(n):
        if sleep is None:

            async def receiver(sender: Any, i: int = i, **kwargs: Any) -> int:
                return i

        else:

            async def receiver(sender: Any, i: int = i, **kwargs: Any) -> int:
                await sleep(0)
                return i

        receivers.append(receiver)
    return receivers


def forwarding_floors(receivers: tuple[Callable[..., Any], ...]) -> dict[str, Any]:
    """The forwarding floor written both obvious ways. On CPython 3.11 the
    comprehension is a nested function and costs more per call; ratios are
    given against the faster of the two."""

    def floor_loop(sender: Any, **kwargs: Any) -> list[tuple[Callable[..., Any], Any]]:
        results = []
        for r in receivers:
            results.append((r, r(sender, **kwargs)))
        return results

    def floor_comprehension(sender: Any, **kwargs: Any) -> list[tuple[Callable[..., Any], Any]]:
        return [(r, r(sender, **kwargs)) for r in receivers]

    return {"floor (loop)": floor_loop, "floor (comprehension)": floor_comprehension}


def async_forwarding_floors(receivers: tuple[Callable[..., Any], ...]) -> dict[str, Any]:
    async def floor_loop(sender: Any, **kwargs: Any) -> list[tuple[Callable[..., Any], Any]]:
        results = []
        for r in receivers:
            results.append((r, await r(sender, **kwargs)))
        return results

    async def floor_comprehension(
        sender: Any, **kwargs: Any
    ) -> list[tuple[Callable[..., Any], Any]]:
        return [(r, await r(sender, **kwargs)) for r in receivers]

    return {"floor (loop)": floor_loop, "floor (comprehension)": floor_comprehension}


def connect_all(receivers: list[Any]) -> dict[str, Any]:
    """One signal per library with the same receivers, connected by each
    library's default (weak) connect."""
    a = asignals.Signal()
    b = blinker.Signal()
    d = django.dispatch.Signal()
    for r in receivers:
        a.connect(r)
        b.connect(r)
        d.connect(r)
    return {"asignals": a, "blinker": b, "django": d}


def time_sync(
    candidates: dict[str, str], rounds: int, number: int, env: dict[str, Any]
) -> dict[str, float]:
    """``candidates`` maps a name to the callable expression to time, e.g.
    ``"a.send"``, looked up in ``env``."""
    timers = {
        name: timeit.Timer(CALL.format(target=target), globals={**CALL_GLOBALS, **env})
        for name, target in candidates.items()
    }
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(timers[name].timeit(number) / number)
    return {name: statistics.median(values) for name, values in samples.items()}


_ASYNC_BATCH = """
async def batch(number):
    start = perf_counter()
    for _ in range(number):
        await {call}
    return (perf_counter() - start) / number
"""


def time_async(
    candidates: dict[str, str],
    rounds: int,
    number: int,
    env: dict[str, Any],
    backend: str = "asyncio",
) -> dict[str, float]:
    """Like :func:`time_sync`, awaiting each call on ``backend``."""
    batches = {}
    for name, target in candidates.items():
        namespace = {**CALL_GLOBALS, **env, "perf_counter": perf_counter}
        exec(_ASYNC_BATCH.format(call=CALL.format(target=target)), namespace)
        batches[name] = namespace["batch"]

    async def measure() -> dict[str, float]:
        samples: dict[str, list[float]] = {name: [] for name in candidates}
        names = list(candidates)
        for round_ in range(rounds):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                samples[name].append(await batches[name](number))
        return {name: statistics.median(values) for name, values in samples.items()}

    return anyio.run(measure, backend=backend)


# (label, median seconds per call for each candidate)
Row = tuple[str, dict[str, float]]


def plural(count: int) -> str:
    return "" if count == 1 else "s"


def run(rounds: int, scale: float) -> list[Row]:
    rows: list[Row] = []

    def n(base: int) -> int:
        return max(1, int(base * scale))

    def floors_env(floors: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
        names = {name: f"floor_{i}" for i, name in enumerate(floors)}
        return names, {names[name]: fn for name, fn in floors.items()}

    for count in (0, 1, 10):
        receivers = make_sync_receivers(count)
        sigs = connect_all(receivers)
        floor_names, floor_env = floors_env(forwarding_floors(tuple(receivers)))
        times = time_sync(
            {"asignals": "a.send", "blinker": "b.send", "django": "d.send", **floor_names},
            rounds,
            n(20000 if count < 10 else 5000),
            {"a": sigs["asignals"], "b": sigs["blinker"], "d": sigs["django"], **floor_env},
        )
        rows.append((f"send, {count} sync receiver{plural(count)}", times))

    # Receivers connected for one sender, as with connect_via(app), take the
    # general path.
    receivers = make_sync_receivers(1)
    a, b = asignals.Signal(), blinker.Signal()
    for r in receivers:
        a.connect(r, sender=SENDER)
        b.connect(r, sender=SENDER)
    floor_names, floor_env = floors_env(forwarding_floors(tuple(receivers)))
    times = time_sync(
        {"asignals": "a.send", "blinker": "b.send", **floor_names},
        rounds,
        n(20000),
        {"a": a, "b": b, **floor_env},
    )
    rows.append(("send, 1 sync receiver for this sender", times))

    for count in (1, 10):
        receivers = make_async_receivers(count, None)
        sigs = connect_all(receivers)
        floor_names, floor_env = floors_env(async_forwarding_floors(tuple(receivers)))
        times = time_async(
            {"asignals": "a.send_async", "blinker": "b.send_async", **floor_names},
            rounds,
            n(10000 if count < 10 else 2000),
            {"a": sigs["asignals"], "b": sigs["blinker"], **floor_env},
        )
        rows.append((f"send_async sequential, {count} async receiver{plural(count)}", times))

    # Concurrent: receivers that each yield to the event loop once.
    receivers = make_async_receivers(10, asyncio.sleep)
    sigs = connect_all(receivers)
    times = time_async(
        {"asignals": "a.send_async", "django": "d.asend"},
        rounds,
        n(1000),
        {"a": sigs["asignals"], "d": sigs["django"]},
    )
    rows.append(("send_async concurrent, 10 async receivers (asyncio)", times))

    import trio

    receivers = make_async_receivers(10, trio.sleep)
    trio_signal = asignals.Signal(concurrent=True)
    for r in receivers:
        trio_signal.connect(r)
    times = time_async(
        {"asignals": "a.send_async"}, rounds, n(1000), {"a": trio_signal}, backend="trio"
    )
    rows.append(("send_async concurrent, 10 async receivers (trio)", times))
    return rows


SWEEP_COUNTS = (0, 1, 2, 5, 10, 20, 50)


def sweep(rounds: int, scale: float) -> dict[int, dict[str, float]]:
    """``send`` with 0 to 50 sync receivers: for each count, the median
    seconds per call of asignals, blinker, Django and the forwarding floor
    (the loop), for the plot of cost against receivers."""
    results = {}
    for count in SWEEP_COUNTS:
        receivers = make_sync_receivers(count)
        sigs = connect_all(receivers)
        floor = forwarding_floors(tuple(receivers))["floor (loop)"]
        results[count] = time_sync(
            {"asignals": "a.send", "blinker": "b.send", "django": "d.send", "floor (loop)": "f"},
            rounds,
            max(1, int(scale * 100_000 / (count + 5))),
            {"a": sigs["asignals"], "b": sigs["blinker"], "d": sigs["django"], "f": floor},
        )
    return results


def format_table(rows: list[Row]) -> str:
    columns = ["asignals", "blinker", "django", "floor (loop)", "floor (comprehension)"]
    lines = [
        "| work | " + " | ".join(columns) + " | asignals' time / other's |",
        "|---|" + "---:|" * len(columns) + "---|",
    ]
    for label, times in rows:
        cells = [f"{times[c] * 1e9:,.0f} ns" if c in times else "-" for c in columns]
        ratios = [
            f"{times['asignals'] / times[other]:.2f}x {other}"
            for other in ("blinker", "django")
            if other in times
        ]
        floors = [times[c] for c in columns[3:] if c in times]
        if floors:
            ratios.append(f"{times['asignals'] / min(floors):.2f}x floor")
        lines.append(f"| {label} | " + " | ".join(cells) + " | " + ", ".join(ratios) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="rounds per work (median of these)")
    parser.add_argument(
        "--quick", action="store_true", help="a tenth of the calls, for a smoke run"
    )
    args = parser.parse_args()
    rows = run(args.rounds, 0.1 if args.quick else 1.0)
    print(
        f"Python {platform.python_version()} ({sys.implementation.name}), "
        f"{platform.machine()}; asignals {version('asignals')}, blinker "
        f"{version('blinker')}, Django {version('django')}, anyio {version('anyio')}; "
        f"median of {args.rounds} interleaved rounds"
    )
    print()
    print(format_table(rows))


if __name__ == "__main__":
    main()

"""Signal core benchmark: asignals side by side with blinker, Django's
dispatcher and the forwarding floor, in one process.

Run: python benchmarks/bench_core.py [--rounds N] [--quick]

Candidates are interleaved (their order rotates every round), each round times
a batch of calls per candidate, and the tables show the median time per call,
the ratios of medians and the project's target where it sets one. Every row
says the mode it ran in: a plain ``send`` (no event loop), or ``send_async``
sequential or concurrent, on asyncio or trio. Before it is timed, each
candidate is called once and must return one result per receiver, and each
asignals ``send_async`` row is checked to run its receivers in the mode its
label says (concurrent: in tasks of their own; sequential: in the sender's).

The forwarding floor is the least a dispatcher with blinker's call shape can
do in pure Python: a plain function that calls each receiver of a tuple as
``receiver(sender, **kwargs)`` (awaiting it, for the async floor) and collects
``(receiver, result)`` pairs. Concurrent sends are compared with Django's
``Signal.asend`` and with that floor written with ``asyncio.gather``, an
``asyncio.TaskGroup`` and, on trio, a bare nursery.

Last, the cost of importing asignals and blinker: each import statement runs
in fresh interpreters (interleaved, after one warm-up run each), and the table
shows the median time of the import statement itself and the modules it adds
to ``sys.modules``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import timeit
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from time import perf_counter
from typing import Any

import anyio
import blinker
import django  # type: ignore[import-untyped]
import django.dispatch  # type: ignore[import-untyped]
import trio

import asignals

SENDER = object()
# Every candidate is called the way real code calls a signal, with a sender and
# two keyword arguments (as Flask sends template_rendered).
CALL = "{target}(sender, {options}template=template, context=context)"
CALL_GLOBALS: dict[str, Any] = {
    "sender": SENDER,
    "template": "page.html",
    "context": {"user": "ada"},
}


def call(target: str, options: str = "") -> str:
    """The expression that calls ``target`` as real code does, with
    ``options`` (such as ``"_concurrent=True"``) before the arguments."""
    return CALL.format(target=target, options=f"{options}, " if options else "")


# How asignals is asked for a concurrent send in the concurrent rows: per
# call, as the README's quickstart does, on a signal made with the default
# (sequential) setting.
CONCURRENT = "_concurrent=True"


@dataclass
class Row:
    """One row of a table: what was timed, in which mode, the median
    seconds per call of each candidate, and the project's targets for it as
    ``(other candidate, largest ratio of asignals' time to its)``; ``"floor"``
    stands for the faster of the forwarding floors."""

    label: str
    mode: str
    times: dict[str, float]
    targets: list[tuple[str, float]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "times": self.times,
            "targets": {other: ratio for other, ratio in self.targets},
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


def asyncio_concurrent_floors(receivers: tuple[Callable[..., Any], ...]) -> dict[str, Any]:
    """The forwarding floor run concurrently on asyncio: each receiver's
    coroutine as a task, with ``asyncio.gather`` (as Django's ``asend`` does)
    and with an ``asyncio.TaskGroup``."""

    async def gather(sender: Any, **kwargs: Any) -> list[tuple[Callable[..., Any], Any]]:
        results = await asyncio.gather(*[r(sender, **kwargs) for r in receivers])
        return list(zip(receivers, results, strict=True))

    async def task_group(sender: Any, **kwargs: Any) -> list[tuple[Callable[..., Any], Any]]:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(r(sender, **kwargs)) for r in receivers]
        return [(r, task.result()) for r, task in zip(receivers, tasks, strict=True)]

    return {"asyncio.gather": gather, "asyncio.TaskGroup": task_group}


def trio_nursery_floor(receivers: tuple[Callable[..., Any], ...]) -> dict[str, Any]:
    """The forwarding floor run concurrently on trio: a bare nursery that
    starts each receiver as a task and collects the results in order."""

    async def nursery(sender: Any, **kwargs: Any) -> list[tuple[Callable[..., Any], Any]]:
        results: list[tuple[Callable[..., Any], Any]] = [(r, None) for r in receivers]

        async def run(receiver: Callable[..., Any], index: int) -> None:
            results[index] = (receiver, await receiver(sender, **kwargs))

        async with trio.open_nursery() as tasks:
            for index, receiver in enumerate(receivers):
                tasks.start_soon(run, receiver, index)
        return results

    return {"trio nursery": nursery}


def connect_all(receivers: list[Any], sender: Any = None) -> dict[str, Any]:
    """One signal per library with the same receivers, connected by each
    library's default (weak) connect, for any sender or, given ``sender``,
    for that sender only."""
    a = asignals.Signal()
    b = blinker.Signal()
    d = django.dispatch.Signal()
    for r in receivers:
        if sender is None:
            a.connect(r)
            b.connect(r)
            d.connect(r)
        else:
            a.connect(r, sender=sender)
            b.connect(r, sender=sender)
            d.connect(r, sender=sender)
    return {"asignals": a, "blinker": b, "django": d}


def check_count(name: str, results: Any, expected: int) -> None:
    if not isinstance(results, list) or len(results) != expected:
        raise SystemExit(
            f"bench_core: {name} returned {results!r}, not the results of {expected} receivers"
        )


def time_sync(
    candidates: dict[str, str],
    rounds: int,
    number: int,
    env: dict[str, Any],
    expected: int,
) -> dict[str, float]:
    """``candidates`` maps a name to the call expression to time (see
    :func:`call`), whose names are looked up in ``env``. Each is called once
    first and must return ``expected`` results."""
    namespace = {**CALL_GLOBALS, **env}
    for name, expression in candidates.items():
        check_count(name, eval(expression, namespace), expected)
    timers = {
        name: timeit.Timer(expression, globals=namespace) for name, expression in candidates.items()
    }
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(timers[name].timeit(number) / number)
    return {name: statistics.median(values) for name, values in samples.items()}


_ASYNC_BATCH = """
async def once():
    return await {call}

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
    expected: int,
    backend: str,
) -> dict[str, float]:
    """Like :func:`time_sync`, awaiting each call on ``backend``."""
    onces, batches = {}, {}
    for name, expression in candidates.items():
        namespace = {**CALL_GLOBALS, **env, "perf_counter": perf_counter}
        exec(_ASYNC_BATCH.format(call=expression), namespace)
        onces[name], batches[name] = namespace["once"], namespace["batch"]

    async def measure() -> dict[str, float]:
        for name, once in onces.items():
            check_count(name, await once(), expected)
        samples: dict[str, list[float]] = {name: [] for name in candidates}
        names = list(candidates)
        for round_ in range(rounds):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                samples[name].append(await batches[name](number))
        return {name: statistics.median(values) for name, values in samples.items()}

    return anyio.run(measure, backend=backend)


def check_mode(signal: asignals.Signal, options: str, backend: str, concurrent: bool) -> None:
    """Send once on ``signal`` as its row times it, with a probe receiver
    connected: concurrent, the probe must run in a task of its own, and
    sequential, in the sender's task."""
    tasks: list[int] = []

    async def probe(sender: Any, **kwargs: Any) -> None:
        tasks.append(anyio.get_current_task().id)

    async def send() -> None:
        tasks.append(anyio.get_current_task().id)
        namespace = {**CALL_GLOBALS, "a": signal}
        exec(_ASYNC_BATCH.format(call=call("a.send_async", options)), namespace)
        await namespace["once"]()

    signal.connect(probe)
    try:
        anyio.run(send, backend=backend)
    finally:
        signal.disconnect(probe)
    if len(tasks) != 2 or (tasks[0] != tasks[1]) != concurrent:
        mode = "concurrent" if concurrent else "sequential"
        raise SystemExit(f"bench_core: a {mode} send on {backend} did not run as one")


def plural(count: int) -> str:
    return "" if count == 1 else "s"


def run(rounds: int, scale: float) -> list[Row]:
    rows: list[Row] = []

    def n(base: int) -> int:
        return max(1, int(base * scale))

    def floors_env(floors: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
        names = {name: f"floor_{i}" for i, name in enumerate(floors)}
        return names, {names[name]: fn for name, fn in floors.items()}

    def floor_calls(floors: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
        names, env = floors_env(floors)
        return {name: call(target) for name, target in names.items()}, env

    sync_mode = "send, no event loop"
    for count in (0, 1, 10):
        receivers = make_sync_receivers(count)
        sigs = connect_all(receivers)
        floor_names, floor_env = floor_calls(forwarding_floors(tuple(receivers)))
        times = time_sync(
            {
                "asignals": call("a.send"),
                "blinker": call("b.send"),
                "django": call("d.send"),
                **floor_names,
            },
            rounds,
            n(20000 if count < 10 else 5000),
            {"a": sigs["asignals"], "b": sigs["blinker"], "d": sigs["django"], **floor_env},
            count,
        )
        targets = [("blinker", 0.7)] if count == 0 else [("blinker", 0.4), ("floor", 1.25)]
        label = f"send, {count} sync receiver{plural(count)}"
        rows.append(Row(label, sync_mode, times, targets))

    # Receivers connected for one sender, as with connect_via(app), take the
    # general path. The target for send does not say how receivers are
    # connected, so its targets are shown for these rows too.
    for count in (1, 10):
        receivers = make_sync_receivers(count)
        sigs = connect_all(receivers, sender=SENDER)
        a, b = sigs["asignals"], sigs["blinker"]
        for name, other in (("asignals", a), ("blinker", b)):
            check_count(f"{name} for another sender", other.send(object()), 0)
        floor_names, floor_env = floor_calls(forwarding_floors(tuple(receivers)))
        times = time_sync(
            {"asignals": call("a.send"), "blinker": call("b.send"), **floor_names},
            rounds,
            n(20000 if count < 10 else 5000),
            {"a": a, "b": b, **floor_env},
            count,
        )
        label = f"send, {count} sync receiver{plural(count)} connected for this sender"
        rows.append(Row(label, sync_mode, times, [("blinker", 0.4), ("floor", 1.25)]))

    for count in (1, 10):
        receivers = make_async_receivers(count, None)
        sigs = connect_all(receivers)
        check_mode(sigs["asignals"], "", "asyncio", concurrent=False)
        floor_names, floor_env = floor_calls(async_forwarding_floors(tuple(receivers)))
        times = time_async(
            {
                "asignals": call("a.send_async"),
                "blinker": call("b.send_async"),
                **floor_names,
            },
            rounds,
            n(10000 if count < 10 else 2000),
            {"a": sigs["asignals"], "b": sigs["blinker"], **floor_env},
            count,
            "asyncio",
        )
        rows.append(
            Row(
                f"send_async sequential, {count} async receiver{plural(count)}",
                "sequential, asyncio",
                times,
                [("blinker", 0.6), ("floor", 1.25)],
            )
        )

    # Concurrent: 10 receivers that return at once, and 10 that each yield to
    # the event loop once, on asyncio against Django's asend and the floor as
    # asyncio.gather and an asyncio.TaskGroup, and on trio against a bare
    # nursery.
    for backend in ("asyncio", "trio"):
        sleep = asyncio.sleep if backend == "asyncio" else trio.sleep
        for yields in (False, True):
            receivers = make_async_receivers(10, sleep if yields else None)
            sigs = connect_all(receivers)
            a = sigs["asignals"]
            check_mode(a, CONCURRENT, backend, concurrent=True)
            candidates = {"asignals": call("a.send_async", CONCURRENT)}
            env: dict[str, Any] = {"a": a}
            if backend == "asyncio":
                floors = asyncio_concurrent_floors(tuple(receivers))
                candidates["django asend"] = call("d.asend")
                env["d"] = sigs["django"]
                target = ("django asend", 0.65 if yields else 0.55)
            else:
                floors = trio_nursery_floor(tuple(receivers))
                target = ("trio nursery", 1.5)
            floor_names, floor_env = floor_calls(floors)
            times = time_async(
                {**candidates, **floor_names},
                rounds,
                n(1000),
                {**env, **floor_env},
                10,
                backend,
            )
            kind = (
                f"async receivers that await {backend}.sleep(0)"
                if yields
                else "trivial async receivers"
            )
            rows.append(
                Row(
                    f"send_async concurrent, 10 {kind} ({backend})",
                    f"concurrent ({CONCURRENT}), {backend}",
                    times,
                    [target],
                )
            )
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
            {
                "asignals": call("a.send"),
                "blinker": call("b.send"),
                "django": call("d.send"),
                "floor (loop)": call("f"),
            },
            rounds,
            max(1, int(scale * 100_000 / (count + 5))),
            {"a": sigs["asignals"], "b": sigs["blinker"], "d": sigs["django"], "f": floor},
            count,
        )
    return results


def ratios(row: Row) -> dict[str, float]:
    """asignals' time over each other candidate's; the forwarding floors
    count as one, ``"floor"``, the faster of them."""
    others: dict[str, float] = {}
    for name, time in row.times.items():
        if name == "asignals":
            continue
        key = "floor" if name.startswith("floor") else name
        others[key] = min(time, others.get(key, time))
    return {name: row.times["asignals"] / time for name, time in others.items()}


def format_table(rows: list[Row]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [name for name in row.times if name not in columns]
    lines = [
        "| work | mode | " + " | ".join(columns) + " | asignals' time / other's | target |",
        "|---|---|" + "---:|" * len(columns) + "---|---|",
    ]
    for row in rows:
        cells = [f"{row.times[c] * 1e9:,.0f} ns" if c in row.times else "-" for c in columns]
        ratio = ", ".join(f"{value:.2f}x {other}" for other, value in ratios(row).items())
        target = ", ".join(f"<= {value}x {other}" for other, value in row.targets) or "-"
        lines.append(
            f"| {row.label} | {row.mode} | " + " | ".join(cells) + f" | {ratio} | {target} |"
        )
    return "\n".join(lines)


def format_tables(rows: list[Row]) -> str:
    """The rows in two tables: plain and sequential sends, whose columns are
    blinker, Django and the forwarding floor; and concurrent sends, whose
    columns are Django's asend and the concurrent floors."""
    concurrent = [row for row in rows if row.mode.startswith("concurrent")]
    others = [row for row in rows if row not in concurrent]
    return "\n\n".join(format_table(table) for table in (others, concurrent) if table)


# --- Import time ---------------------------------------------------------

# Run with ``python -c`` in a fresh interpreter: time one import statement and
# count the modules it adds to sys.modules (the count after it minus the bare
# interpreter's, taken just before it: sys and time are loaded at start-up).
# json is imported only once the counting is done.
_IMPORT_PROBE = """
import sys
from time import perf_counter
before = len(sys.modules)
start = perf_counter()
{statement}
seconds = perf_counter() - start
modules = len(sys.modules) - before
web = sorted(name for name in ("starlette", "jinja2") if name in sys.modules)
package = getattr(sys.modules.get("asignals"), "__file__", None)
import json
print(json.dumps({{"seconds": seconds, "modules": modules, "web": web, "asignals": package}}))
"""

IMPORTS = {
    "import": ("import asignals", "import blinker"),
    "from ... import Signal, Namespace, signal": (
        "from asignals import Signal, Namespace, signal",
        "from blinker import Signal, Namespace, signal",
    ),
}


@dataclass
class ImportRow:
    """One import statement for asignals and for blinker: the median seconds
    of the statement, the modules it adds, and which of Starlette and Jinja2
    it loads (for asignals)."""

    asignals: str
    blinker: str
    runs: int
    seconds: dict[str, float]
    modules: dict[str, int]
    web: list[str]

    def as_json(self) -> dict[str, Any]:
        return {
            "statements": {"asignals": self.asignals, "blinker": self.blinker},
            "mode": f"fresh interpreter, median of {self.runs} runs",
            "seconds": self.seconds,
            "modules": self.modules,
            "asignals_loads": self.web,
        }


def probe_import(statement: str) -> dict[str, Any]:
    """Run ``statement`` in a fresh interpreter, which imports asignals from
    where this process did."""
    root = str(Path(asignals.__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE.format(statement=statement)],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
        # Bytecode is written (by the warm-up run) and used, as for an
        # installed package, whatever this process was told.
        env={
            **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
            "PYTHONPATH": path,
        },
        timeout=60,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    loaded = result["asignals"]
    if loaded is not None and Path(loaded).resolve() != Path(asignals.__file__).resolve():
        raise SystemExit(f"bench_core: the import probe loaded {loaded}, not {asignals.__file__}")
    return result


def imports(runs: int) -> list[ImportRow]:
    """Each statement of :data:`IMPORTS` in ``runs`` fresh interpreters,
    interleaved, after one warm-up run each (which also writes bytecode)."""
    statements = [s for pair in IMPORTS.values() for s in pair]
    for statement in statements:
        probe_import(statement)
    samples: dict[str, list[dict[str, Any]]] = {s: [] for s in statements}
    for round_ in range(runs):
        shift = round_ % len(statements)
        for statement in statements[shift:] + statements[:shift]:
            samples[statement].append(probe_import(statement))
    rows = []
    for a, b in IMPORTS.values():
        rows.append(
            ImportRow(
                a,
                b,
                runs,
                {
                    "asignals": statistics.median(r["seconds"] for r in samples[a]),
                    "blinker": statistics.median(r["seconds"] for r in samples[b]),
                },
                {
                    "asignals": int(statistics.median(r["modules"] for r in samples[a])),
                    "blinker": int(statistics.median(r["modules"] for r in samples[b])),
                },
                sorted({name for r in samples[a] for name in r["web"]}),
            )
        )
    return rows


def format_imports(rows: list[ImportRow]) -> str:
    lines = [
        "| import | mode | asignals | blinker | asignals' time / blinker's "
        "| modules added: asignals | modules added: blinker | asignals loads |",
        "|---|---|---:|---:|---|---:|---:|---|",
    ]
    for row in rows:
        a, b = row.seconds["asignals"], row.seconds["blinker"]
        loads = ", ".join(row.web) or "neither Starlette nor Jinja2"
        lines.append(
            f"| `{row.asignals}` / `{row.blinker}` "
            f"| fresh interpreter, median of {row.runs} runs "
            f"| {a * 1e3:,.2f} ms | {b * 1e3:,.2f} ms | {a / b:.2f}x blinker "
            f"| {row.modules['asignals']} | {row.modules['blinker']} | {loads} |"
        )
    return "\n".join(lines)


def import_runs(rounds: int) -> int:
    """How many fresh interpreters per import statement: as many as rounds,
    at least 5."""
    return max(5, rounds)


def describe(rounds: int) -> str:
    return (
        f"Python {platform.python_version()} ({sys.implementation.name}), "
        f"{platform.machine()}; asignals {version('asignals')}, blinker "
        f"{version('blinker')}, Django {version('django')}, anyio {version('anyio')}, "
        f"trio {version('trio')}; median of {rounds} interleaved rounds"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="rounds per work (median of these)")
    parser.add_argument(
        "--quick", action="store_true", help="a tenth of the calls, for a smoke run"
    )
    args = parser.parse_args()
    rows = run(args.rounds, 0.1 if args.quick else 1.0)
    import_rows = imports(import_runs(args.rounds))
    print(describe(args.rounds))
    print()
    print(format_tables(rows))
    print()
    print(format_imports(import_rows))


if __name__ == "__main__":
    main()

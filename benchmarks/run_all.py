"""All of asignals' benchmarks in one run, written to a results file, the
tables as Markdown, and a plot.

Run: python benchmarks/run_all.py [--out DIR] [--quick]

Runs, one after the other in this process: the signal core
(``bench_core.py``: sends in every mode, import time and modules in fresh
interpreters, and ``send`` with 0 to 50 receivers for the plot), the
middleware in-process on asyncio and on trio (``bench_middleware.py``),
background sends (``bench_background.py``), ``asignals.otel``'s cost per
send (``bench_otel.py``), the server under load
(``bench_uvicorn.py``, which needs wrk, httptools and uvloop: uvicorn with
h11 on asyncio and with httptools on uvloop), the signal monitor under load
with pages open (``bench_monitor.py``) and the bridge between two
processes (``bench_bridge.py``, which needs redis-server and coredis). Each benchmark checks what it
measures, as when it runs alone. Writes, in ``--out`` (``docs/benchmarks``
by default):

- ``results.json``: the machine, the versions, the settings and every median
  (and, for the server, every round and each setup's noise);
- ``results.md``: the tables, as docs/benchmarks.md shows them;
- ``benchmarks.png``: the cost of a ``send`` against the number of receivers
  for asignals, blinker, Django and the forwarding floor, and the
  middleware's cost per request against the pass-through.

``--quick`` runs a tenth of the calls and one short server round, to check
that everything works, not to publish.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import bench_background
import bench_bridge
import bench_core
import bench_middleware
import bench_monitor
import bench_otel
import bench_uvicorn
from _in_process import setting

HERE = Path(__file__).resolve().parent


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> dict[str, Any]:
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
    packages = [
        "asignals",
        "blinker",
        "django",
        "starlette",
        "anyio",
        "trio",
        "uvicorn",
        "h11",
        "httptools",
        "uvloop",
    ]
    return {
        "python": f"{platform.python_version()} ({sys.implementation.name})",
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "versions": {name: version(name) for name in packages}
        | {"wrk": (wrk.stdout + wrk.stderr).split()[1]},
    }


def describe(host: dict[str, Any]) -> str:
    versions = ", ".join(f"{name} {v}" for name, v in host["versions"].items())
    return (
        f"Python {host['python']} on {host['cpu']} ({host['cpus']} CPUs), "
        f"{host['platform']}; {versions}"
    )


def run(quick: bool) -> tuple[dict[str, Any], str]:
    """Every benchmark: the results, and the Markdown of their tables."""
    rounds, scale = (3, 0.1) if quick else (15, 1.0)
    requests, background_requests = (100, 20) if quick else (1000, 200)
    server_rounds, duration = (1, 1) if quick else (bench_uvicorn.ROUNDS, 5)
    host = machine()
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": host,
    }
    sections = [f"Measured {results['date'][:10]}: {describe(host)}."]

    def step(name: str) -> None:
        print(f"running: {name}", file=sys.stderr)

    step("the signal core")
    rows = bench_core.run(rounds, scale)
    step("import time")
    imports = bench_core.imports(bench_core.import_runs(rounds))
    results["core"] = {
        "rounds": rounds,
        "rows": {row.label: row.as_json() for row in rows},
        "imports": {row.asignals: row.as_json() for row in imports},
    }
    sections.append(
        f"### The signal core\n\nMedian of {rounds} interleaved rounds. Each row says "
        "its mode: `send` with no event loop, or `send_async` sequential or concurrent "
        "on asyncio or trio.\n\n"
        + bench_core.format_tables(rows)
        + "\n\nImport time: each statement in fresh interpreters, interleaved, after a "
        "warm-up run; the median time of the statement, and the modules it adds to "
        "`sys.modules`.\n\n" + bench_core.format_imports(imports)
    )
    step("send with 0 to 50 receivers")
    results["send_by_receivers"] = bench_core.sweep(rounds, scale)

    results["middleware"] = {}
    for backend in ("asyncio", "trio"):
        step(f"the middleware, on {backend}")
        candidates, times = bench_middleware.run(rounds, requests, backend)
        results["middleware"][backend] = {
            "rounds": rounds,
            "requests": requests,
            "times": times,
            "baselines": {c.name: c.baseline for c in candidates if c.baseline},
        }
        sections.append(
            f"### The middleware, in-process, on {backend}\n\n"
            f"{setting(backend, rounds, requests)}.\n\n"
            + bench_middleware.format_table(candidates, times)
        )

    step("background sends")
    background = bench_background.run(rounds, background_requests, "asyncio")
    results["background"] = {"rounds": rounds, "requests": background_requests}
    results["background"]["times"] = background
    sections.append(
        "### Background sends\n\n"
        f"{setting('asyncio', rounds, background_requests)}.\n\n"
        + bench_background.format_table(background)
    )

    step("OpenTelemetry")
    otel = bench_otel.run(rounds, scale)
    results["otel"] = {
        "rounds": rounds,
        "rows": {row.label: row.as_json() for row in otel},
        "sdk_alone": otel.sdk_alone,
    }
    sections.append(
        "### OpenTelemetry\n\n"
        f"{bench_otel.describe(rounds)}. Each row says its mode; the setups are not "
        "instrumented, instrumented with the SDK (spans to an exporter that discards "
        "them) and instrumented with the API's no-op providers.\n\n" + bench_otel.format_table(otel)
    )

    step("the server under load")
    loads = bench_uvicorn.run(server_rounds, duration)
    noise = bench_uvicorn.noise(loads)
    results["uvicorn"] = {
        "rounds": server_rounds,
        "duration": duration,
        "targets": {c.label: c.target for c in bench_uvicorn.CANDIDATES if c.target},
        "setups": {
            setup.label: {
                "flags": setup.flags,
                "noise": noise[setup.label],
                "loads": {
                    label: [vars(load) for load in runs]
                    for label, runs in loads[setup.label].items()
                },
            }
            for setup in bench_uvicorn.SETUPS
        },
    }
    sections.append(
        "### Under uvicorn and wrk\n\n"
        f"{bench_uvicorn.describe_setup(server_rounds, duration)}.\n\n"
        + bench_uvicorn.format_table(loads)
    )

    step("the signal monitor under load")
    monitor_rounds = 1 if quick else 3
    monitor = bench_monitor.run(monitor_rounds, duration)
    results["monitor"] = {
        "rounds": monitor_rounds,
        "duration": duration,
        "candidates": {
            name: [{"load": vars(r.load), "messages": r.messages, "bytes": r.bytes} for r in runs]
            for name, runs in monitor.items()
        },
    }
    sections.append(
        "### The signal monitor under load\n\n"
        f"{bench_monitor.describe(monitor_rounds, duration)}.\n\n"
        + bench_monitor.format_table(monitor)
    )

    step("the bridge between two processes")
    sizes = (
        bench_bridge.Sizes(rounds=1, warmup=10, latency=100, throughput=1000)
        if quick
        else bench_bridge.Sizes(rounds=3, warmup=100, latency=1000, throughput=10_000)
    )
    with (
        tempfile.TemporaryDirectory() as directory,
        bench_bridge.redis_server(directory) as url,
    ):
        bridge = bench_bridge.run(url, sizes)
    results["bridge"] = {
        "sizes": vars(sizes),
        "cases": {
            key: {
                "p50_ns": bench_bridge.percentile(figures.latencies_ns, 0.50),
                "p99_ns": bench_bridge.percentile(figures.latencies_ns, 0.99),
                "rates": figures.rates,
            }
            for key, figures in bridge.items()
        },
    }
    sections.append(
        "### The bridge, between two processes\n\n"
        f"{bench_bridge.setting(sizes)}.\n\n" + bench_bridge.format_table(bridge)
    )
    return results, "\n\n".join(sections) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    """Draw the two figures side by side into ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2), width_ratios=[1, 1.15])

    sweep = results["send_by_receivers"]
    counts = sorted(sweep)
    styles = {
        "asignals": ("asignals", "o-"),
        "blinker": ("blinker", "s--"),
        "django": ("Django", "^--"),
        "floor (loop)": ("forwarding floor (bare loop)", "k:"),
    }
    for key, (label, style) in styles.items():
        left.plot(counts, [sweep[c][key] * 1e6 for c in counts], style, label=label)
    left.set_xlabel("sync receivers connected")
    left.set_ylabel("time per send (µs, median)")
    left.set_title("Signal.send: cost against receivers")
    left.grid(True, alpha=0.3)
    left.legend()

    # The apps without asignals, and asignals' rows that compare with a
    # pass-through (not the monitor's, which compare with other asignals rows).
    middleware = results["middleware"]["asyncio"]
    times, baselines = middleware["times"], middleware["baselines"]
    pass_throughs = {bench_middleware.AROUND, bench_middleware.IN_STACK}
    names = [
        name for name in times if baselines.get(name, next(iter(pass_throughs))) in pass_throughs
    ]
    values = [times[name] * 1e6 for name in names]
    colours = ["#1f77b4" if name in baselines else "#888888" for name in names]
    bars = right.barh(range(len(names)), values, color=colours)
    right.set_yticks(range(len(names)), [name.replace(", ", ",\n", 1) for name in names])
    right.tick_params(axis="y", labelsize=7)
    right.invert_yaxis()
    for bar, name in zip(bars, names, strict=True):
        if name in baselines:
            ratio = times[name] / times[baselines[name]]
            right.annotate(
                f"{ratio:.2f}x its pass-through",
                (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
            )
    right.set_xlim(0, max(values) * 1.35)
    right.set_xlabel("time per request (µs, median, in-process ASGI, asyncio)")
    right.set_title("Middleware: cost per request (grey: no asignals)")
    right.grid(True, axis="x", alpha=0.3)

    host = results["machine"]
    figure.suptitle(
        f"asignals {host['versions']['asignals']} · Python {host['python']} · "
        f"{host['cpu']}, {host['cpus']} CPUs · {results['date'][:10]}"
        + (" · QUICK RUN, NOT FOR PUBLISHING" if results["quick"] else ""),
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=HERE.parent / "docs" / "benchmarks", help="where to write"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a tenth of the calls, for a smoke run"
    )
    args = parser.parse_args()
    bench_uvicorn.need_wrk("run_all.py (its server benchmark)")
    bench_uvicorn.need_packages("run_all.py (its server benchmark)", bench_uvicorn.SETUPS)
    signal.signal(signal.SIGTERM, bench_uvicorn.exit_on_sigterm)
    results, tables = run(args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.md").write_text(tables)
    plot(results, args.out / "benchmarks.png")
    print(tables)
    print(f"wrote results.json, results.md and benchmarks.png in {args.out}")


if __name__ == "__main__":
    main()

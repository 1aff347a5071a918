"""A tour of the asignals core: run it with ``python examples/quickstart.py``.

It connects sync and async receivers to one signal, sends it sequentially and
concurrently, bounds a send with a timeout, and sends from a worker thread.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import anyio.to_thread

from asignals import ANY, Namespace

signals = Namespace()
order_placed = signals.signal("order-placed", "Sent when a customer places an order.")


@order_placed.connect_via(ANY)
def audit(sender: Any, **kwargs: Any) -> str:
    """A sync receiver, as written for blinker."""
    return f"audit: {sender} placed order {kwargs['order_id']}"


@order_placed.connect_via(ANY)
async def notify(sender: Any, **kwargs: Any) -> str:
    """An async receiver that waits on I/O."""
    await anyio.sleep(0.2)
    return f"notify: mailed {sender}"


@order_placed.connect_via(ANY)
async def update_stock(sender: Any, **kwargs: Any) -> str:
    await anyio.sleep(0.2)
    return f"stock: reserved items of order {kwargs['order_id']}"


def report(title: str, results: list[tuple[Any, Any]], seconds: float) -> None:
    print(f"{title} ({seconds:.2f} s)")
    for receiver, value in results:
        print(f"  {receiver.__name__:>12} -> {value}")


async def main() -> None:
    start = time.perf_counter()
    results = await order_placed.send_async("ada", order_id=1)
    report(
        "sequential: the async receivers run one after the other",
        results,
        time.perf_counter() - start,
    )

    start = time.perf_counter()
    results = await order_placed.send_async("ada", order_id=2, _concurrent=True)
    report("concurrent: the async receivers overlap", results, time.perf_counter() - start)

    try:
        await order_placed.send_async("ada", order_id=3, _concurrent=True, _timeout=0.05)
    except TimeoutError as exc:
        print(f"timeout: {exc}")

    # A sync function running in a worker thread (as a sync Starlette
    # endpoint does) can send too: the async receivers run on the event loop.
    start = time.perf_counter()
    results = await anyio.to_thread.run_sync(lambda: order_placed.send("grace", order_id=4))
    report("send() from a worker thread", results, time.perf_counter() - start)


if __name__ == "__main__":
    anyio.run(main)

"""What test_dispatch.py and test_dispatch_concurrent.py share: the per-call
options that select each dispatch path of send_async, and two receivers
whose order shows whether they ran one after the other."""

from typing import Any

import anyio.lowlevel
import pytest

from asignals import Signal

# The inlined sequential loop (no option) and the general sequential path.
SEQUENTIAL_PATHS = [
    pytest.param({}, id="fast-path"),
    pytest.param({"_concurrent": False}, id="general-path"),
]
MODES = [pytest.param(False, id="sequential"), pytest.param(True, id="concurrent")]
ALL_PATHS = [*SEQUENTIAL_PATHS, pytest.param({"_concurrent": True}, id="concurrent")]


def connect_slow_then_fast(sig: Signal, log: list[str]) -> None:
    """A slow receiver that yields several times, then a fast one: run one
    after the other, "fast" comes last in ``log``."""

    async def slow(sender: Any) -> None:
        log.append("slow started")
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        log.append("slow finished")

    async def fast(sender: Any) -> None:
        log.append("fast")

    sig.connect(slow, weak=False)
    sig.connect(fast, weak=False)

"""The soak command (benchmarks/soak.py), run short: it passes on both
backends, and its memory check fails on a deliberate leak. CI runs it at
full length."""

import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"


def soak(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SOAK), "--requests", "2000", *arguments],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_soak_tears_every_request_down_and_does_not_grow(backend: str) -> None:
    done = soak("--backend", backend)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"2,000 requests on {backend}" in done.stdout
    assert "request-tearing-down 2,000" in done.stdout
    assert "FAILED" not in done.stderr


def test_soak_fails_when_requests_are_kept() -> None:
    done = soak("--leak")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED: traced memory grew by" in done.stderr

"""Debian's Chromium, driven by Playwright for Python, for the browser
tests. Importing this skips the importing test module on a machine without
them, saying how to get them."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

HOW_TO_RUN = (
    "the browser tests need Debian's Chromium and Playwright for Python: "
    "run `apt-get install chromium` and `pip install -e '.[test]'`"
)
try:
    from playwright.sync_api import Browser, sync_playwright
except ImportError:
    pytest.skip(f"Playwright is not installed; {HOW_TO_RUN}", allow_module_level=True)
CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip(f"chromium is not installed; {HOW_TO_RUN}", allow_module_level=True)
# Without the background networking, Chromium makes no connection of its own
# (this machine has no network beyond loopback).
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# A bound, reached only when something hangs.
WAIT_MS = 15_000


@contextmanager
def launched() -> Iterator[Browser]:
    """Headless Chromium, closed at the end of the block."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=WAIT_MS)
        try:
            yield chromium
        finally:
            chromium.close()

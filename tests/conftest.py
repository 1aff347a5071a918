from collections.abc import Iterator

import pytest

import asignals.monitor
import asignals.otel

# Fixtures that the modules split from one test module share.
pytest_plugins = [
    "asgi_apps",
    "call_site_apps",
    "lifespan_driving",
    "middleware_apps",
    "monitor_pages",
    "redis_server",
]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every ``@pytest.mark.anyio`` test runs once on asyncio and once on trio."""
    return str(request.param)


@pytest.fixture(params=["sync", "async"])
def receiver_kind(request: pytest.FixtureRequest) -> str:
    """A test's receivers are plain functions, then coroutine functions."""
    return str(request.param)


@pytest.fixture(params=["async", "sync"])
def endpoint_kind(request: pytest.FixtureRequest) -> str:
    """A test's endpoint is a coroutine function (on the event loop), then a
    plain function (in a worker thread)."""
    return str(request.param)


@pytest.fixture(autouse=True)
def no_monitor_left_open() -> Iterator[None]:
    """Fail a test that leaves a signal monitor recording, and close it, so that
    the tests after it run on the signals' unwatched paths. Monitors open
    before the test (a module fixture's) are not its doing."""
    before = asignals.monitor._monitors()
    yield
    leaked = [m for m in asignals.monitor._monitors() if m not in before]
    for monitor in leaked:
        monitor.close()
    assert not leaked, (
        f"the test left {len(leaked)} signal monitor(s) recording: "
        "use `with SignalMonitor() as monitor:`"
    )


@pytest.fixture(autouse=True)
def not_left_instrumented() -> Iterator[None]:
    """Fail a test that leaves asignals instrumented for OpenTelemetry, and
    uninstrument it, so that the tests after it run untraced."""
    yield
    leaked = asignals.otel.is_instrumented()
    asignals.otel.uninstrument()
    assert not leaked, "the test left asignals instrumented: call asignals.otel.uninstrument()"

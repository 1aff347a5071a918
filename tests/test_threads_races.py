"""Races between threads that the churn of test_threads.py can only hit by
chance, made certain: a thread is held in the middle of a change of a
signal, under its lock, while the test collects a sender, reuses its
address, or mutes the signal from another thread."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from asignals import Signal


class Sender:
    """An object sender: weakly referenceable, and collected as soon as its
    last reference goes."""

    def __init__(self, serial: int) -> None:
        self.serial = serial


class SlowHashKey(str):
    """A str sender whose hash, from its second call on (the first is made
    before the signal takes its lock), waits until the test lets it go: a
    connect in another thread then holds the signal's lock for as long as the
    test needs, as a thread preempted in the middle of a change would."""

    def __init__(self, value: str) -> None:
        self.calls = 0
        self.hashing = threading.Event()
        self.go_on = threading.Event()

    def __hash__(self) -> int:
        self.calls += 1
        if self.calls == 2:
            self.hashing.set()
            assert self.go_on.wait(10)
        return str.__hash__(self)


@contextmanager
def change_in_progress(sig: Signal) -> Iterator[None]:
    """Hold a connect in another thread in the middle of its change, under
    the signal's lock, for the duration of the block."""
    key = SlowHashKey("slow")

    def receiver(sender: Any, **kwargs: Any) -> None:
        pass

    connecting = threading.Thread(
        target=partial(sig.connect, receiver, key, weak=False), daemon=True
    )
    connecting.start()
    try:
        assert key.hashing.wait(10)
        yield
    finally:
        key.go_on.set()
        connecting.join(10)
    assert not connecting.is_alive()


def test_a_new_sender_at_a_collected_senders_address_does_not_get_its_receivers() -> None:
    sig = Signal()
    calls: list[Any] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        calls.append(sender)

    sender = Sender(1)
    sig.connect(receiver, sender, weak=False)
    address = id(sender)
    with change_in_progress(sig):
        del sender  # collected; the signal cannot forget it until the change is done
        newcomers = [Sender(2) for _ in range(100)]
        newcomer = next((new for new in newcomers if id(new) == address), None)
        assert newcomer is not None, "no new object took the collected sender's address"
        results = sig.send(newcomer)
        found = list(sig.receivers_for(newcomer))
    assert results == []
    assert calls == []
    assert found == []


class PausingKey(str):
    """A str sender that pauses the thread set in ``pausing`` each time that
    thread hashes it, until the test resumes it: the test can then act at
    every point where a change of the signal in that thread hashes it."""

    def __init__(self, value: str) -> None:
        self.pausing: int | None = None
        self.paused = threading.Event()
        self.resume = threading.Event()

    def __hash__(self) -> int:
        if self.pausing == threading.get_ident():
            self.paused.set()
            assert self.resume.wait(10)
            self.resume.clear()
        return str.__hash__(self)


def test_senders_collected_during_another_threads_change_do_not_break_it() -> None:
    sig = Signal()
    log: list[Any] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        log.append(sender)

    def newcomer(sender: Any, **kwargs: Any) -> str:
        return "newcomer"

    key = PausingKey("pausing")
    senders = [Sender(n) for n in range(10)]
    for sender in [key, *senders]:
        sig.connect(receiver, sender, weak=False)
    del sender
    errors: list[BaseException] = []
    finished = False

    def connect_for_any() -> None:
        nonlocal finished
        key.pausing = threading.get_ident()
        try:
            sig.connect(newcomer, weak=False)  # every sender's plan is rebuilt
        except BaseException as exc:  # reported by the test
            errors.append(exc)
        finally:
            key.pausing = None
            finished = True
            key.paused.set()

    connecting = threading.Thread(target=connect_for_any, daemon=True)
    connecting.start()
    while True:  # one sender collected at each pause of the change
        assert key.paused.wait(10)
        key.paused.clear()
        if finished:
            break
        if senders:
            senders.pop()
        key.resume.set()
    connecting.join(10)
    assert not connecting.is_alive()
    assert errors == []
    assert sig.send(Sender(99)) == [(newcomer, "newcomer")]
    assert log == []


def test_muted_blocks_overlapping_in_two_threads_leave_the_signal_unmuted() -> None:
    sig = Signal()
    log: list[str] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        log.append(sender)

    sig.connect(receiver, weak=False)
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        with sig.muted():
            first_in.set()
            assert second_in.wait(10)
        first_out.set()

    def second() -> None:
        assert first_in.wait(10)
        with sig.muted():
            second_in.set()
            assert first_out.wait(10)

    threads = [
        threading.Thread(target=guarded_append(errors, action)) for action in (first, second)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    # Both blocks are over: nothing mutes the signal any more.
    assert not sig.is_muted
    sig.send("after")
    assert log == ["after"]


def guarded_append(errors: list[BaseException], action: Callable[[], None]) -> Callable[[], None]:
    def target() -> None:
        try:
            action()
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    return target

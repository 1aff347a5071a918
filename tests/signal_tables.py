"""Reading a signal's internal tables, for the tests that check that
connect/disconnect churn and collected receivers and senders leave nothing
behind."""

from asignals import Signal


def bookkeeping(sig: Signal) -> tuple[int, int, int, int, int, int]:
    """The sizes of a signal's internal tables."""
    return (
        len(sig.receivers),
        len(sig._connections),
        len(sig._by_sender),
        len(sig._sender_refs),
        len(sig._plans or ()),
        len(sig._retired),
    )

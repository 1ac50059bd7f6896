"""Mail that a command writes: handed to the queue after the commit when a broker is configured, as the API does;
otherwise left in the outbox for the beat's sweeper. Either way the command says which, and never more."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import typer

from twofa import outbox
from twofa.outbox import OutboxRef
from twofa.settings import get_settings

HandOver = Callable[[Sequence[OutboxRef]], list[int]]


def broker_configured() -> bool:
    """Set by the operator (``TWOFA_BROKER_URL``), not the default: a command run where no broker was meant to be
    must not wait on one, nor drop mail on a Redis that happens to listen there."""
    return "broker_url" in get_settings().model_fields_set


def _celery_hand_over() -> HandOver:
    from workers.app import app  # loaded by commands that wrote mail, and only when a broker is configured
    from workers.dispatch import CeleryDispatcher

    return CeleryDispatcher(app).hand_over


def _plural(n: int) -> tuple[str, str]:
    return (f"{n} email", "it") if n == 1 else (f"{n} emails", "them")


class CliDispatcher:
    """The dispatcher a command runs under: hands committed rows on and counts what became of them."""

    def __init__(self, hand_over: Callable[[], HandOver | None]) -> None:
        self._make = hand_over
        self._hand_over: HandOver | None = None
        self.queued = 0
        self.refused = 0
        self.unsent = 0  # no broker configured

    def __call__(self, refs: Sequence[OutboxRef]) -> None:
        if self._hand_over is None:
            self._hand_over = self._make()
        if self._hand_over is None:
            self.unsent += len(refs)
            return
        refused = len(self._hand_over(refs))
        self.queued += len(refs) - refused
        self.refused += refused

    def summary(self) -> list[str]:
        lines = []
        if self.queued:
            what, it = _plural(self.queued)
            lines.append(f"mail: {what} handed to the queue; a worker sends {it}")
        for count, why in (
            (self.refused, "the broker did not take {it}"),
            (self.unsent, "no broker is configured, TWOFA_BROKER_URL"),
        ):
            if count:
                what, it = _plural(count)
                verb = "waits" if count == 1 else "wait"
                reason = why.format(it=it)
                lines.append(f"mail: {what} {verb} in the outbox ({reason}); the beat's outbox sweeper will send {it}")
        return lines


def _default_hand_over() -> HandOver | None:
    return _celery_hand_over() if broker_configured() else None


@contextmanager
def handed_on(hand_over: Callable[[], HandOver | None] = _default_hand_over) -> Iterator[CliDispatcher]:
    """Run a command with mail handed on after each commit, then say what became of it (nothing if none)."""
    dispatcher = CliDispatcher(hand_over)
    previous = outbox.install_dispatcher(dispatcher)
    try:
        yield dispatcher
    finally:
        outbox.install_dispatcher(previous)
        for line in dispatcher.summary():
            typer.echo(line)

"""What a command says about the mail it wrote: handed to the queue, or left to the beat's sweeper, and why."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from cli.mail import CliDispatcher, HandOver, handed_on
from twofa import outbox
from twofa.outbox import OutboxRef


def test_some_taken_some_refused_each_said_once() -> None:
    def hand_over(refs: Sequence[OutboxRef]) -> list[int]:
        return [ref.id for ref in refs if ref.id > 3]  # the broker went away after the third

    def make() -> HandOver:
        return hand_over

    dispatcher = CliDispatcher(make)
    dispatcher([OutboxRef(i, "mail") for i in range(1, 6)])
    assert dispatcher.summary() == [
        "mail: 3 emails handed to the queue; a worker sends them",
        "mail: 2 emails wait in the outbox (the broker did not take them); the beat's outbox sweeper will send them",
    ]


def test_nothing_written_nothing_said_and_the_previous_dispatcher_comes_back(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def before(refs: Sequence[OutboxRef]) -> None:
        raise AssertionError("not while a command runs")

    previous = outbox.install_dispatcher(before)
    try:
        with handed_on(lambda: None) as dispatcher:
            assert outbox.install_dispatcher(dispatcher) is dispatcher  # the command's, while it runs
        assert capsys.readouterr().out == ""
        assert outbox.install_dispatcher(previous) is before
    finally:
        outbox.install_dispatcher(previous)

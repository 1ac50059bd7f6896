"""The Celery dispatcher: ids only, email codes alone on their queue, bulk mail in batches."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from twofa import outbox
from twofa.clock import FrozenClock
from twofa.db import transaction
from twofa.models import OutboxMessage
from twofa.outbox import OutboxRef
from workers.dispatch import DELIVER_BATCH_TASK, DELIVER_TASK, CeleryDispatcher


class RecordingApp:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, Any, str]] = []
        self.fail = fail

    def send_task(self, name: str, args: Any, queue: str) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.sent.append((name, args, queue))


def test_codes_go_alone_and_bulk_mail_in_batches() -> None:
    app = RecordingApp()
    refs = [OutboxRef(1, "otp"), *(OutboxRef(i, "mail") for i in range(2, 7)), OutboxRef(7, "otp")]
    CeleryDispatcher(app, batch_size=2)(refs)  # type: ignore[arg-type]
    assert app.sent == [
        (DELIVER_TASK, [1], "otp"),
        (DELIVER_TASK, [7], "otp"),
        (DELIVER_BATCH_TASK, [[2, 3]], "mail"),
        (DELIVER_BATCH_TASK, [[4, 5]], "mail"),
        (DELIVER_BATCH_TASK, [[6]], "mail"),
    ]


def test_a_single_mail_goes_as_a_single_task() -> None:
    app = RecordingApp()
    CeleryDispatcher(app)([OutboxRef(3, "mail")])  # type: ignore[arg-type]
    assert app.sent == [(DELIVER_TASK, [3], "mail")]


def test_a_broker_outage_does_not_fail_the_committed_request(caplog: pytest.LogCaptureFixture) -> None:
    CeleryDispatcher(RecordingApp(fail=True))([OutboxRef(1, "otp")])  # type: ignore[arg-type]
    assert "the outbox sweeper will retry" in caplog.text


def test_only_committed_mail_is_handed_to_the_queue(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    """The task is sent after the commit, with the row id; a rolled-back transaction leaves no row and sends
    nothing (the event that caused the email did not happen)."""
    handed: list[list[OutboxRef]] = []
    previous = outbox.install_dispatcher(lambda refs: handed.append(list(refs)))
    try:
        with pytest.raises(RuntimeError), transaction(factory) as s:
            outbox.enqueue(s, template="policy_reminder", to="gone@example.com", context={}, clock=clock)
            s.flush()
            raise RuntimeError("the request failed after writing its email")
        assert handed == []
        with transaction(factory) as s:
            kept = outbox.enqueue(s, template="policy_reminder", to="kept@example.com", context={}, clock=clock)
            assert handed == []  # not before the commit
        assert handed == [[OutboxRef(kept.id, "mail")]]
    finally:
        outbox.install_dispatcher(previous)
    with factory() as s:
        assert s.execute(select(OutboxMessage.to_address)).scalars().all() == ["kept@example.com"]


def test_hand_over_names_the_rows_the_broker_did_not_take() -> None:
    """What a command run by hand reports (cli.mail): the rows left to the sweeper, by id."""
    refs = [OutboxRef(1, "otp"), *(OutboxRef(i, "mail") for i in (2, 3, 4))]
    assert CeleryDispatcher(RecordingApp(fail=True), batch_size=2).hand_over(refs) == [1, 2, 3, 4]  # type: ignore[arg-type]
    assert CeleryDispatcher(RecordingApp()).hand_over(refs) == []  # type: ignore[arg-type]

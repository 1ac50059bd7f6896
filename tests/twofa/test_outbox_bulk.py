"""Writing many outbox rows at once: each key once, in one statement whatever the number of rows."""

from __future__ import annotations

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from twofa import outbox
from twofa.clock import FrozenClock
from twofa.db import transaction
from twofa.models import OutboxMessage

pytestmark = pytest.mark.usefixtures("no_dispatch")


def messages(keys: range) -> list[dict[str, object]]:
    return [
        {"template": "policy_reminder", "to": f"m{i}@example.com", "dedupe_key": f"k{i}", "context": {"n": i}}
        for i in keys
    ]


@pytest.mark.committed
def test_many_rows_one_statement_each_key_once(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    statements: list[str] = []
    engine = factory.kw["bind"]

    def listener(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    with transaction(factory) as s:
        first = outbox.enqueue_unique(s, messages(range(7000)), clock=clock)
    assert len(first) == 7000
    event.listen(engine, "before_cursor_execute", listener)
    try:
        with transaction(factory) as s:  # more rows than 65,535 parameters would allow in one VALUES list
            again = outbox.enqueue_unique(s, messages(range(6990, 13000)), clock=clock)
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert sorted(again) == sorted(f"k{i}" for i in range(7000, 13000))  # the ten known keys are skipped
    if engine.dialect.name == "postgresql":
        assert len([sql for sql in statements if sql.lstrip().upper().startswith("INSERT")]) == 1
    with factory() as s:
        assert s.execute(select(func.count()).select_from(OutboxMessage)).scalar_one() == 13000
        row = s.execute(select(OutboxMessage).where(OutboxMessage.dedupe_key == "k12999")).scalar_one()
        assert (row.context, row.status, row.created_at, row.to_address) == (
            {"n": 12999},
            "queued",
            clock.now(),
            "m12999@example.com",
        )

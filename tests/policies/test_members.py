"""An organisation's member rows cost the same few statements for 3 members as for 30 (no statement per member)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from policies.members import member_rows
from tests.helpers import make_user
from twofa import accounts
from twofa.clock import FrozenClock


@contextmanager
def statements(factory: sessionmaker[Session]) -> Iterator[list[str]]:
    seen: list[str] = []
    engine = factory.kw["bind"]

    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_member_rows_take_a_fixed_number_of_statements(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    counts: list[int] = []
    made = 0
    for total in (3, 30):
        for i in range(made, total):
            make_user(factory, f"m{i}@acme.io", role=("owner", "finance", "member")[i % 3], clock=clock)
            made += 1
        with factory() as s:
            org = accounts.get_org(s, "acme")
            assert org is not None
            with statements(factory) as seen:
                rows = member_rows(s, org.id, clock.now())
            assert len(rows) == made == total
            counts.append(len([q for q in seen if q.lstrip().upper().startswith("SELECT")]))
    assert counts[0] == counts[1] <= 5

"""One delivery attempt of an outbox row, as the worker and the synchronous dispatcher make it: delivered, or its
failure recorded on the row."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.mail import pg_delivery
from twofa.mail.backends import MailBackend, PermanentMailError, TransientMailError
from twofa.mail.delivery import deliver, record_failure


def attempt(
    session: Session,
    outbox_id: int,
    backend: MailBackend,
    *,
    retry_in: timedelta,
    give_up: bool = False,
    clock: Clock = SYSTEM_CLOCK,
) -> tuple[str, bool]:
    """One delivery attempt, committed; a mail error is recorded on the row (through ``session``), not raised.
    Returns the outcome (a ``Delivery`` value, "retry" or "failed") and whether to try again after ``retry_in``.

    On PostgreSQL (psycopg) the delivery takes ``pg_delivery``'s two round trips, on a connection of the delivery's
    own pool, and ``session`` is used only to record a failure; a database error is then psycopg's, not
    SQLAlchemy's."""
    bind = session.get_bind()
    try:
        if isinstance(bind, Engine) and (bind.dialect.name, bind.dialect.driver) == ("postgresql", "psycopg"):
            status = pg_delivery.deliver(bind, outbox_id, backend, clock).value
        else:
            status = deliver(session, outbox_id, backend, clock).value
            session.commit()
        return status, False
    except (TransientMailError, PermanentMailError) as exc:
        session.rollback()
        permanent = give_up or isinstance(exc, PermanentMailError)
        again = record_failure(session, outbox_id, str(exc), permanent=permanent, retry_in=retry_in, clock=clock)
        session.commit()
        return ("retry" if again else "failed"), again
    except BaseException:
        session.rollback()
        raise

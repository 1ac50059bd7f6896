"""The beat jobs: expire codes, sweep the outbox. Both are safe to run twice, or twice at once."""

from __future__ import annotations

from twofa import maintenance
from twofa.db import transaction
from twofa.mail import sweep
from workers.app import app
from workers.dispatch import CeleryDispatcher


@app.task(name="twofa.expire_codes")
def expire_codes() -> dict[str, int]:
    with transaction() as session:
        done = maintenance.expire(session)
    return {"codes": done.codes, "mails": done.mails, "purged": done.purged}


@app.task(name="twofa.sweep_outbox")
def sweep_outbox() -> int:
    with transaction() as session:
        refs = sweep.stale(session)
    CeleryDispatcher(app)(refs)
    return len(refs)

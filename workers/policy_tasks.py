"""The policy job: reminders and escalations. Safe to run twice, or twice at once (unique outbox keys)."""

from __future__ import annotations

from policies import reminders
from twofa.db import transaction
from workers.app import app


@app.task(name="twofa.enforce_policies")
def enforce_policies() -> int:
    with transaction() as session:
        return len(reminders.run(session).sent)

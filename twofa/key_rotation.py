"""Re-encrypting every TOTP seed under the first key of ``TWOFA_SECRET_KEY`` (``twofa keys rotate``), so that the
keys after it can be retired.

Safe while the service runs and safe to run twice: a batch locks its device rows (``FOR UPDATE``, in id order) and
rewrites only the ciphertext of the rows it read under that lock, so a seed replaced meanwhile is never overwritten
with the old one, and a sign-in's step is never undone; a seed already under the first key is left as it is. Sign-ins
lock a user, then that user's device; a batch locks devices only, so the two never wait for each other in a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.fernet import InvalidToken
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from twofa import crypto
from twofa.models import TotpDevice

BATCH_SIZE = 500  # rows locked at once: a sign-in that needs one of them waits for one short transaction at most


@dataclass(frozen=True)
class Batch:
    """One batch's work: the last device id it read (the next batch starts after it), the rows it read, the seeds
    it re-encrypted, and the seeds no configured key decrypts (their users must set up their app again)."""

    last_id: int
    read: int
    rotated: int
    undecryptable: int


def seed_count(session: Session) -> int:
    return int(session.execute(select(func.count()).select_from(TotpDevice)).scalar_one())


_UPDATE = (
    update(TotpDevice)
    .where(TotpDevice.id == bindparam("device_id"))
    .values(secret_ciphertext=bindparam("ciphertext"))
    .execution_options(synchronize_session=False)
)


def rotate_batch(session: Session, after_id: int = 0, size: int = BATCH_SIZE) -> Batch | None:
    """Re-encrypt, under the first key, the seeds of up to ``size`` devices after ``after_id``; None when there are
    none left. The caller commits (one transaction per batch keeps the locks short)."""
    rows = session.execute(
        select(TotpDevice.id, TotpDevice.secret_ciphertext)
        .where(TotpDevice.id > after_id)
        .order_by(TotpDevice.id)
        .limit(size)
        .with_for_update()
    ).all()
    if not rows:
        return None
    changes: list[dict[str, object]] = []
    undecryptable = 0
    for device_id, ciphertext in rows:
        try:
            rotated = crypto.reencrypt(ciphertext)
        except InvalidToken:
            undecryptable += 1
            continue
        if rotated is not None:
            changes.append({"device_id": device_id, "ciphertext": rotated})
    if changes:
        session.connection().execute(_UPDATE, changes)
    return Batch(last_id=rows[-1].id, read=len(rows), rotated=len(changes), undecryptable=undecryptable)

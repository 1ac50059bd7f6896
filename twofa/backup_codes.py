"""Backup codes (look-up secrets): ten single-use codes, shown once, stored as salted argon2id hashes.

One salt per set: checking a submitted code costs one KDF evaluation, compared against the ten stored hashes,
instead of ten evaluations with ten salts.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from argon2.low_level import Type, hash_secret_raw
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from twofa import audit, crypto
from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.errors import BackupCodeUsed, InvalidCode, MalformedBackupCode, recorded
from twofa.models import BackupCode, BackupCodeSet, User
from twofa.settings import get_settings

# Crockford's base32: no I, L, O or U, so codes read aloud and typed from paper survive. 10 symbols = 50 bits.
ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
GROUP = 5
LENGTH = 10
_READ_AS = str.maketrans({"o": "0", "i": "1", "l": "1"})


@dataclass(frozen=True)
class KdfParams:
    time_cost: int
    memory_cost: int
    parallelism: int


def _kdf(code: str, salt: bytes, params: KdfParams) -> bytes:
    return hash_secret_raw(code.encode(), salt, params.time_cost, params.memory_cost, params.parallelism, 32, Type.ID)


def new_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
    return f"{raw[:GROUP]}-{raw[GROUP:]}"


def normalize(code: object) -> str:
    """The canonical 10 symbols of a backup code, forgiving case, spaces, dashes and O/I/L for 0/1."""
    if not isinstance(code, str) or len(code) > 32:
        raise MalformedBackupCode()
    raw = code.strip().lower().replace("-", "").replace(" ", "").translate(_READ_AS)
    if len(raw) != LENGTH or not raw.isascii() or any(c not in ALPHABET for c in raw):
        raise MalformedBackupCode()
    return raw


def looks_like_backup_code(code: str) -> bool:
    try:
        normalize(code)
    except MalformedBackupCode:
        return False
    return True


def _active_set(session: Session, user_id: int) -> BackupCodeSet | None:
    return session.execute(
        select(BackupCodeSet)
        .where(BackupCodeSet.user_id == user_id, BackupCodeSet.revoked_at.is_(None))
        .order_by(BackupCodeSet.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def revoke_all(session: Session, user_id: int, clock: Clock = SYSTEM_CLOCK) -> None:
    session.execute(
        update(BackupCodeSet)
        .where(BackupCodeSet.user_id == user_id, BackupCodeSet.revoked_at.is_(None))
        .values(revoked_at=clock.now())
        .execution_options(synchronize_session=False)
    )


def generate(session: Session, user: User, clock: Clock = SYSTEM_CLOCK) -> list[str]:
    """A fresh set of codes for ``user``; the previous set stops working. Returns the codes, shown once."""
    s = get_settings()
    revoke_all(session, user.id, clock)
    params = KdfParams(s.argon2_time_cost, s.argon2_memory_cost, s.argon2_parallelism)
    code_set = BackupCodeSet(
        user_id=user.id,
        salt=secrets.token_bytes(16),
        time_cost=params.time_cost,
        memory_cost=params.memory_cost,
        parallelism=params.parallelism,
        created_at=clock.now(),
    )
    session.add(code_set)
    session.flush()
    codes = [new_code() for _ in range(s.backup_code_count)]
    session.add_all(BackupCode(set_id=code_set.id, code_hash=_kdf(normalize(c), code_set.salt, params)) for c in codes)
    session.flush()
    return codes


def remaining(session: Session, user_id: int) -> int:
    return session.execute(
        select(func.count(BackupCode.id))
        .join(BackupCodeSet, BackupCode.set_id == BackupCodeSet.id)
        .where(
            BackupCodeSet.user_id == user_id,
            BackupCodeSet.revoked_at.is_(None),
            BackupCode.used_at.is_(None),
        )
    ).scalar_one()


def use(session: Session, user: User, code: str, clock: Clock = SYSTEM_CLOCK) -> int:
    """Spend one backup code of ``user``; returns how many remain. The caller holds the user row lock."""
    raw = normalize(code)
    code_set = _active_set(session, user.id)
    if code_set is None:
        raise InvalidCode("this account has no backup codes")
    params = KdfParams(code_set.time_cost, code_set.memory_cost, code_set.parallelism)
    digest = _kdf(raw, code_set.salt, params)
    rows = session.execute(select(BackupCode).where(BackupCode.set_id == code_set.id)).scalars().all()
    match: BackupCode | None = None
    for row in rows:  # compare with every row, so the time does not tell which one matched
        if crypto.same(row.code_hash, digest):
            match = row
    if match is None:
        raise InvalidCode("this backup code is not valid")
    spent = session.execute(
        update(BackupCode)
        .where(BackupCode.id == match.id, BackupCode.used_at.is_(None))
        .values(used_at=clock.now())
        .returning(BackupCode.id)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    if spent is None:
        audit.record(session, audit.Event.BACKUP_CODE_REUSED, user_id=user.id, clock=clock)
        raise recorded(BackupCodeUsed())
    left = remaining(session, user.id)
    audit.record(session, audit.Event.BACKUP_CODE_USED, user_id=user.id, details={"remaining": left}, clock=clock)
    return left

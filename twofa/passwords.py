"""Password hashing with argon2id."""

from __future__ import annotations

from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from twofa.settings import get_settings


@lru_cache(maxsize=1)
def _hasher() -> PasswordHasher:
    s = get_settings()
    return PasswordHasher(
        time_cost=s.argon2_time_cost, memory_cost=s.argon2_memory_cost, parallelism=s.argon2_parallelism
    )


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher().hash("not a real password")


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when ``password`` matches. With no hash (unknown account) it still spends one evaluation, so the
    answer takes as long for an unknown email as for a known one."""
    try:
        return _hasher().verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def reset_caches() -> None:
    _hasher.cache_clear()
    _dummy_hash.cache_clear()

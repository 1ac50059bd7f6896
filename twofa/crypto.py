"""Keys, hashes and tokens.

- TOTP seeds are encrypted with Fernet (MultiFernet over ``TWOFA_SECRET_KEY``; several comma-separated keys rotate:
  the first encrypts, all decrypt; ``twofa keys rotate`` re-encrypts every seed under the first).
- High-entropy tokens (sessions, login challenges, API keys) are stored as SHA-256: guessing is hopeless.
- Low-entropy codes (6-digit email codes) are stored as HMAC-SHA256 under a key derived from the secret key, so a
  copy of the database alone does not reveal them by enumerating a million candidates: hashed under the first key,
  verified under each (``keyed_hash_matches``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from twofa.settings import secret_keys


def _derive(master: str, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(master.encode())


def _master_keys() -> list[str]:
    keys = secret_keys()
    if not keys:
        raise ValueError("TWOFA_SECRET_KEY is empty")
    return keys


@lru_cache(maxsize=4)
def _fernets(keys: tuple[str, ...]) -> tuple[Fernet, ...]:
    return tuple(Fernet(base64.urlsafe_b64encode(_derive(k, b"twofa totp seed"))) for k in keys)


def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet(_fernets(keys))


def encrypt(plaintext: str) -> str:
    return _fernet(tuple(_master_keys())).encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    return _fernet(tuple(_master_keys())).decrypt(token.encode()).decode()


def reencrypt(token: str) -> str | None:
    """``token`` encrypted under the first key, or None when it already is (``twofa keys rotate``). Raises
    ``cryptography.fernet.InvalidToken`` when no configured key decrypts it."""
    keys = tuple(_master_keys())
    try:
        _fernets(keys)[0].decrypt(token.encode())
        return None
    except InvalidToken:
        return _fernet(keys).rotate(token.encode()).decode()


def new_token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@lru_cache(maxsize=16)
def _hash_key(master: str, purpose: str) -> bytes:
    return _derive(master, b"twofa keyed hash " + purpose.encode())


def keyed_hash(purpose: str, value: str) -> bytes:
    """The hash to store: under the first key."""
    return hmac.new(_hash_key(_master_keys()[0], purpose), value.encode(), hashlib.sha256).digest()


def keyed_hash_matches(purpose: str, value: str, digest: bytes) -> bool:
    """Whether ``digest`` is ``value``'s keyed hash under any configured key: a hash stored before a rotation still
    verifies while its old key is configured. Every key is tried, each compared in constant time, so the time taken
    says nothing of which key matched."""
    matched = False
    for key in _master_keys():
        candidate = hmac.new(_hash_key(key, purpose), value.encode(), hashlib.sha256).digest()
        matched |= hmac.compare_digest(candidate, digest)
    return matched


def same(a: bytes, b: bytes) -> bool:
    """Constant-time equality for secrets."""
    return hmac.compare_digest(a, b)

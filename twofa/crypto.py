"""Keys, hashes and tokens.

- TOTP seeds are encrypted with Fernet (MultiFernet over ``TWOFA_SECRET_KEY``; several comma-separated keys rotate:
  the first encrypts, all decrypt).
- High-entropy tokens (sessions, login challenges, API keys) are stored as SHA-256: guessing is hopeless.
- Low-entropy codes (6-digit email codes) are stored as HMAC-SHA256 under a key derived from the secret key, so a
  copy of the database alone does not reveal them by enumerating a million candidates.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from functools import lru_cache

from cryptography.fernet import Fernet, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from twofa.settings import get_settings


def _derive(master: str, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(master.encode())


def _master_keys() -> list[str]:
    keys = [k.strip() for k in get_settings().secret_key.get_secret_value().split(",") if k.strip()]
    if not keys:
        raise ValueError("TWOFA_SECRET_KEY is empty")
    return keys


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(base64.urlsafe_b64encode(_derive(k, b"twofa totp seed"))) for k in keys])


def encrypt(plaintext: str) -> str:
    return _fernet(tuple(_master_keys())).encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    return _fernet(tuple(_master_keys())).decrypt(token.encode()).decode()


def new_token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@lru_cache(maxsize=16)
def _hash_key(master: str, purpose: str) -> bytes:
    return _derive(master, b"twofa keyed hash " + purpose.encode())


def keyed_hash(purpose: str, value: str) -> bytes:
    return hmac.new(_hash_key(_master_keys()[0], purpose), value.encode(), hashlib.sha256).digest()


def same(a: bytes, b: bytes) -> bool:
    """Constant-time equality for secrets."""
    return hmac.compare_digest(a, b)

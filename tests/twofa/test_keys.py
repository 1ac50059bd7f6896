"""The secret key: weak keys refused by the one check every edge uses; email-code hashes verify under every key."""

from __future__ import annotations

import pytest

from twofa import crypto
from twofa.errors import InvalidInput
from twofa.settings import DEV_SECRET_KEY, Settings, get_settings, require_secret_key

STRONG = "new-key-ZYXWVUTSRQPONMLKJIHGFEDCBA-9876543210"
FIFTEEN_DISTINCT = "abcdefghijklmno" * 3  # 45 characters, 15 of them distinct


def settings(key: str) -> Settings:
    return Settings(secret_key=key)  # type: ignore[arg-type]  (pydantic turns the str into a SecretStr)


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (DEV_SECRET_KEY, "it is the development key"),
        (FIFTEEN_DISTINCT, "it has fewer than 16 distinct characters"),
        ("short-but-varied-0123", "it is shorter than 32 characters"),
        ("", "it is empty"),
        (f"{STRONG},{FIFTEEN_DISTINCT}", "its key 2 of 2 has fewer than 16 distinct characters"),
    ],
)
def test_weak_keys_are_refused_without_showing_them(key: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        require_secret_key(settings(key))
    line = refused.value.message
    assert line.startswith("set TWOFA_SECRET_KEY to a random secret of 32+ characters") and reason in line
    assert "\n" not in line
    assert not any(part and part in line for part in key.split(","))


def test_sixteen_distinct_characters_pass() -> None:
    require_secret_key(settings("abcdefghijklmnop" * 2))
    require_secret_key(settings(f"{STRONG}, {STRONG[::-1]}"))


def test_the_rotation_needs_only_its_first_key_strong() -> None:
    """``twofa keys rotate`` moves the seeds away from a weak old key: only the new one must be strong."""
    require_secret_key(settings(f"{STRONG},{DEV_SECRET_KEY}"), first_only=True)
    with pytest.raises(InvalidInput, match="development key"):
        require_secret_key(settings(f"{DEV_SECRET_KEY},{STRONG}"), first_only=True)


def test_email_code_hashes_verify_under_every_configured_key(monkeypatch: pytest.MonkeyPatch) -> None:
    old_hash = crypto.keyed_hash("email_otp", "17:123456")  # under the tests' key
    old_key = get_settings().secret_key.get_secret_value()
    monkeypatch.setenv("TWOFA_SECRET_KEY", f"{STRONG},{old_key}")
    get_settings.cache_clear()
    assert crypto.keyed_hash("email_otp", "17:123456") != old_hash  # new hashes are under the new key
    assert crypto.keyed_hash_matches("email_otp", "17:123456", old_hash)
    assert crypto.keyed_hash_matches("email_otp", "17:123456", crypto.keyed_hash("email_otp", "17:123456"))
    assert not crypto.keyed_hash_matches("email_otp", "17:654321", old_hash)
    assert not crypto.keyed_hash_matches("backup", "17:123456", old_hash)  # the purpose is part of the key
    monkeypatch.setenv("TWOFA_SECRET_KEY", STRONG)  # the old key retired: its hashes no longer verify
    get_settings.cache_clear()
    assert not crypto.keyed_hash_matches("email_otp", "17:123456", old_hash)

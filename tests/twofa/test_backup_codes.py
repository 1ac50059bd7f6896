"""Backup codes: format, single use, one KDF evaluation per check, regeneration."""

from __future__ import annotations

import math
import re

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from policies.gate import enrolment_required
from tests.helpers import PASSWORD, enrol_totp, make_user, subjects
from tests.twofa.test_login import WEB, begin, finish
from twofa import backup_codes, enrolment, logins, manage, totp
from twofa.clock import FrozenClock
from twofa.db import transaction
from twofa.errors import BackupCodeUsed, InvalidCode, MalformedBackupCode, MalformedCode
from twofa.mail.backends import MemoryBackend
from twofa.models import AuditEvent, BackupCode, BackupCodeSet


def test_codes_are_readable_and_strong() -> None:
    code = backup_codes.new_code()
    assert re.fullmatch(r"[0-9a-hjkmnp-tv-z]{5}-[0-9a-hjkmnp-tv-z]{5}", code)
    assert math.log2(len(backup_codes.ALPHABET)) * backup_codes.LENGTH >= 40
    assert backup_codes.normalize(code.upper().replace("-", " ")) == code.replace("-", "")
    for bad in ("abcde-fghi", "abcde-fghiu", "", "ａｂｃｄｅ-ｆｇｈｊｋ", "x" * 40):
        with pytest.raises(MalformedBackupCode):
            backup_codes.normalize(bad)


def test_stored_as_salted_kdf_hashes(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    user = make_user(factory, clock=clock)
    _, codes = enrol_totp(factory, user, clock)
    with factory() as s:
        code_set = s.execute(select(BackupCodeSet)).scalar_one()
        hashes = s.execute(select(BackupCode.code_hash)).scalars().all()
    assert len(code_set.salt) >= 4 and len(hashes) == 10
    for code in codes:
        raw = code.replace("-", "").encode()
        assert all(raw not in h and code.encode() not in h for h in hashes)


def test_login_with_a_backup_code_once(
    factory: sessionmaker[Session], clock: FrozenClock, mailbox: MemoryBackend
) -> None:
    user = make_user(factory, clock=clock)
    _, codes = enrol_totp(factory, user, clock)
    done = finish(factory, begin(factory, user.email, clock).challenge, codes[3].upper(), clock)
    assert done.method == "backup_code"
    with factory() as s:
        assert manage.status(s, user).backup_codes_left == 9
    with pytest.raises(BackupCodeUsed):
        finish(factory, begin(factory, user.email, clock).challenge, codes[3], clock)
    with factory() as s:
        events = s.execute(select(AuditEvent.event).order_by(AuditEvent.id)).scalars().all()
    assert events.count("backup_code_used") == 1 and events.count("backup_code_reuse_refused") == 1
    assert [s for s in subjects(mailbox, user.email) if s.startswith("A backup code was used to sign in")]


def test_few_left_warns(factory: sessionmaker[Session], clock: FrozenClock, mailbox: MemoryBackend) -> None:
    user = make_user(factory, clock=clock)
    _, codes = enrol_totp(factory, user, clock)
    for code in codes[:7]:
        finish(factory, begin(factory, user.email, clock).challenge, code, clock)
    assert subjects(mailbox, user.email).count("Only 3 backup codes left") == 1


def test_one_kdf_evaluation_per_check(
    factory: sessionmaker[Session], clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = make_user(factory, clock=clock)
    _, codes = enrol_totp(factory, user, clock)
    calls = []
    real = backup_codes._kdf
    monkeypatch.setattr(backup_codes, "_kdf", lambda *a: calls.append(1) or real(*a))
    finish(factory, begin(factory, user.email, clock).challenge, codes[9], clock)
    assert len(calls) == 1
    with pytest.raises(InvalidCode):
        finish(factory, begin(factory, user.email, clock).challenge, "zzzzz-zzzzz", clock)
    assert len(calls) == 2


def test_regeneration_needs_a_current_code_and_voids_the_old_set(
    factory: sessionmaker[Session], clock: FrozenClock, mailbox: MemoryBackend
) -> None:
    user = make_user(factory, clock=clock)
    secret, old = enrol_totp(factory, user, clock)
    with pytest.raises(MalformedCode), transaction(factory) as s:
        manage.regenerate_backup_codes(s, user, PASSWORD, old[0], clock)
    with transaction(factory) as s:
        new = manage.regenerate_backup_codes(s, user, PASSWORD, totp.code_at(secret, clock.now()), clock)
    assert len(new) == 10 and not set(new) & set(old)
    with pytest.raises(InvalidCode):
        finish(factory, begin(factory, user.email, clock).challenge, old[1], clock)
    finish(factory, begin(factory, user.email, clock).challenge, new[1], clock)
    with factory() as s:
        assert manage.status(s, user).backup_codes_left == 9
    assert "New backup codes were generated" in subjects(mailbox, user.email)


def test_reenabling_issues_a_fresh_set(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    user = make_user(factory, clock=clock)
    secret, old = enrol_totp(factory, user, clock)
    with transaction(factory) as s:
        manage.disable(s, user, PASSWORD, totp.code_at(secret, clock.now()), clock=clock)
    _, new = enrol_totp(factory, user, clock)
    assert not set(new) & set(old)
    with pytest.raises(InvalidCode):
        finish(factory, begin(factory, user.email, clock).challenge, old[0], clock)
    with transaction(factory) as s:
        result = logins.login_with_password(s, user.email, PASSWORD, WEB, gate=enrolment_required, clock=clock)
    assert isinstance(result, logins.SecondFactorRequired)
    finish(factory, result.challenge, new[0], clock)
    with transaction(factory) as s:
        assert enrolment is not None and backup_codes.remaining(s, user.id) == 9

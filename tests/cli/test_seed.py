"""``twofa seed``: sample data written in bulk, with one random password shown once."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from cli import seed as seed_command
from cli.main import app
from tests.cli.common import count
from twofa import backup_codes, crypto
from twofa.models import AuditEvent, BackupCode, LoginHistory, Membership, OutboxMessage, TotpDevice, User
from twofa.passwords import hash_password, verify_password

PASSWORD_LINE = re.compile(r"their password \(shown once\): ([A-Za-z0-9]{16})")


def _no_backup_codes(*_: object) -> bytes:
    raise AssertionError("seeding evaluates no backup-code KDF")


def test_seed_writes_members_in_bulk_with_one_random_password(
    cli: CliRunner, factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed: list[str] = []

    def counting_hash(password: str) -> str:
        hashed.append(password)
        return hash_password(password)

    monkeypatch.setattr(seed_command, "hash_password", counting_hash)
    monkeypatch.setattr(backup_codes, "_kdf", _no_backup_codes)

    result = cli.invoke(app, ["seed", "--orgs", "5", "--members", "10"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[-2] == "created 50 members in 5 organisation(s)"
    found = PASSWORD_LINE.fullmatch(lines[-1])
    assert found is not None, lines[-1]
    password = found.group(1)
    assert result.output.count(password) == 1
    assert hashed == [password]  # one password KDF evaluation for the whole run

    assert count(factory, Membership) == 50
    with factory() as s:
        users = s.execute(select(User).order_by(User.id)).scalars().all()
        assert len(users) == 50
        assert all(verify_password(u.password_hash, password) for u in users[:2])
        assert not verify_password(users[0].password_hash, "seeded password")
        enrolled = [u for u in users if u.twofa_method == "totp"]
        assert 0 < len(enrolled) < 40
        assert not [u for u in enrolled if u.email.endswith("@sample-5.example")]  # sample-5 signs in through SSO
        devices = s.execute(select(TotpDevice)).scalars().all()
        assert sorted(d.user_id for d in devices) == sorted(u.id for u in enrolled)
        assert all(d.confirmed_at is not None and len(crypto.decrypt(d.secret_ciphertext)) == 32 for d in devices)
        turned_on = s.execute(select(AuditEvent.user_id).where(AuditEvent.event == "2fa_enabled")).scalars().all()
        assert sorted(turned_on) == sorted(u.id for u in enrolled)
        verified = s.execute(
            select(func.count()).select_from(LoginHistory).where(LoginHistory.twofa_verified.is_(True))
        ).scalar_one()
        assert verified > 0
    assert count(factory, LoginHistory) > 150
    assert count(factory, OutboxMessage) == 0  # no "2FA turned on" mail to addresses that do not exist
    assert count(factory, BackupCode) == 0

    again = cli.invoke(app, ["seed", "--orgs", "5", "--members", "10"])
    assert again.output.splitlines()[-1] == "created 0 members in 5 organisation(s)"
    assert hashed == [password]

    more = cli.invoke(app, ["seed", "--orgs", "5", "--members", "11"])
    assert more.output.splitlines()[-2] == "created 5 members in 5 organisation(s)"
    found = PASSWORD_LINE.fullmatch(more.output.splitlines()[-1])
    assert found is not None and found.group(1) != password  # random for each run

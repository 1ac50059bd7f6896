"""``twofa keys rotate``: every TOTP seed re-encrypted under the first key, so the old key can be removed with every
user still signing in through the HTTP API; safe to run twice and while sign-ins run."""

from __future__ import annotations

import threading

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from cli.main import app
from tests.api.conftest import Server
from tests.api.test_help_article import sign_in
from tests.harness.services import wait_for
from tests.helpers import PASSWORD, enrol_totp, make_user
from twofa import crypto, enrolment, key_rotation, totp
from twofa.db import transaction
from twofa.models import TotpDevice
from twofa.settings import get_settings

NEW = "new-key-ZYXWVUTSRQPONMLKJIHGFEDCBA-9876543210"


def use_keys(monkeypatch: pytest.MonkeyPatch, *keys: str) -> None:
    monkeypatch.setenv("TWOFA_SECRET_KEY", ",".join(keys))
    get_settings.cache_clear()


def rotate(monkeypatch: pytest.MonkeyPatch, db_url: str, *args: str) -> tuple[int, str, str]:
    monkeypatch.setenv("TWOFA_DATABASE_URL", db_url)
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["keys", "rotate", *args])
    return result.exit_code, result.stdout, result.stderr


def second_step(server: Server, email: str, secret: str) -> httpx.Response:
    challenge = sign_in(server, email)["challenge"]
    with server.client() as c:
        return c.post(
            "/auth/2fa/login", json={"challenge": challenge, "code": totp.code_at(secret, server.clock.now())}
        )


def ciphertexts(factory: sessionmaker[Session]) -> dict[int, str]:
    with factory() as s:
        return {row[0]: row[1] for row in s.execute(select(TotpDevice.user_id, TotpDevice.secret_ciphertext))}


def test_after_a_rotation_the_old_key_can_go(
    server: Server, factory: sessionmaker[Session], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = get_settings().secret_key.get_secret_value()
    secrets: dict[str, str] = {}
    for n in range(5):
        user = make_user(factory, f"user{n}@acme.io", clock=server.clock)
        secrets[user.email], _ = enrol_totp(factory, user, server.clock)
    pending = make_user(factory, "pending@acme.io", clock=server.clock)
    with transaction(factory) as s:
        pending_secret = enrolment.start_totp(
            s, pending, PASSWORD, clock=server.clock
        ).secret  # set up, not yet confirmed

    use_keys(monkeypatch, NEW, old)
    status, out, err = rotate(monkeypatch, db_url, "--batch-size", "2")
    assert (status, err) == (0, ""), out + err
    assert out.splitlines()[0] == "re-encrypted 6 of 6 TOTP seeds under the first key (the others were already)"
    assert "remove the others from TWOFA_SECRET_KEY" in out
    rotated = ciphertexts(factory)

    use_keys(monkeypatch, NEW)  # the old key retired
    with factory() as s:
        users = {row[0]: row[1] for row in s.execute(text("SELECT id, email FROM users"))}
    assert {users[user_id]: crypto.decrypt(c) for user_id, c in rotated.items()} == secrets | {
        "pending@acme.io": pending_secret
    }
    for email, secret in secrets.items():
        answer = second_step(server, email, secret)
        assert answer.status_code == 200, answer.text
        assert answer.json()["session"]["2fa_verified"] is True

    status, out, _ = rotate(monkeypatch, db_url)  # again: nothing left to do, nothing rewritten
    assert status == 0 and out.splitlines() == [
        "re-encrypted 0 of 6 TOTP seeds under the first key (the others were already)"
    ]
    assert ciphertexts(factory) == rotated


def test_seeds_no_key_decrypts_are_reported(
    server: Server, factory: sessionmaker[Session], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    enrol_totp(factory, make_user(factory, "lost@acme.io", clock=server.clock), server.clock)
    before = ciphertexts(factory)
    use_keys(monkeypatch, NEW)  # the key the seed was encrypted under is gone
    status, _, err = rotate(monkeypatch, db_url)
    assert status == 1
    assert err.splitlines() == [
        "error: 1 seeds decrypt under none of the keys: "
        "those users must set up their app again (twofa support reset-2fa)"
    ]
    assert ciphertexts(factory) == before


@pytest.mark.parametrize("key", ["abcdefghijklmno" * 3, "dev-only-insecure-key-change-me-0123456789"])
def test_no_rotation_to_a_weak_key(
    factory: sessionmaker[Session], db_url: str, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    use_keys(monkeypatch, key, get_settings().secret_key.get_secret_value())
    status, _, err = rotate(monkeypatch, db_url)
    assert status == 2 and err.startswith("error: set TWOFA_SECRET_KEY to a random secret") and err.count("\n") == 1


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_sign_in_racing_the_rotation_still_works(
    server: Server, factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rotation holds a batch's rows locked while a sign-in checks an app code for one of them: the sign-in
    waits for the batch and then succeeds."""
    old = get_settings().secret_key.get_secret_value()
    user = make_user(factory, "racer@acme.io", clock=server.clock)
    secret, _ = enrol_totp(factory, user, server.clock)
    use_keys(monkeypatch, NEW, old)
    challenge = sign_in(server, user.email)["challenge"]
    answers: list[httpx.Response] = []

    def submit() -> None:
        with server.client() as c:
            code = totp.code_at(secret, server.clock.now())
            answers.append(c.post("/auth/2fa/login", json={"challenge": challenge, "code": code}))

    with factory() as rotation:
        batch = key_rotation.rotate_batch(rotation)
        assert batch is not None and batch.rotated == 1
        racer = threading.Thread(target=submit)
        racer.start()
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        with factory.kw["bind"].connect() as probe:  # autocommit: a transaction reads pg_stat_activity once
            probe = probe.execution_options(isolation_level="AUTOCOMMIT")
            wait_for(
                lambda: probe.execute(text(waiting)).scalar_one() > 0, 10, what="the sign-in to wait for the batch"
            )
        assert racer.is_alive()
        rotation.commit()
    racer.join(30)
    assert answers and answers[0].status_code == 200, answers[0].text if answers else "no answer"

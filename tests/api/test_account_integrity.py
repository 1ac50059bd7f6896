"""Taking over an account, or escaping an organisation's policy, through the real HTTP server: what a stolen session,
an API key, an SSO member's password or a stranger can and cannot do (issue 17, points 1-4)."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from cli.main import app as cli_app
from tests.api.conftest import Server
from tests.api.test_help_article import mailed_code, sign_in, signed_in_with_app
from tests.helpers import PASSWORD, enrol_totp, make_user
from twofa import totp
from twofa.models import BackupCode, LoginHistory
from twofa.settings import get_settings


def email_session(server: Server, factory: sessionmaker[Session], email: str = "fin@acme.io") -> str:
    """A member with email codes, signed in with one: the session a thief would steal."""
    make_user(factory, email, role="finance", clock=server.clock)
    with server.client(sign_in(server, email)["session"]["token"]) as c:
        assert c.post("/auth/2fa/email-otp", json={"password": PASSWORD}).status_code == 202
        assert c.post("/auth/2fa/verify-email-otp", json={"code": mailed_code(server, email)}).status_code == 200
    server.clock.advance(seconds=61)
    step = sign_in(server, email)
    with server.client() as c:
        done = c.post("/auth/2fa/login", json={"challenge": step["challenge"], "code": mailed_code(server, email)})
    assert done.status_code == 200, done.text
    return str(done.json()["session"]["token"])


def error_of(answer: object) -> tuple[int, str]:
    return answer.status_code, answer.json()["error"]["code"]  # type: ignore[attr-defined]


def test_a_stolen_email_session_cannot_switch_the_account_to_another_app(
    server: Server, factory: sessionmaker[Session]
) -> None:
    stolen = email_session(server, factory)
    with factory() as s:
        codes_before = s.scalars(select(BackupCode.id)).all()
    with server.client(stolen) as thief:
        assert error_of(thief.post("/auth/2fa/setup")) == (422, "invalid_request")  # no password
        guessed = thief.post("/auth/2fa/setup", json={"password": "a guess", "code": "123456"})
        assert error_of(guessed) == (401, "invalid_credentials")
        # Even with the password, not without a current code from the owner's mailbox.
        assert error_of(thief.post("/auth/2fa/setup", json={"password": PASSWORD})) == (422, "malformed_code")
        wrong = thief.post("/auth/2fa/setup", json={"password": PASSWORD, "code": "000000"})
        assert error_of(wrong) == (401, "invalid_credentials")  # answers as a wrong password does
        assert thief.get("/auth/2fa/status").json()["method"] == "email"
    with factory() as s:
        assert s.scalars(select(BackupCode.id)).all() == codes_before  # the owner's codes still stand


def test_the_owner_replaces_email_codes_with_an_app_and_other_sessions_end(
    server: Server, factory: sessionmaker[Session]
) -> None:
    mine = email_session(server, factory)
    server.clock.advance(seconds=61)
    step = sign_in(server, "fin@acme.io")
    with server.client() as c:
        code = mailed_code(server, "fin@acme.io")
        elsewhere = c.post("/auth/2fa/login", json={"challenge": step["challenge"], "code": code})
    other = elsewhere.json()["session"]["token"]
    with server.client(mine) as c:
        server.clock.advance(seconds=61)
        assert c.post("/auth/2fa/email-otp").status_code == 202  # a code to confirm the change
        setup = c.post("/auth/2fa/setup", json={"password": PASSWORD, "code": mailed_code(server, "fin@acme.io")})
        assert setup.status_code == 200, setup.text
        done = c.post("/auth/2fa/verify", json={"code": totp.code_at(setup.json()["secret"], server.clock.now())})
        assert done.status_code == 200, done.text
        assert c.get("/auth/2fa/status").json()["method"] == "totp"
    with server.client(other) as c:
        assert error_of(c.get("/auth/sessions")) == (401, "invalid_session")


def test_an_sso_member_gets_no_session_from_a_password(server: Server, factory: sessionmaker[Session]) -> None:
    make_user(factory, "ann@partner.example", org="partner", sso="okta", clock=server.clock)
    with server.client() as c:
        right = c.post("/auth/login", json={"email": "ann@partner.example", "password": PASSWORD})
        assert error_of(right) == (403, "sso_required") and "okta" in right.json()["error"]["message"]
        wrong = c.post("/auth/login", json={"email": "ann@partner.example", "password": "not it"})
        unknown = c.post("/auth/login", json={"email": "nobody@partner.example", "password": "not it"})
    assert wrong.status_code == unknown.status_code == 401 and wrong.json() == unknown.json()
    with factory() as s:
        outcomes = s.scalars(select(LoginHistory.outcome).order_by(LoginHistory.id)).all()
    assert outcomes == ["sso_required", "invalid_credentials", "invalid_credentials"]


def test_an_sso_member_of_a_local_organisation_too_signs_in(server: Server, factory: sessionmaker[Session]) -> None:
    make_user(factory, "bo@acme.io", role="member", clock=server.clock)
    make_user(factory, "ann@partner.example", org="partner", sso="okta", clock=server.clock)
    with factory.begin() as s:  # bo joins the SSO organisation as well: acme still signs him in locally
        from twofa import accounts

        user = accounts.get_user(s, "bo@acme.io")
        partner = accounts.get_org(s, "partner")
        assert user is not None and partner is not None
        accounts.add_member(s, partner, user, "member", clock=server.clock)
    assert sign_in(server, "bo@acme.io")["status"] == "ok"


def test_api_keys_and_password_only_sessions_cannot_change_the_policy(
    server: Server, factory: sessionmaker[Session]
) -> None:
    """An overdue admin's key (or password-only session) switching the policy to remind_only would escape the
    enrol-only gate."""
    verified_owner = signed_in_with_app(server, factory, "owner@acme.io", "owner")
    make_user(factory, "admin@acme.io", role="admin", clock=server.clock)
    password_only = sign_in(server, "admin@acme.io")["session"]["token"]
    with server.client(password_only) as c:
        key = c.post("/api-keys", json={"name": "ci"}).json()["key"]
        change = {"after_deadline": "remind_only"}
        assert error_of(c.put("/orgs/acme/2fa-policy", json=change)) == (403, "second_factor_required")
        assert c.get("/orgs/acme/2fa-policy").status_code == 200  # reading is fine
    with server.client(key) as bot:
        assert error_of(bot.put("/orgs/acme/2fa-policy", json=change)) == (403, "session_required")
        assert bot.get("/orgs/acme/2fa-policy").json()["after_deadline"] == "enrol_only"
    with server.client(verified_owner) as c:
        assert c.put("/orgs/acme/2fa-policy", json=change).status_code == 200


def test_turning_2fa_on_ends_the_sessions_opened_with_the_password_alone(
    server: Server, factory: sessionmaker[Session]
) -> None:
    make_user(factory, "owner@acme.io", role="owner", clock=server.clock)
    enrolling, stray = (sign_in(server)["session"]["token"] for _ in range(2))
    with server.client(enrolling) as c:
        setup = c.post("/auth/2fa/setup", json={"password": PASSWORD}).json()
        assert c.post("/auth/2fa/verify", json={"code": totp.code_at(setup["secret"], server.clock.now())}).is_success
        assert [s["current"] for s in c.get("/auth/sessions").json()] == [True]
    with server.client(stray) as c:
        assert error_of(c.get("/auth/sessions")) == (401, "invalid_session")


def test_sign_out_everywhere_else_and_the_idle_limit(server: Server, factory: sessionmaker[Session]) -> None:
    make_user(factory, "owner@acme.io", role="owner", clock=server.clock)
    here, there, yonder = (sign_in(server)["session"]["token"] for _ in range(3))
    with server.client(here) as c:
        assert c.post("/auth/sessions/revoke-others").status_code == 200
        assert len(c.get("/auth/sessions").json()) == 1
    for token in (there, yonder):
        with server.client(token) as c:
            assert error_of(c.get("/auth/sessions")) == (401, "invalid_session")
    idle = get_settings().session_idle_timeout
    with server.client(here) as c:
        server.clock.advance(seconds=idle - 60)
        assert c.get("/auth/sessions").status_code == 200  # in use: the idle time starts again
        server.clock.advance(seconds=idle - 60)
        assert c.get("/auth/sessions").status_code == 200
        server.clock.advance(seconds=idle)
        assert error_of(c.get("/auth/sessions")) == (401, "invalid_session")


def test_a_support_reset_ends_a_session_opened_before_it(
    server: Server, factory: sessionmaker[Session], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = signed_in_with_app(server, factory, "owner@acme.io", "owner")
    monkeypatch.setenv("TWOFA_DATABASE_URL", db_url)
    get_settings.cache_clear()
    reset = CliRunner().invoke(
        cli_app, ["support", "reset-2fa", "--email", "owner@acme.io", "--operator", "carol", "--reason", "lost phone"]
    )
    assert reset.exit_code == 0, reset.output
    with server.client(token) as c:
        assert error_of(c.get("/auth/2fa/status")) == (401, "invalid_session")


def test_wrong_passwords_on_disable_count_toward_the_lockout(server: Server, factory: sessionmaker[Session]) -> None:
    user = make_user(factory, "owner@acme.io", role="owner", clock=server.clock)
    secret, _ = enrol_totp(factory, user, server.clock)
    step = sign_in(server)
    with server.client() as c:
        done = c.post(
            "/auth/2fa/login", json={"challenge": step["challenge"], "code": totp.code_at(secret, server.clock.now())}
        )
    with server.client(done.json()["session"]["token"]) as c:
        answers = [
            error_of(c.post("/auth/2fa/disable", json={"password": f"guess {i}", "code": "000000"})) for i in range(6)
        ]
        assert answers[:5] == [(401, "invalid_credentials")] * 5 and answers[5] == (429, "second_factor_locked")
        server.clock.advance(seconds=10)
        right = {"password": PASSWORD, "code": totp.code_at(secret, server.clock.now())}
        assert error_of(c.post("/auth/2fa/disable", json=right)) == (429, "second_factor_locked")  # it waits too
        server.clock.advance(seconds=30)
        right["code"] = totp.code_at(secret, server.clock.now())
        assert c.post("/auth/2fa/disable", json=right).status_code == 200

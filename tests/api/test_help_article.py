"""The help article, through a real HTTP server: set up, sign out and in, backup codes, email codes, disable,
re-enable, history, sessions, API keys, org policy and coverage, and the errors around them."""

from __future__ import annotations

import base64
import io

import zxingcpp
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from tests.api.conftest import Server
from tests.helpers import PASSWORD, code_of, enrol_totp, make_user
from twofa import totp


def mailed_code(server: Server, to: str) -> str:
    return code_of(server.smtp.to(to)[-1].message)


def sign_in(server: Server, email: str = "owner@acme.io") -> dict:  # type: ignore[type-arg]
    with server.client() as c:
        r = c.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_the_whole_help_article(server: Server, factory: sessionmaker[Session]) -> None:
    make_user(factory, "owner@acme.io", role="owner", clock=server.clock)
    first = sign_in(server)
    assert first["status"] == "ok" and first["session"]["2fa_verified"] is False
    token = first["session"]["token"]

    with server.client(token) as c:
        setup = c.post("/auth/2fa/setup", json={"password": PASSWORD}).json()
        assert setup["otpauth_url"].startswith("otpauth://totp/Wevion:owner%40acme.io?secret=" + setup["secret"])
        png = base64.b64decode(setup["qr_code"].removeprefix("data:image/png;base64,"))
        assert [r.text for r in zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))] == [setup["otpauth_url"]]
        wrong = c.post("/auth/2fa/verify", json={"code": "12345"})
        assert (wrong.status_code, wrong.json()["error"]["code"]) == (422, "malformed_code")
        verified = c.post("/auth/2fa/verify", json={"code": totp.code_at(setup["secret"], server.clock.now())})
        assert verified.status_code == 200, verified.text
        backup = verified.json()["backup_codes"]
        assert len(backup) == 10
        status = c.get("/auth/2fa/status").json()
        assert status == {
            "enabled": True,
            "method": "totp",
            "managed_by_sso": False,
            "backup_codes_left": 10,
            "required_by_policy": True,
            "deadline": None,
            "policy_status": "compliant",
        }
        assert c.post("/auth/logout").status_code == 200
        gone = c.get("/auth/2fa/status")
        assert (gone.status_code, gone.json()["error"]["code"]) == (401, "invalid_session")

    server.clock.advance(seconds=30)
    step = sign_in(server)
    assert step["status"] == "2fa_required" and step["methods"] == ["totp", "backup_code"]
    with server.client() as c:
        done = c.post(
            "/auth/2fa/login",
            json={"challenge": step["challenge"], "code": totp.code_at(setup["secret"], server.clock.now())},
        )
        assert done.status_code == 200 and done.json()["session"]["2fa_verified"] is True
        again = sign_in(server)
        used = c.post("/auth/2fa/login", json={"challenge": again["challenge"], "code": backup[0]})
        assert used.status_code == 200, used.text
    token = used.json()["session"]["token"]

    with server.client(token) as c:
        assert c.get("/auth/2fa/status").json()["backup_codes_left"] == 9
        # Switch to email codes: disable (password + current code), then enrol email.
        server.clock.advance(seconds=30)
        off = c.post(
            "/auth/2fa/disable", json={"password": PASSWORD, "code": totp.code_at(setup["secret"], server.clock.now())}
        )
        assert off.status_code == 200, off.text
        assert c.post("/auth/2fa/email-otp", json={"password": PASSWORD}).status_code == 202
        on = c.post("/auth/2fa/verify-email-otp", json={"code": mailed_code(server, "owner@acme.io")})
        assert on.status_code == 200, on.text
        email_backup = on.json()["backup_codes"]
        assert not set(email_backup) & set(backup)

    # Step 6: log out and back in at once: the sign-in mails its own code, whatever the enrolment's was.
    step = sign_in(server)
    assert step["methods"] == ["email", "backup_code"] and step["email_code_sent"] is True
    with server.client() as c:
        done = c.post(
            "/auth/2fa/login", json={"challenge": step["challenge"], "code": mailed_code(server, "owner@acme.io")}
        )
        assert done.status_code == 200, done.text
    token = done.json()["session"]["token"]

    with server.client(token) as c:
        server.clock.advance(seconds=61)
        assert c.post("/auth/2fa/email-otp").status_code == 202  # a code to confirm the disable (no body needed)
        off = c.post("/auth/2fa/disable", json={"password": PASSWORD, "code": mailed_code(server, "owner@acme.io")})
        assert off.status_code == 200, off.text
        setup2 = c.post("/auth/2fa/setup", json={"password": PASSWORD}).json()
        assert setup2["secret"] != setup["secret"]
        fresh = c.post("/auth/2fa/verify", json={"code": totp.code_at(setup2["secret"], server.clock.now())}).json()
        assert not set(fresh["backup_codes"]) & (set(backup) | set(email_backup))

        history = c.get("/auth/login-history", params={"limit": 100}).json()
        assert all("2fa_verified" in h for h in history)
        assert [(h["outcome"], h["method"], h["2fa_verified"]) for h in reversed(history)] == [
            ("success", "password", False),
            ("second_factor_required", "password", False),
            ("success", "totp", True),
            ("second_factor_required", "password", False),
            ("success", "backup_code", True),
            ("second_factor_required", "password", False),
            ("success", "email", True),
        ]

        # Turning 2FA off ended every other session.
        assert [s["current"] for s in c.get("/auth/sessions").json()] == [True]
    server.clock.advance(seconds=30)
    elsewhere = sign_in(server)
    with server.client() as other_device:
        code = totp.code_at(setup2["secret"], server.clock.now())
        assert other_device.post("/auth/2fa/login", json={"challenge": elsewhere["challenge"], "code": code}).is_success
    with server.client(token) as c:
        listed = c.get("/auth/sessions").json()
        assert sorted(s["current"] for s in listed) == [False, True]
        other = next(s for s in listed if not s["current"])
        assert c.delete(f"/auth/sessions/{other['id']}").status_code == 200
        assert len(c.get("/auth/sessions").json()) == len(listed) - 1

        key = c.post("/api-keys", json={"name": "deploy"})
        assert key.status_code == 201
        created = key.json()
    with server.client(created["key"]) as bot:
        assert bot.get("/auth/2fa/status").json()["method"] == "totp"  # a key works whatever the 2FA state
        assert bot.get("/api-keys").json()[0]["prefix"] == created["prefix"]
        refused = bot.post("/auth/2fa/disable", json={"password": PASSWORD, "code": "000000"})
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "session_required")
        assert bot.delete(f"/api-keys/{created['id']}").status_code == 200
        assert bot.get("/auth/2fa/status").status_code == 401


def test_login_answers_alike_for_unknown_accounts(server: Server, factory: sessionmaker[Session]) -> None:
    make_user(factory, "owner@acme.io", role="owner", clock=server.clock)
    with server.client() as c:
        wrong = c.post("/auth/login", json={"email": "owner@acme.io", "password": "not the password"})
        unknown = c.post("/auth/login", json={"email": "nobody@acme.io", "password": "not the password"})
    assert wrong.status_code == unknown.status_code == 401
    assert (
        wrong.json()
        == unknown.json()
        == {"error": {"code": "invalid_credentials", "message": "Email or password is wrong."}}
    )


def test_malformed_bodies_are_4xx_with_a_code(server: Server) -> None:
    with server.client() as c:
        for body in (
            None,
            "not json",
            {"email": "a@b.c"},
            {"email": 5, "password": []},
            {"email": "a@b.c", "password": "x", "extra": 1},
            {"email": "x" * 400, "password": "y"},
        ):
            r = (
                c.post("/auth/login", json=body)
                if not isinstance(body, str)
                else c.post("/auth/login", content=body, headers={"content-type": "application/json"})
            )
            assert r.status_code == 422, (body, r.text)
            assert r.json()["error"]["code"] == "invalid_request"
        r = c.post("/auth/2fa/login", json={"challenge": "nope", "code": "123456"})
        assert (r.status_code, r.json()["error"]["code"]) == (401, "challenge_invalid")
        assert c.get("/auth/2fa/status").json()["error"]["code"] == "unauthenticated"
        assert c.get("/no/such/path").json()["error"]["code"] == "not_found"


def test_rate_limited_per_account(server: Server, factory: sessionmaker[Session]) -> None:
    make_user(factory, "owner@acme.io", role="owner", clock=server.clock)
    with server.client() as c:
        codes = [
            c.post("/auth/login", json={"email": "owner@acme.io", "password": "wrong password"}).status_code
            for _ in range(11)
        ]
        assert codes == [401] * 10 + [429]
        limited = c.post("/auth/login", json={"email": "owner@acme.io", "password": PASSWORD})
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert limited.json()["error"]["code"] == "rate_limited"


def test_the_second_step_counts_wrong_codes_not_malformed_ones(server: Server, factory: sessionmaker[Session]) -> None:
    # Malformed codes are no guesses: they use up no budget. Wrong codes lock the second factor (in the database).
    user = make_user(factory, "owner@acme.io", role="owner", clock=server.clock)
    secret, _ = enrol_totp(factory, user, server.clock)
    first = sign_in(server)["challenge"]
    code = totp.code_at(secret, server.clock.now())
    wrong = "000000" if code != "000000" else "111111"
    with server.client() as c:
        malformed = [c.post("/auth/2fa/login", json={"challenge": first, "code": "12345x"}) for _ in range(12)]
        assert [r.status_code for r in malformed] == [422] * 12
        answers = [c.post("/auth/2fa/login", json={"challenge": first, "code": wrong}) for _ in range(6)]
        assert [r.status_code for r in answers] == [401] * 5 + [429]
        assert answers[-1].json()["error"]["code"] == "second_factor_locked"
        refused = c.post("/auth/2fa/login", json={"challenge": first, "code": code})
        assert (refused.status_code, refused.json()["error"]["code"]) == (429, "second_factor_locked")


def signed_in_with_app(server: Server, factory: sessionmaker[Session], email: str, role: str) -> str:
    """A session that passed the second factor, of a new member enrolled with an app."""
    secret, _ = enrol_totp(factory, make_user(factory, email, role=role, clock=server.clock), server.clock)
    with server.client() as c:
        code = totp.code_at(secret, server.clock.now())
        done = c.post("/auth/2fa/login", json={"challenge": sign_in(server, email)["challenge"], "code": code})
    assert done.status_code == 200, done.text
    return str(done.json()["session"]["token"])


def test_org_policy_and_coverage_for_managers_only(server: Server, factory: sessionmaker[Session]) -> None:
    owner = signed_in_with_app(server, factory, "owner@acme.io", "owner")
    make_user(factory, "m@acme.io", role="member", clock=server.clock)
    member = sign_in(server, "m@acme.io")["session"]["token"]
    with server.client(owner) as c:
        policy = c.get("/orgs/acme/2fa-policy").json()
        assert policy["roles"] == ["admin", "finance", "owner", "super_admin"] and policy["grace_days"] == 14
        changed = c.put("/orgs/acme/2fa-policy", json={"grace_days": 7, "totp_only_roles": ["finance"]})
        assert changed.status_code == 200 and changed.json()["grace_days"] == 7
        bad = c.put("/orgs/acme/2fa-policy", json={"reminder_days": [3, 3]})
        assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_input")
        coverage = c.get("/orgs/acme/2fa-coverage").json()
        assert (coverage["members"], coverage["in_scope"], coverage["enrolled"], coverage["coverage_pct"]) == (
            2,
            1,
            1,
            100.0,
        )
    with server.client(member) as c:
        assert c.get("/orgs/acme/2fa-policy").status_code == 404
        assert c.get("/orgs/nope/2fa-coverage").status_code == 404

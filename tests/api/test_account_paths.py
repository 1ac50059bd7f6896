"""Paths of the help article that the walk-through does not take, through the real HTTP server: regenerating backup
codes, disabling with a backup code, a sign-in after an organisation's deadline, and an admin at the org endpoints."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from tests.api.conftest import Server
from tests.api.test_help_article import sign_in, signed_in_with_app
from tests.helpers import PASSWORD, enrol_totp, make_user
from twofa import totp


def test_backup_codes_are_regenerated_with_a_current_code(server: Server, factory: sessionmaker[Session]) -> None:
    user = make_user(factory, "owner@acme.io", role="owner", clock=server.clock)
    secret, old_codes = enrol_totp(factory, user, server.clock)
    step = sign_in(server)
    with server.client() as c:
        code = totp.code_at(secret, server.clock.now())
        token = c.post("/auth/2fa/login", json={"challenge": step["challenge"], "code": code}).json()["session"][
            "token"
        ]
    server.clock.advance(seconds=30)
    with server.client(token) as c:
        wrong = c.post("/auth/2fa/backup-codes", json={"password": PASSWORD, "code": "000000"})
        assert (wrong.status_code, wrong.json()["error"]["code"]) == (401, "invalid_credentials")
        by_backup = c.post("/auth/2fa/backup-codes", json={"password": PASSWORD, "code": old_codes[0]})
        assert by_backup.status_code == 422  # a backup code cannot mint new ones
        current = totp.code_at(secret, server.clock.now())
        no_password = c.post("/auth/2fa/backup-codes", json={"password": "not it", "code": current})
        assert (no_password.status_code, no_password.json()["error"]["code"]) == (401, "invalid_credentials")
        fresh = c.post("/auth/2fa/backup-codes", json={"password": PASSWORD, "code": current})
        assert fresh.status_code == 200, fresh.text
        new_codes = fresh.json()["backup_codes"]
        assert len(new_codes) == 10 and not set(new_codes) & set(old_codes)
        assert c.get("/auth/2fa/status").json()["backup_codes_left"] == 10
    with server.client() as c:
        stale = c.post("/auth/2fa/login", json={"challenge": sign_in(server)["challenge"], "code": old_codes[1]})
        assert (stale.status_code, stale.json()["error"]["code"]) == (401, "invalid_code")
        ok = c.post("/auth/2fa/login", json={"challenge": sign_in(server)["challenge"], "code": new_codes[0]})
        assert ok.status_code == 200, ok.text
        token = ok.json()["session"]["token"]
    with server.client(token) as c:  # disable with a backup code: the way out for a lost phone
        off = c.post("/auth/2fa/disable", json={"password": PASSWORD, "code": new_codes[1]})
        assert off.status_code == 200, off.text
        assert c.get("/auth/2fa/status").json()["enabled"] is False


def test_after_the_deadline_a_sign_in_may_only_set_up_2fa(server: Server, factory: sessionmaker[Session]) -> None:
    make_user(factory, "admin@acme.io", role="admin", clock=server.clock)
    server.clock.advance(days=15)  # the default policy gives admins 14 days
    answer = sign_in(server, "admin@acme.io")
    assert answer["status"] == "enrolment_required" and answer["session"]["scope"] == "enrol"
    with server.client(answer["session"]["token"]) as c:
        refused = c.get("/auth/sessions")
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "enrolment_required")
        status = c.get("/auth/2fa/status").json()
        assert status["required_by_policy"] is True and status["policy_status"] == "overdue"
        setup = c.post("/auth/2fa/setup", json={"password": PASSWORD})
        assert setup.status_code == 200
        done = c.post("/auth/2fa/verify", json={"code": totp.code_at(setup.json()["secret"], server.clock.now())})
        assert done.status_code == 200, done.text
    server.clock.advance(seconds=30)
    assert sign_in(server, "admin@acme.io")["status"] == "2fa_required"


def test_admins_manage_the_org_policy_too(server: Server, factory: sessionmaker[Session]) -> None:
    make_user(factory, "owner@acme.io", role="owner", clock=server.clock)
    admin = signed_in_with_app(server, factory, "admin@acme.io", "admin")
    make_user(factory, "fin@acme.io", role="finance", clock=server.clock)
    finance = sign_in(server, "fin@acme.io")["session"]["token"]
    with server.client(admin) as c:
        assert c.get("/orgs/acme/2fa-policy").status_code == 200
        assert c.put("/orgs/acme/2fa-policy", json={"grace_days": 10}).json()["grace_days"] == 10
        assert c.get("/orgs/acme/2fa-coverage").json()["members"] == 3
    with server.client(finance) as c:  # in the policy's scope, yet no manager of it
        assert c.get("/orgs/acme/2fa-policy").status_code == 404
        assert c.get("/orgs/acme/2fa-coverage").status_code == 404

"""What an organisation's owners and admins see and do, through a real HTTP server: members in every verdict (JSON
and CSV), the audit trail with who acted and how, resetting a member, and the mail that tells them what matters."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from policies import reminders
from tests.api.conftest import Server
from tests.helpers import PASSWORD, enrol_totp, make_user, text_of
from twofa import totp
from twofa.clock import FrozenClock
from twofa.db import transaction


def sign_in(server: Server, email: str, secret: str | None = None) -> str:
    with server.client() as c:
        first = c.post("/auth/login", json={"email": email, "password": PASSWORD}).json()
        if secret is None:
            return str(first["session"]["token"])
        server.clock.advance(seconds=30)
        code = totp.code_at(secret, server.clock.now())
        done = c.post("/auth/2fa/login", json={"challenge": first["challenge"], "code": code})
        assert done.status_code == 200, done.text
        return str(done.json()["session"]["token"])


def subjects(server: Server, address: str) -> list[str]:
    return [str(r.message["Subject"]) for r in server.smtp.to(address)]


def is_admin_notice(subject: str) -> bool:
    return "policy of" in subject or subject.endswith(("authentication off", "authentication was reset"))


@dataclass
class Acme:
    owner: str  # session tokens
    admin: str
    admin_secret: str


def acme(server: Server, factory: sessionmaker[Session]) -> Acme:
    """owner (app, compliant), admin (app, compliant), super_admin (pending), finance (overdue: joined 20 days
    ago), member (exempt)."""
    clock = server.clock
    make_user(factory, "fin@acme.io", role="finance", clock=FrozenClock(clock.now() - timedelta(days=20)))
    owner = make_user(factory, "owner@acme.io", role="owner", clock=clock)
    admin = make_user(factory, "admin@acme.io", role="admin", clock=clock)
    make_user(factory, "super@acme.io", role="super_admin", clock=clock)
    make_user(factory, "mem@acme.io", role="member", clock=clock)
    owner_secret, _ = enrol_totp(factory, owner, clock)
    admin_secret, _ = enrol_totp(factory, admin, clock)
    with transaction(factory) as s:
        reminders.run(s, clock=clock)
    return Acme(
        sign_in(server, "owner@acme.io", owner_secret), sign_in(server, "admin@acme.io", admin_secret), admin_secret
    )


def test_members_in_every_verdict_as_json_and_csv(server: Server, factory: sessionmaker[Session]) -> None:
    org = acme(server, factory)
    sign_in(server, "mem@acme.io")
    with server.client(org.owner) as c:
        listed = c.get("/orgs/acme/members")
        assert listed.status_code == 200, listed.text
        body = listed.json()
        by_email = {m["email"]: m for m in body["members"]}
        assert body["total"] == 5 and list(by_email) == sorted(by_email)
        assert {e: (m["role"], m["method"], m["verdict"]) for e, m in by_email.items()} == {
            "admin@acme.io": ("admin", "totp", "compliant"),
            "fin@acme.io": ("finance", None, "overdue"),
            "mem@acme.io": ("member", None, "exempt"),
            "owner@acme.io": ("owner", "totp", "compliant"),
            "super@acme.io": ("super_admin", None, "pending"),
        }
        fin, owner, mem = by_email["fin@acme.io"], by_email["owner@acme.io"], by_email["mem@acme.io"]
        assert fin["deadline"].startswith("2026-11-24") and fin["reminders_sent"] == 1
        assert by_email["super@acme.io"]["reminders_sent"] == 1 and owner["reminders_sent"] == 0
        assert owner["last_sign_in"] is not None and owner["last_sign_in_2fa"] == owner["last_sign_in"]
        assert mem["last_sign_in"] is not None and mem["last_sign_in_2fa"] is None
        assert fin["last_sign_in"] is None and mem["reason"] == "role_not_required"

        overdue = c.get("/orgs/acme/members", params={"verdict": "overdue"}).json()
        assert [m["email"] for m in overdue["members"]] == ["fin@acme.io"]
        admins = c.get("/orgs/acme/members", params={"role": "admin"}).json()
        assert [m["email"] for m in admins["members"]] == ["admin@acme.io"]
        second = c.get("/orgs/acme/members", params={"page": 2, "per_page": 2}).json()
        assert (second["total"], [m["email"] for m in second["members"]]) == (5, ["mem@acme.io", "owner@acme.io"])
        bad = c.get("/orgs/acme/members", params={"verdict": "late"})
        assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_request")

        as_csv = c.get("/orgs/acme/members", params={"format": "csv"})
        assert as_csv.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(as_csv.text)))
        assert [(r["email"], r["verdict"], r["reminders_sent"]) for r in rows] == [
            (m["email"], m["verdict"], str(m["reminders_sent"])) for m in body["members"]
        ]
        assert rows[1]["deadline"].startswith("2026-11-24") and rows[2]["last_sign_in_2fa"] == ""

    with server.client(sign_in(server, "mem@acme.io")) as c:
        hidden = c.get("/orgs/acme/members")
        assert (hidden.status_code, hidden.json()["error"]["code"]) == (404, "not_found")
        assert c.get("/orgs/acme/audit").status_code == 404
    with server.client(org.admin) as c:
        assert c.get("/orgs/acme/members", params={"format": "csv"}).status_code == 200


def test_the_audit_trail_says_who_did_what_with_which_credential(
    server: Server, factory: sessionmaker[Session]
) -> None:
    org = acme(server, factory)
    with server.client(org.owner) as c:
        assert c.put("/orgs/acme/2fa-policy", json={"grace_days": 7}).status_code == 200
        own_session = c.get("/auth/sessions").json()
        trail = c.get("/orgs/acme/audit").json()
        assert trail["total"] == len(trail["events"]) >= 5
        newest = trail["events"][0]
        assert (newest["event"], newest["actor"], newest["credential"], newest["client_ip"]) == (
            "policy_changed",
            "user:owner@acme.io",
            "session",
            "127.0.0.1",
        )
        assert newest["credential_id"] in [s["id"] for s in own_session]
        enabled = c.get("/orgs/acme/audit", params={"event": "2fa_enabled"}).json()["events"]
        assert sorted(e["member"] for e in enabled) == ["admin@acme.io", "owner@acme.io"]
        admin_only = c.get("/orgs/acme/audit", params={"member": "Admin@acme.io"}).json()["events"]
        assert {e["member"] for e in admin_only} == {"admin@acme.io"} and admin_only
        later = c.get("/orgs/acme/audit", params={"since": server.clock.now().isoformat()}).json()["events"]
        assert [e["event"] for e in later] == ["policy_changed"]
        paged = c.get("/orgs/acme/audit", params={"per_page": 1, "page": 2}).json()
        assert paged["events"] == [trail["events"][1]]
        reversed_range = c.get("/orgs/acme/audit", params={"since": "2026-12-01", "until": "2026-11-01"})
        assert (reversed_range.status_code, reversed_range.json()["error"]["code"]) == (422, "invalid_input")
        bot = c.post("/api-keys", json={"name": "bot"}).json()
        spare = c.post("/api-keys", json={"name": "spare"}).json()
    with server.client(bot["key"]) as c:
        assert c.delete(f"/api-keys/{spare['id']}").status_code == 200
        revoked = c.get("/orgs/acme/audit", params={"event": "api_key_revoked"}).json()["events"]
    assert [(e["member"], e["credential"], e["credential_id"]) for e in revoked] == [
        ("owner@acme.io", "api_key", bot["id"])
    ]


def test_owners_and_admins_reset_a_member_and_are_told_once(server: Server, factory: sessionmaker[Session]) -> None:
    org = acme(server, factory)
    fin = make_user(factory, "fin2@acme.io", role="finance", clock=server.clock)
    fin_secret, _ = enrol_totp(factory, fin, server.clock)
    fin_token = sign_in(server, "fin2@acme.io", fin_secret)
    with server.client(org.admin) as c:
        members = {m["email"]: m["user_id"] for m in c.get("/orgs/acme/members").json()["members"]}
        owner_id = members["owner@acme.io"]
        refused = c.post(f"/orgs/acme/members/{owner_id}/reset-2fa", json={"reason": "lost phone"})
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
        empty = c.post(f"/orgs/acme/members/{members['fin2@acme.io']}/reset-2fa", json={"reason": ""})
        assert empty.status_code == 422
        nobody = c.post("/orgs/acme/members/999999/reset-2fa", json={"reason": "x"})
        assert nobody.status_code == 404
        huge = c.post(f"/orgs/acme/members/{2**63}/reset-2fa", json={"reason": "x"})
        assert huge.status_code == 404  # no row has such an id
        done = c.post(f"/orgs/acme/members/{members['fin2@acme.io']}/reset-2fa", json={"reason": "ticket 42"})
        assert done.status_code == 200, done.text
        assert done.json()["admins_notified"] == 3  # owner, admin, super_admin
        again = c.post(f"/orgs/acme/members/{members['fin2@acme.io']}/reset-2fa", json={"reason": "ticket 42"})
        assert (again.status_code, again.json()["error"]["code"]) == (409, "2fa_not_enabled")
    with server.client(fin_token) as c:
        assert c.get("/auth/2fa/status").status_code == 401  # signed out everywhere
    reset_mail = [r.message for r in server.smtp.to("fin2@acme.io") if "administrator" in str(r.message["Subject"])]
    assert len(reset_mail) == 1 and "admin@acme.io" in text_of(reset_mail[0]) and "ticket 42" in text_of(reset_mail[0])
    for manager in ("owner@acme.io", "admin@acme.io", "super@acme.io"):
        told = [s for s in subjects(server, manager) if "was reset" in s]
        assert told == ["fin2@acme.io's two-factor authentication was reset"], manager
    with server.client(org.owner) as c:
        trail = c.get("/orgs/acme/audit", params={"event": "2fa_reset_by_admin"}).json()["events"]
        assert [(e["member"], e["actor"], e["details"]) for e in trail] == [
            ("fin2@acme.io", "admin:admin@acme.io", {"reason": "ticket 42"})
        ]
        by_owner = c.post(f"/orgs/acme/members/{members['admin@acme.io']}/reset-2fa", json={"reason": "left"})
        assert by_owner.status_code == 200, by_owner.text
        own = c.post(f"/orgs/acme/members/{owner_id}/reset-2fa", json={"reason": "x"})
        assert (own.status_code, own.json()["error"]["code"]) == (403, "own_account")
        key = c.post("/api-keys", json={"name": "bot"}).json()["key"]
    with server.client(key) as bot:
        by_key = bot.post(f"/orgs/acme/members/{members['super@acme.io']}/reset-2fa", json={"reason": "x"})
        assert (by_key.status_code, by_key.json()["error"]["code"]) == (403, "session_required")


def test_admins_hear_of_a_policy_change_and_a_required_member_turning_2fa_off_once(
    server: Server, factory: sessionmaker[Session]
) -> None:
    org = acme(server, factory)
    fin = make_user(factory, "fin2@acme.io", role="finance", clock=server.clock)
    mem = make_user(factory, "mem2@acme.io", role="member", clock=server.clock)
    fin_secret, _ = enrol_totp(factory, fin, server.clock)
    mem_secret, _ = enrol_totp(factory, mem, server.clock)
    with server.client(org.owner) as c:
        assert c.put("/orgs/acme/2fa-policy", json={"grace_days": 7, "reminder_days": [2]}).status_code == 200
        assert c.put("/orgs/acme/2fa-policy", json={"grace_days": 7}).status_code == 200  # no change: no mail
    for email, secret in (("fin2@acme.io", fin_secret), ("mem2@acme.io", mem_secret)):
        with server.client(sign_in(server, email, secret)) as c:
            server.clock.advance(seconds=30)
            off = c.post(
                "/auth/2fa/disable", json={"password": PASSWORD, "code": totp.code_at(secret, server.clock.now())}
            )
            assert off.status_code == 200, off.text
    for manager in ("owner@acme.io", "admin@acme.io", "super@acme.io"):
        mail = [r.message for r in server.smtp.to(manager) if is_admin_notice(str(r.message["Subject"]))]
        assert sorted(str(m["Subject"]) for m in mail) == sorted(
            [
                "The two-factor policy of acme was changed",
                "fin2@acme.io turned two-factor authentication off",
            ]
        ), manager
        changed = next(text_of(m) for m in mail if "policy" in str(m["Subject"]))
        assert "grace_days: 14 -> 7" in changed and "reminder_days: 7, 3, 1 -> 2" in changed
        assert "user:owner@acme.io changed" in changed
        off = next(text_of(m) for m in mail if "turned" in str(m["Subject"]))
        assert "fin2@acme.io (finance of acme)" in off and "by 2026-" in off
    assert not [s for s in subjects(server, "fin2@acme.io") if "turned two-factor authentication off" in s]

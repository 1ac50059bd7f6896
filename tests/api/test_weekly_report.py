"""A week's report figures through the real HTTP server: Monday to Sunday, the current week to date, a week that
has not begun refused with a stable code."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from tests.api.conftest import Server
from tests.api.test_help_article import sign_in
from tests.helpers import make_user


def test_weekly_report_figures(server: Server, factory: sessionmaker[Session]) -> None:
    make_user(factory, "admin@acme.io", role="admin", clock=server.clock)  # Monday 30 November 2026, week 49
    make_user(factory, "fin@acme.io", role="finance", clock=server.clock)
    admin = sign_in(server, "admin@acme.io")["session"]["token"]
    sign_in(server, "fin@acme.io")
    sign_in(server, "fin@acme.io")
    with server.client(admin) as c:
        last = c.get("/orgs/acme/reports/weekly")
        assert last.status_code == 200, last.text
        assert {k: last.json()[k] for k in ("week", "first_day", "last_day", "partial", "logins")} == {
            "week": "2026-W48",
            "first_day": "2026-11-23",
            "last_day": "2026-11-29",
            "partial": False,
            "logins": 0,
        }
        now = c.get("/orgs/acme/reports/weekly", params={"week": "2026-W49"}).json()
        assert (now["partial"], now["as_of"], now["first_day"], now["last_day"]) == (
            True,
            "2026-11-30T10:00:05Z",
            "2026-11-30",
            "2026-12-06",
        )
        # Three sign-ins with the password alone, by two people in privileged roles
        assert (now["logins"], now["privileged_unverified_logins"], now["privileged_unverified_members"]) == (3, 3, 2)
        future = c.get("/orgs/acme/reports/weekly", params={"week": "2026-W50"})
        assert future.status_code == 422
        assert future.json()["error"] == {
            "code": "week_not_begun",
            "message": "week 2026-W50 has not begun: it starts on Monday 7 December 2026 (this is week 2026-W49)",
        }
        bad = c.get("/orgs/acme/reports/weekly", params={"week": "2026-W60"})
        assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_input")
    with server.client(sign_in(server, "fin@acme.io")["session"]["token"]) as c:
        assert c.get("/orgs/acme/reports/weekly").status_code == 404  # not a manager of the organisation

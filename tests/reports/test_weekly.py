"""Weekly reports end to end on hand-built data: extract from the database, render, deliver once."""

from __future__ import annotations

import base64
import io
import re
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from reports.build import build, build_and_send, claim, write
from reports.week import IsoWeek
from tests.helpers import PASSWORD, enrol_totp, last_code, make_user, parsed
from twofa import audit, enrolment
from twofa.clock import FrozenClock
from twofa.db import transaction
from twofa.errors import InvalidInput
from twofa.mail.backends import MemoryBackend
from twofa.models import LoginHistory, Organization, User
from twofa.settings import get_settings

W49 = IsoWeek(2026, 49)  # Monday 30 November to Sunday 6 December: crosses a month boundary
MON = datetime(2026, 11, 30, tzinfo=UTC)


def login(s: Session, user: User, at: datetime, outcome: str, method: str, verified: bool) -> None:
    s.add(
        LoginHistory(
            at=at,
            user_id=user.id,
            email=user.email,
            ip="192.0.2.1",
            user_agent="t",
            outcome=outcome,
            method=method,
            twofa_verified=verified,
        )
    )


@pytest.fixture
def acme(factory: sessionmaker[Session], mailbox: MemoryBackend, clock: FrozenClock) -> dict[str, User]:
    early = clock  # the mailbox delivers on this clock too
    early.set(datetime(2026, 11, 1, 9, tzinfo=UTC))
    users = {
        role: make_user(factory, f"{role}@acme.io", role=role, clock=early)
        for role in ("owner", "admin", "super_admin", "finance", "member")
    }
    enrol_totp(factory, users["owner"], early)
    early.set(datetime(2026, 11, 3, 9, tzinfo=UTC))
    enrol_totp(factory, users["super_admin"], early)
    early.set(datetime(2026, 11, 25, 9, tzinfo=UTC))  # admin enrols with email codes in week 48
    with transaction(factory) as s:
        enrolment.start_email(s, users["admin"], PASSWORD, early)
    with transaction(factory) as s:
        enrolment.confirm_email(s, users["admin"], last_code(mailbox, users["admin"].email), clock=early)
    u = users
    with transaction(factory) as s:
        login(s, u["owner"], datetime(2026, 11, 29, 23, 59, tzinfo=UTC), "success", "totp", True)  # week 48
        login(s, u["owner"], MON, "success", "totp", True)
        login(s, u["owner"], datetime(2026, 12, 2, 12, tzinfo=UTC), "success", "totp", True)
        login(s, u["owner"], datetime(2026, 12, 6, 23, 59, 59, tzinfo=UTC), "success", "totp", True)
        login(s, u["owner"], datetime(2026, 12, 1, 8, tzinfo=UTC), "bad_code", "totp", False)
        login(s, u["owner"], datetime(2026, 12, 7, tzinfo=UTC), "success", "totp", True)  # week 50
        login(s, u["admin"], datetime(2026, 12, 3, tzinfo=UTC), "success", "backup_code", True)
        login(s, u["finance"], datetime(2026, 12, 1, tzinfo=UTC), "success", "password", False)
        login(s, u["finance"], datetime(2026, 12, 1, 1, tzinfo=UTC), "enrolment_required", "password", False)
        login(s, u["finance"], datetime(2026, 12, 1, 2, tzinfo=UTC), "invalid_credentials", "password", False)
        login(s, u["member"], datetime(2026, 12, 4, tzinfo=UTC), "success", "password", False)
        audit.record(
            s,
            audit.Event.SECOND_FACTOR_LOCKED,
            user_id=u["finance"].id,
            clock=FrozenClock(datetime(2026, 12, 5, tzinfo=UTC)),
        )
    return users


def report(factory: sessionmaker[Session], slug: str, week: IsoWeek = W49):  # type: ignore[no-untyped-def]
    with factory() as s:
        org = s.execute(select(Organization).where(Organization.slug == slug)).scalar_one()
        return build(s, org, week, datetime(2026, 12, 7, 6, tzinfo=UTC))


def csv(rendered, name: str) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    return pd.read_csv(io.BytesIO(rendered.csv[name]), keep_default_na=False)


def test_the_numbers_of_a_week(factory: sessionmaker[Session], acme: dict[str, User]) -> None:
    r = report(factory, "acme")
    s = r.summary
    # In scope: owner, admin, super_admin, finance (member is not required); enrolled: owner, super_admin (TOTP),
    # admin (email). 3 of 4 = 75.0%.
    assert (s["members"], s["in_scope"], s["enrolled"], s["coverage_pct"], s["sso_managed"]) == (5, 4, 3, 75.0, 0)
    # Sign-ins in the week: owner 3 (29 Nov and 7 Dec are other weeks), admin 1, finance 2, member 1 = 7;
    # verified: owner 3 + admin 1 = 4 -> 57.1%.
    assert (s["logins"], s["verified"], s["verified_pct"]) == (7, 4, 57.1)
    assert (s["privileged_unverified_logins"], s["backup_codes_used"], s["failed_2fa"]) == (2, 1, 1)
    assert (s["failed_password"], s["lockouts"], s["non_compliant"], s["overdue"]) == (1, 1, 1, 1)
    by_role = csv(r, "coverage_by_role.csv").set_index("role")
    assert by_role.loc["admin"].to_dict() == {
        "members": 1,
        "sso_managed": 0,
        "in_scope": 1,
        "enrolled": 1,
        "totp": 0,
        "email": 1,
        "coverage": "1.0000",
    }
    assert by_role.loc["finance", "coverage"] == "0.0000" and by_role.loc["member", "coverage"] == ""
    assert csv(r, "coverage_by_method.csv").values.tolist() == [["totp", 2], ["email", 1], ["none", 1]]
    assert csv(r, "non_compliant.csv")[["email", "verdict", "deadline"]].values.tolist() == [
        ["finance@acme.io", "overdue", "2026-11-15T09:00:00Z"]
    ]
    assert csv(r, "privileged_unverified.csv").values.tolist() == [["finance@acme.io", "finance", 2]]
    trend = csv(r, "trend.csv")
    assert trend["week"].tolist() == [f"2026-W{w}" for w in range(42, 50)]
    assert trend["signed_in"].tolist() == [0, 0, 0, 0, 0, 0, 1, 7]
    assert trend["verified"].tolist() == [0, 0, 0, 0, 0, 0, 1, 4]
    # Members had joined on 1 Nov (week 44): before then nobody was in scope. Owner on from 1 Nov, super_admin from
    # 3 Nov (both week 45 onwards), admin from 25 Nov (week 48).
    assert trend["in_scope"].tolist() == [0, 0, 4, 4, 4, 4, 4, 4]
    assert trend["enrolled"].tolist() == [0, 0, 1, 2, 2, 2, 3, 3]


def test_the_html_embeds_the_chart(factory: sessionmaker[Session], acme: dict[str, User]) -> None:
    r = report(factory, "acme")
    prefix = 'src="data:image/png;base64,'
    start = r.html.index(prefix) + len(prefix)
    png = base64.b64decode(r.html[start : r.html.index('"', start)])
    assert png == r.chart_png and png.startswith(b"\x89PNG")
    assert "finance@acme.io" in r.html and "75.0%" in r.html


def test_same_data_same_csv_bytes(factory: sessionmaker[Session], acme: dict[str, User]) -> None:
    assert report(factory, "acme").csv == report(factory, "acme").csv


def test_an_organisation_with_no_logins_and_an_empty_one(factory: sessionmaker[Session], acme: dict[str, User]) -> None:
    quiet = report(factory, "acme", IsoWeek(2026, 40))  # before anybody joined
    assert (quiet.summary["logins"], quiet.summary["verified_pct"]) == (0, None)
    with transaction(factory) as s:
        s.add(Organization(slug="empty", name="Empty", created_at=MON))
    empty = report(factory, "empty")
    assert (empty.summary["members"], empty.summary["coverage_pct"]) == (0, None)
    assert "n/a" in empty.html


def test_an_sso_organisation(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    clock.set(datetime(2026, 11, 1, tzinfo=UTC))
    make_user(factory, "a@sso.io", org="ssoco", sso="okta", role="owner", clock=clock)
    make_user(factory, "b@sso.io", org="ssoco", role="member", clock=clock)
    r = report(factory, "ssoco")
    assert (r.summary["members"], r.summary["sso_managed"], r.summary["in_scope"]) == (2, 2, 0)
    assert "managed by the identity provider" in r.html


def test_built_and_sent_once(
    factory: sessionmaker[Session],
    acme: dict[str, User],
    mailbox: MemoryBackend,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TWOFA_REPORTS_DIR", str(tmp_path))
    get_settings.cache_clear()
    clock = FrozenClock(datetime(2026, 12, 7, 6, tzinfo=UTC))
    with factory() as s:
        org_id = s.execute(select(Organization.id).where(Organization.slug == "acme")).scalar_one()
    before = len(mailbox.sent)
    with transaction(factory) as s:  # as the task does: the claim committed first, then the build
        claimed = claim(s, org_id, W49, clock.now())
        assert claimed is not None
    with transaction(factory) as s:
        assert build_and_send(s, claimed.id, clock) == "built"
    with transaction(factory) as s:
        assert claim(s, org_id, W49, clock.now()) is None  # a second run finds it built
    assert (tmp_path / "acme" / "2026-W49" / "report.html").exists()
    reports = mailbox.sent[before:]
    assert sorted(str(m["To"]) for m in reports) == ["admin@acme.io", "owner@acme.io"]
    message = parsed(reports[0])
    assert str(message["Subject"]) == "2FA coverage for acme, week 2026-W49: 75.0% enrolled"
    assert [p.get_content_type() for p in message.walk()][:5] == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "multipart/related",
        "text/html",
    ]
    # The HTML part is one document, showing the chart from the part its cid: names (Gmail and Outlook block data:)
    body = message.get_body(preferencelist=("html",))
    assert body is not None
    html = body.get_content()
    assert html.count("<html") == 1 and html.lstrip().startswith("<!doctype html>") and "data:image" not in html
    cid = re.search(r'<img [^>]*src="cid:([^"]+)"', html)
    assert cid is not None
    related = message.get_payload()[0].get_payload()[1]
    assert related.get_content_type() == "multipart/related" and related.get_param("type") == "text/html"
    [image] = [p for p in related.iter_parts() if p["Content-ID"] == f"<{cid[1]}>"]
    assert image.get_content_type() == "image/png" and image.get_content_disposition() == "inline"
    assert image.get_content() == rendered_chart(factory)
    assert "as an owner or admin of acme" in html
    # What the text says is attached is attached: the report as one HTML file, and its tables as CSV.
    text = message.get_body(preferencelist=("plain",))
    assert text is not None
    plain = text.get_content()
    assert "The full report is attached as one HTML file (report.html), and its tables as CSV files." in plain
    assert plain.startswith(
        "Two-factor authentication in acme, week 2026-W49: Monday 30 November 2026 to Sunday 6 December 2026 (UTC)\n"
    )
    assert "Sign-ins: 7, of which 4 (57.1%) verified with a second factor." in plain
    assert "Privileged sign-ins without 2FA: 2 by 1 person." in plain
    attachments = {p.get_filename(): p for p in message.iter_attachments()}
    assert sorted(attachments) == sorted(
        [
            "report.html",
            "activity.csv",
            "coverage_by_method.csv",
            "coverage_by_role.csv",
            "non_compliant.csv",
            "privileged_unverified.csv",
            "trend.csv",
        ]
    )
    report_file = attachments["report.html"].get_content()
    assert attachments["report.html"].get_content_type() == "text/html"
    assert report_file == (tmp_path / "acme" / "2026-W49" / "report.html").read_text()
    assert "data:image/png;base64," in report_file and "cid:" not in report_file


def rendered_chart(factory: sessionmaker[Session]) -> bytes:
    return bytes(report(factory, "acme").chart_png)


def test_write_and_week_parsing(factory: sessionmaker[Session], acme: dict[str, User], tmp_path: Path) -> None:
    paths = write(report(factory, "acme"), tmp_path)
    assert paths[0].name == "report.html" and len(paths) == 7
    assert IsoWeek.parse("2026-W01").start == datetime(2025, 12, 29, tzinfo=UTC)
    assert str(IsoWeek.last_complete(datetime(2026, 12, 7, 6, tzinfo=UTC))) == "2026-W49"
    for bad in ("2026-47", "2026-W54", "W47", "2026-W5"):
        with pytest.raises(InvalidInput):
            IsoWeek.parse(bad)

"""The organisation's security page in headless Chromium against ``twofa serve``: coverage, the members table and
its non-compliant filter, the CSV export, the policy form, the weekly reports; and the enrol-only sign-in after a
deadline."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from sqlalchemy.orm import Session, sessionmaker

from policies.rules import set_policy
from reports.build import build, claim, write
from reports.week import IsoWeek
from tests.helpers import PASSWORD
from tests.integration.browser.conftest import Site
from tests.integration.browser.pages import (
    Authenticator,
    click,
    enrol,
    make_member,
    screenshot_for_docs,
    sign_in,
    text,
    type_into,
)
from twofa import accounts
from twofa.clock import SYSTEM_CLOCK
from twofa.db import transaction

pytestmark = pytest.mark.integration


def member_row(browser: WebDriver, email: str) -> str:
    return browser.find_element(By.CSS_SELECTOR, f'#members tr[data-email="{email}"]').text


def test_an_owner_sets_the_policy_and_sees_a_member_turn_compliant(
    site: Site, browser: WebDriver, it_factory: sessionmaker[Session]
) -> None:
    make_member(it_factory, "ann@acme.io", "owner")
    make_member(it_factory, "bob@acme.io", "member")
    make_member(it_factory, "fin@acme.io", "finance")
    ann = enrol(it_factory, "ann@acme.io")
    week = IsoWeek.containing(datetime.now(UTC)).minus(1)
    with transaction(it_factory) as s:  # last week's report, as the Monday job leaves it
        org = accounts.require_org(s, "acme")
        row = claim(s, org.id, week, datetime.now(UTC))
        assert row is not None
        write(build(s, org, week, datetime.now(UTC)), site.reports_dir / "acme" / str(week))
        row.status = "done"

    with httpx.Client(base_url=site.url + "/api/v1") as api:  # a member is no manager: no such page for them
        bob = api.post("/auth/login", json={"email": "bob@acme.io", "password": PASSWORD}).json()["session"]["token"]
    with httpx.Client(base_url=site.url, cookies={"twofa_session": bob}) as client:
        assert client.get("/orgs/acme/security").status_code == 404

    sign_in(browser, site.url, "ann@acme.io")
    type_into(browser, "6-digit code", ann.code())
    click(browser, "Verify")
    browser.get(site.url + "/orgs/acme/security")
    assert browser.find_element(By.ID, "coverage-pct").text == "50%"  # ann yes, fin not yet; bob is not covered
    assert "exempt" in member_row(browser, "bob@acme.io") and "pending" in member_row(browser, "fin@acme.io")
    assert member_row(browser, "ann@acme.io").split()[:4] == ["ann@acme.io", "owner", "app", "compliant"]
    chart = browser.find_element(By.CSS_SELECTOR, "img.chart")
    assert browser.execute_script("return arguments[0].naturalWidth", chart) == 700  # the report's chart loaded

    click(browser, "Show only the non-compliant")
    rows = browser.find_elements(By.CSS_SELECTOR, "#members tbody tr")
    assert [r.get_attribute("data-email") for r in rows] == ["fin@acme.io"]
    cookies = {c["name"]: c["value"] for c in browser.get_cookies()}
    with httpx.Client(base_url=site.url, cookies=cookies) as client:
        exported = client.get("/orgs/acme/security/members.csv")
        assert exported.headers["content-disposition"].startswith('attachment; filename="acme-members-')
        table = list(csv.DictReader(io.StringIO(exported.text)))
        assert [(r["email"], r["verdict"]) for r in table] == [
            ("ann@acme.io", "compliant"),
            ("bob@acme.io", "exempt"),
            ("fin@acme.io", "pending"),
        ]
        assert table[0]["last_sign_in"].startswith(datetime.now(UTC).strftime("%Y-%m-%d"))
        report = client.get(f"/orgs/acme/security/reports/{week}/report.html")
        assert report.status_code == 200 and "attachment" in report.headers["content-disposition"]

    # The policy: members too, 7 days' grace, confirmed with the password and a code.
    click(browser, "Show all members")
    browser.find_element(By.ID, "role-member").click()
    type_into(browser, "Grace period (days)", "7")
    type_into(browser, "Password", PASSWORD)
    type_into(browser, "6-digit code (if you use 2FA)", ann.code())
    click(browser, "Save policy")
    assert "The policy is saved." in text(browser)
    assert "pending" in member_row(browser, "bob@acme.io")
    assert browser.find_element(By.ID, "non-compliant-count").text == "2"
    assert str(week) in browser.find_element(By.ID, "reports").text
    screenshot_for_docs(browser, "org-page.png")

    enrol(it_factory, "bob@acme.io")
    enrol(it_factory, "fin@acme.io")
    browser.refresh()
    assert member_row(browser, "bob@acme.io").split()[:4] == ["bob@acme.io", "member", "app", "compliant"]
    assert browser.find_element(By.ID, "coverage-pct").text == "100%"
    click(browser, "Show only the non-compliant")
    assert "Everyone complies." in browser.find_element(By.ID, "members").text


def test_after_the_deadline_a_sign_in_may_only_set_up_2fa(
    site: Site, browser: WebDriver, it_factory: sessionmaker[Session]
) -> None:
    make_member(it_factory, "dan@acme.io", "admin")
    with transaction(it_factory) as s:
        set_policy(s, accounts.require_org(s, "acme"), {"grace_days": 0}, actor="test", clock=SYSTEM_CLOCK)

    sign_in(browser, site.url, "dan@acme.io")
    assert browser.current_url == site.url + "/login/enrol"
    assert "Set up two-factor authentication to continue" in text(browser)
    browser.get(site.url + "/settings/personal/security")
    assert browser.current_url == site.url + "/login/enrol"

    type_into(browser, "Your password", PASSWORD)

    click(browser, "Enable 2FA")
    app = Authenticator(browser.find_element(By.ID, "secret").text.replace(" ", ""))
    type_into(browser, "6-digit code", app.code())
    click(browser, "Verify")
    click(browser, "I've saved them")
    assert "Two-factor authentication is on. Sign in again with it." in text(browser)
    sign_in(browser, site.url, "dan@acme.io")
    type_into(browser, "6-digit code", app.code())
    click(browser, "Verify")
    assert browser.current_url == site.url + "/settings/personal/security"
    assert browser.find_element(By.ID, "twofa-badge").text == "2FA enabled"

"""Plain and accessible pages: a phone's width without sideways scrolling, a sign-in by keyboard alone, a label
for every field, and "Managed by SSO" with the setting hidden for members of an SSO organisation."""

from __future__ import annotations

from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait
from sqlalchemy.orm import Session, sessionmaker

from tests.helpers import PASSWORD
from tests.integration.browser.conftest import Site, chromium
from tests.integration.browser.pages import Authenticator, click, make_member, text, type_into
from twofa import accounts, sessions
from twofa.clock import SYSTEM_CLOCK
from twofa.db import transaction
from twofa.sessions import Client

pytestmark = pytest.mark.integration


@pytest.fixture
def phone(downloads: Path) -> WebDriver:
    driver = chromium(downloads, width=390, height=844)
    yield driver  # type: ignore[misc]
    driver.quit()


_WIDER = """
const width = document.documentElement.clientWidth;
return Array.from(document.querySelectorAll("body *"))
  .filter(e => !(e.parentElement && e.parentElement.closest(".scroll")) && e.getBoundingClientRect().right > width + 1)
  .map(e => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + (e.className ? "." + e.className : ""));
"""


def wider(browser: WebDriver) -> list[str]:
    """Elements that stick out of a phone's screen (a table may scroll inside its own box)."""
    return list(browser.execute_script(_WIDER))


def fits(browser: WebDriver) -> bool:
    return wider(browser) == [] and bool(
        browser.execute_script("return document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    )


def unlabelled(browser: WebDriver) -> list[str]:
    """Fields a screen reader could not name: no <label for>, no aria-label."""
    fields = browser.find_elements(By.CSS_SELECTOR, "input:not([type=hidden]), select, textarea")
    return [
        f.get_attribute("outerHTML") or ""
        for f in fields
        if not f.get_attribute("aria-label")
        and not browser.find_elements(By.CSS_SELECTOR, f'label[for="{f.get_attribute("id")}"]')
    ]


def test_a_phone_and_a_keyboard_are_enough(site: Site, phone: WebDriver, it_factory: sessionmaker[Session]) -> None:
    make_member(it_factory, "ann@acme.io", "owner")
    phone.get(site.url + "/login")
    assert fits(phone) and unlabelled(phone) == []
    # Keyboard alone: the email field has the focus; Tab to the password; Enter submits.
    phone.switch_to.active_element.send_keys("ann@acme.io", Keys.TAB, PASSWORD, Keys.ENTER)
    WebDriverWait(phone, 15).until(lambda d: d.current_url == site.url + "/settings/personal/security")
    assert phone.find_element(By.TAG_NAME, "h1").text == "Security"
    assert wider(phone) == []
    assert fits(phone) and unlabelled(phone) == []

    type_into(phone, "Your password", PASSWORD)

    click(phone, "Enable 2FA")
    assert fits(phone) and unlabelled(phone) == []
    app = Authenticator(phone.find_element(By.ID, "secret").text.replace(" ", ""))
    type_into(phone, "6-digit code", app.code()).send_keys(Keys.ENTER)
    WebDriverWait(phone, 15).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#backup-codes code"))
    assert len(phone.find_elements(By.CSS_SELECTOR, "#backup-codes code")) == 10 and fits(phone)
    click(phone, "I've saved them")
    for summary in phone.find_elements(By.TAG_NAME, "summary"):  # every hidden form opens from the keyboard
        summary.send_keys(Keys.ENTER)
    assert fits(phone) and unlabelled(phone) == []
    phone.get(site.url + "/orgs/acme/security")
    assert unlabelled(phone) == []
    # The page itself fits; the members table scrolls within its own box.
    assert fits(phone)


def test_sso_members_see_managed_by_sso_and_no_setting(
    site: Site, browser: WebDriver, it_factory: sessionmaker[Session]
) -> None:
    with transaction(it_factory) as s:
        org = accounts.create_org(s, "partner", sso_idp="okta", clock=SYSTEM_CLOCK)
        user = accounts.create_user(s, "sam@partner.io", PASSWORD, clock=SYSTEM_CLOCK)
        accounts.add_member(s, org, user, "admin", clock=SYSTEM_CLOCK)
        # A session as the identity provider's sign-in would open it (SSO members have no local password sign-in).
        token = sessions.issue(
            s, user, twofa_verified=True, method="sso", client=Client(ip="127.0.0.1", user_agent=None)
        ).token
    browser.get(site.url + "/login")
    browser.add_cookie({"name": "twofa_session", "value": token, "path": "/", "httpOnly": True, "sameSite": "Strict"})
    browser.get(site.url + "/settings/personal/security")
    assert browser.find_element(By.ID, "twofa-badge").text == "Managed by SSO"
    assert "Enable 2FA" not in text(browser) and "Disable 2FA" not in text(browser)
    assert "Use email codes instead" not in text(browser)

"""The help article clicked through in headless Chromium against ``twofa serve``, a real worker and SMTP server:
enable 2FA with a code from the secret on the page, download the backup codes, sign out and in with a code and
with a backup code, switch to email codes (read from the SMTP server), sign in with one, disable; sessions and API
keys; and the safety of the pages themselves."""

from __future__ import annotations

import base64
import io
import re
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import zxingcpp
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.helpers import PASSWORD
from tests.integration.browser.conftest import COOLDOWN, Site
from tests.integration.browser.pages import (
    Authenticator,
    click,
    cooldown_over,
    disclose,
    downloaded,
    enrol,
    field,
    mail_count,
    make_member,
    next_mail,
    press,
    screenshot_for_docs,
    sign_in,
    text,
    type_into,
)
from twofa.models import ApiKey, AuditEvent

pytestmark = pytest.mark.integration
ANN = "ann@acme.io"
PAGE = "/settings/personal/security"


def test_the_help_article_in_a_browser(
    site: Site, browser: WebDriver, downloads: Path, it_factory: sessionmaker[Session]
) -> None:
    make_member(it_factory, ANN, "owner")
    sign_in(browser, site.url, ANN)
    assert browser.current_url == site.url + PAGE
    assert browser.find_element(By.ID, "twofa-badge").text == "2FA not enabled"
    assert "Your organisation requires two-factor authentication by" in text(browser)

    # Enable 2FA: the QR code and the secret grouped for typing; the code computed from the secret as shown.
    type_into(browser, "Your password", PASSWORD)
    click(browser, "Enable 2FA")
    shown = browser.find_element(By.ID, "secret").text
    assert re.fullmatch(r"([A-Z2-7]{4} )+[A-Z2-7]{1,4}", shown), shown
    secret = shown.replace(" ", "")
    qr = browser.find_element(By.CSS_SELECTOR, "img.qr").get_attribute("src") or ""
    png = base64.b64decode(qr.removeprefix("data:image/png;base64,"))
    uri = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))[0].text
    assert uri == f"otpauth://totp/Wevion:ann%40acme.io?secret={secret}&issuer=Wevion"
    app = Authenticator(secret)
    code_field = type_into(browser, "6-digit code", app.code())
    assert code_field.get_attribute("autocomplete") == "one-time-code"
    assert code_field.get_attribute("inputmode") == "numeric"
    click(browser, "Verify")

    # The ten backup codes, once, and the text file.
    codes = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#backup-codes code")]
    assert len(codes) == 10 and len(set(codes)) == 10
    click(browser, "Download as text file", navigates=False)
    saved = downloaded(downloads)
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert saved.name == f"wevion-backup-codes-{today}.txt"
    content = saved.read_text()
    assert "Wevion backup codes" in content and f"Account: {ANN}" in content and f"Generated: {today}" in content
    assert [line for line in content.splitlines() if line in codes] == codes
    click(browser, "I've saved them")
    assert browser.find_element(By.ID, "twofa-badge").text == "2FA enabled"
    assert "Authenticator app" in text(browser) and "10 backup codes left" in text(browser)

    # Sign out, and back in with a code from the app.
    click(browser, "Sign out")
    assert "You are signed out." in text(browser)
    sign_in(browser, site.url, ANN)
    assert browser.current_url == site.url + "/login/2fa"
    prompt = field(browser, "6-digit code")
    assert (prompt.get_attribute("autocomplete"), prompt.get_attribute("inputmode")) == ("one-time-code", "numeric")
    assert "Email me a new code" not in text(browser)
    type_into(browser, "6-digit code", app.wrong_code())
    click(browser, "Verify")
    assert "The code is wrong or has expired." in text(browser)
    type_into(browser, "6-digit code", app.code())
    click(browser, "Verify")
    assert browser.current_url == site.url + PAGE

    # Sign in with a backup code.
    click(browser, "Sign out")
    sign_in(browser, site.url, ANN)
    click(browser, "Use a backup code")
    type_into(browser, "Backup code", codes[0])
    click(browser, "Verify")
    assert browser.current_url == site.url + PAGE
    assert "9 backup codes left" in text(browser)
    history = browser.find_element(By.ID, "history").text
    assert "success backup code true" in history and "success totp true" in history
    assert "bad code totp false" in history
    screenshot_for_docs(browser, "security-page.png")

    # Use email codes instead: the app's code and the password, then the code from the mailbox.
    seen = mail_count(site.smtp, ANN)
    section = disclose(browser, "Use email codes instead")
    type_into(browser, "Password", PASSWORD, section)
    type_into(browser, "6-digit code from your authenticator app", app.code(), section)
    click(browser, "Switch to email codes")
    type_into(browser, "6-digit code from the email", next_mail(site.smtp, ANN, seen))
    click(browser, "Verify")
    email_codes = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#backup-codes code")]
    assert len(email_codes) == 10 and not set(email_codes) & set(codes)
    click(browser, "I've saved them")
    assert "Email codes" in text(browser) and "10 backup codes left" in text(browser)

    # Sign out and back in at once (the article's step 6): the sign-in mails its own code, whatever the
    # enrolment's was; a new code may be asked for after the cooldown, which the page states.
    click(browser, "Sign out")
    seen = mail_count(site.smtp, ANN)
    sign_in(browser, site.url, ANN)
    assert "We emailed you a code." in text(browser)
    assert f"You can ask for a new code every {COOLDOWN} seconds." in text(browser)
    click(browser, "Email me a new code")
    assert re.search(r"ask again in \d+ seconds", text(browser)), text(browser)
    type_into(browser, "6-digit code", next_mail(site.smtp, ANN, seen))
    click(browser, "Verify")
    assert browser.current_url == site.url + PAGE

    # API keys: shown once, working, revoked.
    type_into(browser, "Name of a new key", "deploy script")
    click(browser, "Create API key")
    key = browser.find_element(By.ID, "api-key").text
    with httpx.Client(base_url=site.url + "/api/v1", headers={"Authorization": f"Bearer {key}"}) as api:
        assert api.get("/api-keys").status_code == 200
        click(browser, "Done")
        assert "deploy script" in browser.find_element(By.ID, "api-keys").text
        click(browser, "Revoke")
        assert "The API key is revoked." in text(browser)
        assert api.get("/api-keys").status_code == 401

    # Disable 2FA with the password and a backup code.
    section = disclose(browser, "Disable 2FA")
    type_into(browser, "Password", PASSWORD, section)
    type_into(browser, "6-digit code from your email, or a backup code", email_codes[0], section)
    click(browser, "Disable 2FA")
    assert "Two-factor authentication is off." in text(browser)
    assert browser.find_element(By.ID, "twofa-badge").text == "2FA not enabled"

    # Another session (a sign-in through the API), then "sign out everywhere else".
    with httpx.Client(base_url=site.url + "/api/v1") as api:
        first, other = (
            api.post("/auth/login", json={"email": ANN, "password": PASSWORD}).json()["session"]["token"]
            for _ in range(2)
        )
        browser.refresh()
        assert len(browser.find_elements(By.CSS_SELECTOR, "#sessions tbody tr")) == 3
        press(browser, browser.find_elements(By.CSS_SELECTOR, "#sessions tbody button")[-1])  # the oldest: first
        assert "That session is signed out." in text(browser)
        assert api.get("/auth/2fa/status", headers={"Authorization": f"Bearer {first}"}).status_code == 401
        assert len(browser.find_elements(By.CSS_SELECTOR, "#sessions tbody tr")) == 2
        click(browser, "Sign out everywhere else")
        assert "Every other session is signed out." in text(browser)
        assert len(browser.find_elements(By.CSS_SELECTOR, "#sessions tbody tr")) == 1
        gone = api.get("/auth/2fa/status", headers={"Authorization": f"Bearer {other}"})
        assert gone.status_code == 401


def test_cookies_headers_and_a_form_without_its_csrf_token(
    site: Site, browser: WebDriver, it_factory: sessionmaker[Session]
) -> None:
    make_member(it_factory, ANN, "owner")
    with httpx.Client(base_url=site.url) as client:
        page = client.get("/login")
        assert page.headers["content-security-policy"].startswith("default-src 'none'; script-src 'self'")
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert "unsafe-inline" not in page.headers["content-security-policy"]
        assert "<script>" not in page.text and " style=" not in page.text
        assert page.headers["cache-control"] == "no-store"  # backup codes and API keys stay out of caches
        assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
        refused = client.post("/login", data={"email": ANN, "password": PASSWORD}, follow_redirects=False)
        assert refused.status_code == 403 and "twofa_session" not in refused.headers.get("set-cookie", "")
        forged = client.post("/login", data={"csrf": "x" * 43, "email": ANN, "password": PASSWORD})
        assert forged.status_code == 403

    sign_in(browser, site.url, ANN)
    session = browser.get_cookie("twofa_session")
    assert session is not None and session["httpOnly"] and session["sameSite"] == "Strict"
    assert browser.execute_script("return document.cookie") == ""  # no cookie is readable by page script
    assert "twofa_session" not in browser.page_source and session["value"] not in browser.page_source

    # The signed-in person's own cookies, but a form posted without its token: refused, nothing written.
    cookies = {c["name"]: c["value"] for c in browser.get_cookies()}
    with httpx.Client(base_url=site.url, cookies=cookies) as client:
        refused = client.post(PAGE + "/api-keys", data={"name": "forged"})
        assert refused.status_code == 403 and "did not come from this site" in refused.text
        token = re.search(r'name="csrf" value="([^"]+)"', client.get(PAGE).text)
        assert token is not None
        accepted = client.post(PAGE + "/api-keys", data={"name": "mine", "csrf": token.group(1)})
        assert accepted.status_code == 200
    with it_factory() as s:
        assert list(s.execute(select(ApiKey.name)).scalars()) == ["mine"]


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None, page.text
    return found.group(1)


def test_wrong_codes_on_the_sign_in_page_lock_the_second_factor_as_the_api_does(
    site: Site, it_factory: sessionmaker[Session]
) -> None:
    make_member(it_factory, ANN, "owner")
    app = enrol(it_factory, ANN)
    with httpx.Client(base_url=site.url, follow_redirects=True) as client:
        signed = client.post("/login", data={"csrf": csrf_of(client.get("/login")), "email": ANN, "password": PASSWORD})
        assert signed.url.path == "/login/2fa"
        answers = [
            client.post("/login/2fa", data={"csrf": csrf_of(signed), "code": app.wrong_code()}) for _ in range(5)
        ]
        assert [a.status_code for a in answers] == [401] * 5
        still = client.post("/login/2fa", data={"csrf": csrf_of(signed), "code": app.code()})  # the right one
        assert still.status_code == 429 and "too many wrong codes; try again in" in still.text
        assert "twofa_session" not in client.cookies
    with it_factory() as s:
        events = s.execute(select(AuditEvent.event).where(AuditEvent.event == "second_factor_locked")).scalars()
        assert list(events) == ["second_factor_locked"]


def test_cookies_are_secure_behind_an_https_proxy(site: Site) -> None:
    with httpx.Client(base_url=site.url) as client:
        page = client.get("/login", headers={"X-Forwarded-Proto": "https"})
        cookie = page.headers["set-cookie"]
        assert cookie.startswith("twofa_csrf=") and "Secure" in cookie and "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert "Secure" not in client.get("/login").headers["set-cookie"]  # plain HTTP (a local run)


def test_errors_are_pages_on_the_pages_and_json_on_the_api(site: Site) -> None:
    with httpx.Client(base_url=site.url) as client:
        missing = client.get("/settings/nothing-here")
        assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
        assert (
            "There is no such page." in missing.text and "frame-ancestors" in missing.headers["content-security-policy"]
        )
        too_long = client.post("/login", data={"csrf": csrf_of(client.get("/login")), "email": "a" * 2000})
        assert too_long.status_code == 422 and "too long or not valid" in too_long.text
        api = client.get("/api/v1/nothing-here")
        assert api.status_code == 404 and api.json()["error"]["code"] == "not_found"


def test_email_codes_confirm_a_regeneration_and_the_move_to_an_app(
    site: Site, browser: WebDriver, it_factory: sessionmaker[Session]
) -> None:
    make_member(it_factory, "fin@acme.io", "finance")
    sign_in(browser, site.url, "fin@acme.io")
    seen = mail_count(site.smtp, "fin@acme.io")
    type_into(browser, "Your password", PASSWORD)
    click(browser, "Use email codes instead")
    assert "We emailed a 6-digit code to fin@acme.io" in text(browser)
    type_into(browser, "6-digit code from the email", next_mail(site.smtp, "fin@acme.io", seen))
    click(browser, "Verify")
    first = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#backup-codes code")]
    click(browser, "I've saved them")
    assert "Email codes" in text(browser)

    # Regenerate the backup codes: the password and a code emailed for the purpose.
    cooldown_over(site.smtp, "fin@acme.io", COOLDOWN)
    click(browser, "Email me a code")
    assert "We emailed you a code." in text(browser)
    section = disclose(browser, "Regenerate backup codes")
    type_into(browser, "Password", PASSWORD, section)
    type_into(browser, "6-digit code from your email", next_mail(site.smtp, "fin@acme.io", seen + 1), section)
    click(browser, "Regenerate")
    second = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#backup-codes code")]
    assert len(second) == 10 and not set(first) & set(second)
    click(browser, "I've saved them")

    # A wrong password changes nothing and says why.
    cooldown_over(site.smtp, "fin@acme.io", COOLDOWN)
    click(browser, "Email me a code")
    section = disclose(browser, "Use an authenticator app instead")
    type_into(browser, "Password", "not the password", section)
    type_into(browser, "6-digit code from your email", next_mail(site.smtp, "fin@acme.io", seen + 2), section)
    click(browser, "Continue")
    assert "the password or the code is wrong" in text(browser) and "Email codes" in text(browser)

    # Move to an authenticator app with the password and the emailed code.
    section = disclose(browser, "Use an authenticator app instead")
    type_into(browser, "Password", PASSWORD, section)
    type_into(browser, "6-digit code from your email", next_mail(site.smtp, "fin@acme.io", seen + 2), section)
    click(browser, "Continue")
    app = Authenticator(browser.find_element(By.ID, "secret").text.replace(" ", ""))
    type_into(browser, "6-digit code", app.code())
    click(browser, "Verify")
    click(browser, "I've saved them")
    assert "Authenticator app" in text(browser) and "10 backup codes left" in text(browser)

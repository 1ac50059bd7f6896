"""Clicking through the pages as a person does: find by the words on the screen, type into labelled fields."""

from __future__ import annotations

import base64
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from sqlalchemy.orm import Session, sessionmaker

from tests.harness.services import ROOT, SmtpServer, wait_for
from tests.helpers import PASSWORD, code_of
from twofa import accounts, enrolment, totp
from twofa.clock import SYSTEM_CLOCK
from twofa.db import transaction


def button(browser: WebDriver, text: str) -> WebElement:
    return browser.find_element(By.XPATH, f"//button[normalize-space()={text!r}] | //a[normalize-space()={text!r}]")


def click(browser: WebDriver, text: str, *, navigates: bool = True) -> None:
    """Click a button or link by its words; when it leads to another page, wait until that page has loaded."""
    press(browser, button(browser, text), navigates=navigates)


def press(browser: WebDriver, element: WebElement, *, navigates: bool = True) -> None:
    page = browser.find_element(By.TAG_NAME, "html")
    element.click()
    if navigates:
        wait_for(lambda: _gone(page), 30, 0.05, "the next page")
        wait_for(lambda: browser.execute_script("return document.readyState") == "complete", 30, 0.05, "the page")


def _gone(element: WebElement) -> bool:
    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:  # caught mid-navigation: "does not belong to the document"
        return "does not belong to the document" in str(exc)
    return False


def field(browser: WebDriver, label: str, within: WebElement | None = None) -> WebElement:
    """The input a visible label names (as a screen reader finds it)."""
    root = within or browser
    found = root.find_element(By.XPATH, f".//label[normalize-space()={label!r}]")
    return browser.find_element(By.ID, found.get_attribute("for") or "")


def type_into(browser: WebDriver, label: str, text: str, within: WebElement | None = None) -> WebElement:
    element = field(browser, label, within)
    element.clear()
    element.send_keys(text)
    return element


def disclose(browser: WebDriver, summary: str) -> WebElement:
    """Open a <details> section by its summary; the section."""
    element = browser.find_element(By.XPATH, f"//summary[normalize-space()={summary!r}]")
    element.click()
    return element.find_element(By.XPATH, "..")


def text(browser: WebDriver) -> str:
    return browser.find_element(By.TAG_NAME, "body").text


def sign_in(browser: WebDriver, url: str, email: str, password: str = PASSWORD) -> None:
    browser.get(url + "/login")
    type_into(browser, "Email address", email)
    type_into(browser, "Password", password)
    click(browser, "Sign in")


# A code is checked by the server within this many seconds of being made (typed, then one request).
CODE_CHECKED_WITHIN = timedelta(seconds=10)


class Authenticator:
    """A phone's authenticator app: codes from the secret the page showed, each time step used once (the server
    refuses a step it accepted before, and accepts one step either side of now). The earliest step it gives is the
    previous one while that stays in the server's window until the code is checked, so three codes need no wait
    for the clock (the phone's clock a little behind, or a code read just before it changed)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.used = -1

    def code(self) -> str:
        wait_for(lambda: self.used + 1 <= totp.time_step(datetime.now(UTC)) + 1, 40, 0.2, "a fresh time step")
        earliest = totp.time_step(datetime.now(UTC) + CODE_CHECKED_WITHIN) - 1
        step = max(self.used + 1, earliest)
        self.used = step
        return totp.code_at_step(self.secret, step)

    def wrong_code(self) -> str:
        """A code that no step the server accepts now gives."""
        now = totp.time_step(datetime.now(UTC))
        valid = {totp.code_at_step(self.secret, step) for step in range(now - 2, now + 3)}
        return next(c for c in ("000000", "111111", "222222", "333333", "444444", "555555") if c not in valid)


def next_mail(smtp: SmtpServer, to: str, seen: int) -> str:
    """The code in the next email-code message to ``to`` after the first ``seen``."""

    def codes() -> list[str]:
        return [code_of(r.message) for r in smtp.to(to) if "verification code" in str(r.message["Subject"])]

    wait_for(lambda: len(codes()) > seen, 30, 0.1, "an email code")
    return codes()[seen]


def cooldown_over(smtp: SmtpServer, to: str, seconds: float) -> None:
    """Wait until ``seconds`` have passed since the last email code to ``to`` arrived (the resend cooldown)."""
    last = [r.at for r in smtp.to(to) if "verification code" in str(r.message["Subject"])][-1]
    wait_for(lambda: time.monotonic() - last > seconds + 0.5, seconds + 5, 0.1, "the resend cooldown")


def mail_count(smtp: SmtpServer, to: str) -> int:
    return len([r for r in smtp.to(to) if "verification code" in str(r.message["Subject"])])


def downloaded(directory: Path, suffix: str = ".txt", timeout: float = 15) -> Path:
    def done() -> bool:
        files = [p for p in directory.iterdir() if p.suffix == suffix]
        return bool(files) and not any(p.suffix == ".crdownload" for p in directory.iterdir())

    wait_for(done, timeout, 0.1, "the download")
    return next(p for p in directory.iterdir() if p.suffix == suffix)


def make_member(factory: sessionmaker[Session], email: str, role: str, org: str = "acme") -> None:
    with transaction(factory) as s:
        o = accounts.get_org(s, org) or accounts.create_org(s, org, clock=SYSTEM_CLOCK)
        user = accounts.create_user(s, email, PASSWORD, clock=SYSTEM_CLOCK)
        accounts.add_member(s, o, user, role, clock=SYSTEM_CLOCK)


def screenshot_for_docs(browser: WebDriver, name: str) -> None:
    """The README's screenshots, taken when asked (TWOFA_DOCS_SCREENSHOTS=1): the whole page, at a laptop's width."""
    if os.environ.get("TWOFA_DOCS_SCREENSHOTS") != "1":
        return
    width, height = browser.execute_script(
        "return [document.documentElement.clientWidth, document.documentElement.scrollHeight]"
    )
    shot = browser.execute_cdp_cmd(  # type: ignore[attr-defined]
        "Page.captureScreenshot",
        {"captureBeyondViewport": True, "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}},
    )
    (ROOT / "docs" / name).write_bytes(base64.b64decode(shot["data"]))


def enrol(factory: sessionmaker[Session], email: str) -> Authenticator:
    """Turn on an authenticator app for ``email`` through the core, as the security page does."""
    with transaction(factory) as s:
        user = accounts.get_user(s, email)
        assert user is not None
        secret = enrolment.start_totp(s, user, PASSWORD, clock=SYSTEM_CLOCK).secret
        app = Authenticator(secret)
        enrolment.confirm_totp(s, user, app.code(), clock=SYSTEM_CLOCK)
    return app

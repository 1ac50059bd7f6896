"""Browser fixtures: ``twofa serve`` as its own process on the integration database, a real worker delivering mail
to the test SMTP server, and headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by Selenium.
A failing test leaves a screenshot of the page it was on."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

from tests.harness.services import ROOT, SmtpServer, Worker, free_port, wait_for

CHROMIUM = os.environ.get("TWOFA_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("TWOFA_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
COOLDOWN = 5  # seconds between email codes (60 in production): the test waits it out once
SCREENSHOTS = Path(os.environ.get("TWOFA_TEST_SCREENSHOTS", ROOT / "var" / "test-screenshots"))


@dataclass
class Site:
    url: str
    smtp: SmtpServer
    reports_dir: Path
    log: Path


@pytest.fixture
def site(worker_env: dict[str, str], worker: Worker, smtp: SmtpServer, tmp_path: Path) -> Iterator[Site]:
    """``twofa serve`` (the API and the pages) on a free port, as an operator runs it."""
    port = free_port()
    reports_dir = tmp_path / "reports"
    log_path = tmp_path / "serve.log"
    env = worker_env | {"TWOFA_REPORTS_DIR": str(reports_dir), "TWOFA_EMAIL_OTP_RESEND_COOLDOWN": str(COOLDOWN)}
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()

    def up() -> bool:
        assert proc.poll() is None, log_path.read_text()
        try:
            with contextlib.closing(http.client.HTTPConnection("127.0.0.1", port, timeout=1)) as connection:
                connection.request("GET", "/healthz")
                return connection.getresponse().status == 200
        except OSError:
            return False

    try:
        wait_for(up, 60, interval=0.1, what="twofa serve")
        yield Site(f"http://127.0.0.1:{port}", smtp, reports_dir, log_path)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert "Traceback" not in log_path.read_text(), log_path.read_text()


@pytest.fixture
def downloads(tmp_path: Path) -> Path:
    path = tmp_path / "downloads"
    path.mkdir()
    return path


def chromium(downloads: Path, width: int = 1100, height: int = 900) -> WebDriver:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(argument)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


@pytest.fixture
def browser(downloads: Path) -> Iterator[WebDriver]:
    driver = chromium(downloads)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    funcargs = getattr(item, "funcargs", {})
    driver = funcargs.get("browser") or funcargs.get("phone")
    if report.failed and call.when == "call" and driver is not None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{item.name}.png"
        driver.save_screenshot(str(path))
        report.sections.append(("screenshot", f"{path} (page: {driver.current_url})"))
    return report

"""Browser fixtures: ``twofa serve`` as its own process on the integration database, a real worker delivering mail
to the test SMTP server, and headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by Selenium.
A failing test leaves a screenshot of the page it was on."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

from tests.harness.services import ROOT, ApiServer, RedisServer, SmtpServer, Worker, service_env

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


@pytest.fixture(scope="session")
def site(it_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """``twofa serve`` (the API and the pages) on a free port, as an operator runs it, with a worker of its own that
    delivers mail to an SMTP server of its own, through a Redis of its own (others flush theirs). One for every
    browser test (each empties the tables first), with the request limits raised, since every test signs in from
    the same address."""
    workdir = tmp_path_factory.mktemp("site")
    redis_server = RedisServer(workdir)
    smtp = SmtpServer()
    env = service_env(
        it_db,
        redis_server.url,
        smtp.port,
        TWOFA_OUTBOX_SWEEP_GRACE="1",
        TWOFA_REPORTS_DIR=str(workdir / "reports"),
        TWOFA_EMAIL_OTP_RESEND_COOLDOWN=str(COOLDOWN),
        TWOFA_RATELIMIT_PER_IP="100000",
        TWOFA_RATELIMIT_AUTH_PER_IP="100000",
        TWOFA_RATELIMIT_AUTH_PER_ACCOUNT="100000",
        TWOFA_FORWARDED_ALLOW_IPS="127.0.0.1",  # the tests stand for the HTTPS proxy in front
    )
    worker = Worker(env=env, log_path=workdir / "worker.log").start()
    server = ApiServer(env, workdir / "serve.log", quiet=True).start()
    log_path = server.log_path
    try:
        yield Site(server.url, smtp, workdir / "reports", log_path)
    finally:
        server.stop()
        worker.kill()  # the tests are over: no warm stop (see the integration conftest's worker)
        smtp.stop()
        redis_server.stop()
    assert "Traceback" not in log_path.read_text(), log_path.read_text()


@pytest.fixture(autouse=True)
def _no_server_errors(site: Site) -> Iterator[None]:
    """Each test fails on an error the server logged while it ran, not only the run at its end."""
    start = site.log.stat().st_size
    yield
    logged = site.log.read_bytes()[start:].decode(errors="replace")
    assert "Traceback" not in logged, logged


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

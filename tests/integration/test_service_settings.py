"""However a service is started (``celery -A workers worker``, ``celery -A workers beat``, a bare uvicorn on the app
factory), it refuses a development or weak secret key, and a mail backend nobody chose, with one line; a worker told
``TWOFA_MAIL_BACKEND=file`` writes mail that only its owner can read."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from policies.gate import enrolment_required
from tests.harness.services import ROOT, Worker, wait_for
from tests.helpers import make_user
from twofa.clock import FrozenClock
from twofa.settings import DEV_SECRET_KEY, get_settings

pytestmark = pytest.mark.integration

GOOD_KEY = os.environ["TWOFA_SECRET_KEY"]  # the tests' own, which passes the rule
FIFTEEN_DISTINCT = "abcdefghijklmno" * 3  # 45 characters, 15 of them distinct
KEY_REFUSED = "error: set TWOFA_SECRET_KEY to a random secret of 32+ characters"
MAIL_REFUSED = "error: set TWOFA_MAIL_BACKEND: smtp to send through TWOFA_SMTP_HOST"

CASES = {
    "development-key": ({"TWOFA_SECRET_KEY": DEV_SECRET_KEY, "TWOFA_MAIL_BACKEND": "smtp"}, KEY_REFUSED),
    "15-distinct": ({"TWOFA_SECRET_KEY": FIFTEEN_DISTINCT, "TWOFA_MAIL_BACKEND": "smtp"}, KEY_REFUSED),
    "no-mail-backend": ({"TWOFA_SECRET_KEY": GOOD_KEY}, MAIL_REFUSED),
}


def run(command: list[str], settings: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWOFA_")}
    # An in-memory broker: a service that failed to refuse would start (and the test time out), not fail to connect.
    env.update(settings, TWOFA_BROKER_URL="memory://localhost/", PYTHONPATH=str(ROOT))
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("service", ["worker", "beat"])
@pytest.mark.parametrize("case", CASES)
def test_a_bare_celery_service_refuses_with_one_line(service: str, case: str, tmp_path: Path) -> None:
    settings, refusal = CASES[case]
    command = [sys.executable, "-m", "celery", "-A", "workers", service]
    done = run([*command, "--pool", "solo"] if service == "worker" else command, settings, tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(refusal), done.stderr


@pytest.mark.parametrize("key", [DEV_SECRET_KEY, FIFTEEN_DISTINCT])
def test_a_bare_uvicorn_refuses_with_one_line(key: str, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "uvicorn", "--factory", "cli.serve:make_app", "--port", "0"]
    done = run(command, {"TWOFA_SECRET_KEY": key}, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith(KEY_REFUSED)


@pytest.mark.parametrize("key", [DEV_SECRET_KEY, FIFTEEN_DISTINCT])
def test_create_app_refuses_a_weak_key(key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWOFA_SECRET_KEY", key)
    get_settings.cache_clear()
    with pytest.raises(SystemExit) as refused:
        create_app(gate=enrolment_required)
    assert str(refused.value.code).startswith(KEY_REFUSED) and "\n" not in str(refused.value.code)


def test_a_worker_told_to_write_mail_files_writes_them_for_its_owner_only(
    worker_env: dict[str, str], tmp_path: Path, it_factory: sessionmaker[Session], client_app: Celery
) -> None:
    outbox = tmp_path / "var" / "outbox"
    env = worker_env | {"TWOFA_MAIL_BACKEND": "file", "TWOFA_MAIL_DIR": str(outbox)}
    make_user(it_factory, "admin@acme.io", role="admin", clock=FrozenClock(datetime.now(UTC)))
    worker = Worker(env=env, log_path=tmp_path / "worker.log", app="workers").start()
    try:
        client_app.send_task("twofa.enforce_policies", queue="scheduled")  # a policy reminder to the admin
        wait_for(lambda: any(outbox.glob("*.eml")), 30, what="the reminder's file")
    finally:
        worker.stop()
    (mail,) = outbox.glob("*.eml")
    assert "admin@acme.io" in mail.read_text()
    assert stat.S_IMODE(mail.stat().st_mode) == 0o600
    assert stat.S_IMODE(outbox.stat().st_mode) == 0o700

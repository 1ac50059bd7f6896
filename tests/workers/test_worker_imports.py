"""An OTP worker loads nothing slow: the report stack (pandas, matplotlib) is imported only by report tasks, and
``twofa worker`` (which loads every command of the CLI) no more than ``celery -A workers.app worker``."""

from __future__ import annotations

import subprocess
import sys


def test_worker_app_does_not_load_the_report_stack() -> None:
    code = (
        "import sys, workers.app\n"
        "workers.app.app.loader.import_default_modules()\n"
        "print(sorted(m for m in ('pandas', 'matplotlib') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def test_twofa_worker_loads_neither_the_report_nor_the_web_stack() -> None:
    code = (
        "import sys, cli.main, workers.app\n"
        "workers.app.app.loader.import_default_modules()\n"
        "heavy = ('pandas', 'matplotlib', 'fastapi', 'uvicorn', 'alembic')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"

"""``twofa beat`` as its own process: it starts with the project's schedule on the real broker, keeps its state in
the file it is given, and stops cleanly on SIGTERM. (The jobs' first runs come a minute later; the schedule itself
is checked in tests/workers/test_schedule_routes.py.)"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.services import ROOT, wait_for

pytestmark = pytest.mark.integration


def test_beat_starts_with_the_schedule_and_stops_on_sigterm(worker_env: dict[str, str], tmp_path: Path) -> None:
    log_path = tmp_path / "beat.log"
    state = tmp_path / "state" / "beat-schedule"
    state.parent.mkdir()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "beat", "--loglevel", "DEBUG", "--schedule", str(state)],
            cwd=tmp_path,  # nothing may land in the working directory but what it is told to write
            env=worker_env | {"PYTHONPATH": str(ROOT)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: b"beat: Waking up in" in log_path.read_bytes() or proc.poll() is not None, 30, what="beat")
        assert proc.poll() is None, log_path.read_text()  # ticking with the schedule loaded
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    text = log_path.read_text()
    assert proc.returncode == 0, text
    assert "Traceback" not in text and "ERROR" not in text
    for job in ("expire-codes", "sweep-outbox", "enforce-policies", "weekly-reports"):
        assert f"<ScheduleEntry: {job} " in text, text  # beat lists the entries it loaded, at DEBUG
    assert list(state.parent.iterdir()) and sorted(p.name for p in tmp_path.iterdir()) == ["beat.log", "state"]

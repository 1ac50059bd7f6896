"""Invariant 4 on a shared host: a worker that builds reports runs below the priority of the workers that deliver
email codes, so a long report takes only the CPU that code delivery leaves."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.harness.services import Worker, wait_for
from workers.app import lower_priority_for_reports

pytestmark = pytest.mark.integration


def niceness_of_pool(worker: Worker) -> set[int]:
    wait_for(lambda: bool(worker.children()), 30, what="the worker's pool processes")
    return {os.getpriority(os.PRIO_PROCESS, pid) for pid in worker.children()}


def test_report_workers_yield_the_cpu_and_code_workers_do_not(worker_env: dict[str, str], tmp_path: Path) -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    reports = Worker(env=worker_env, log_path=tmp_path / "reports.log", queues="reports", concurrency=2).start()
    codes = Worker(env=worker_env, log_path=tmp_path / "codes.log", queues="otp,mail,scheduled").start()
    try:
        assert niceness_of_pool(reports) == {19}  # TWOFA_REPORTS_NICE, by default the lowest priority
        assert niceness_of_pool(codes) == {base}
    finally:
        reports.stop()
        codes.stop()


@pytest.mark.parametrize(
    ("queues", "nice", "lowered"),
    [
        ({"reports"}, 10, True),
        ({"reports", "mail"}, 10, True),
        ({"reports", "otp"}, 10, False),  # email codes wait for nothing: such a worker keeps its priority
        ({"otp", "mail", "scheduled"}, 10, False),
        ({"reports"}, 0, False),
    ],
)
def test_which_workers_lower_their_priority(queues: set[str], nice: int, lowered: bool) -> None:
    # In a child process: a lowered priority cannot be raised again without privileges.
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            done = lower_priority_for_reports(queues, nice)
            os.write(write, f"{int(done)} {os.getpriority(os.PRIO_PROCESS, 0)}".encode())
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 64).decode().split()
    os.waitpid(pid, 0)
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert (bool(int(answer[0])), int(answer[1])) == (lowered, max(base, nice) if lowered else base)

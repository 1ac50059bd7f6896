"""Invariant 4 on a shared host: a worker that builds reports runs below the priority of the workers that deliver
email codes, so a long report takes only the CPU that code delivery leaves."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from tests.harness.services import Worker, wait_for
from workers.app import lower_priority_for_reports

pytestmark = pytest.mark.integration


def niceness_of_pool(worker: Worker) -> set[int]:
    wait_for(lambda: bool(worker.children()), 30, what="the worker's pool processes")
    return {os.getpriority(os.PRIO_PROCESS, pid) for pid in worker.children()}


def autogroup_nice(pid: int | str = "self") -> int | None:
    """The nice value of the process's autogroup; None where it has none: a kernel without autogroups, or a process
    in the root group (the kernel then shows an empty file)."""
    try:
        line = Path(f"/proc/{pid}/autogroup").read_text().split()
    except OSError:
        return None
    return int(line[-1]) if line else None


@functools.cache
def own_session_has_autogroup() -> bool:
    """Whether a process that starts a session of its own gets an autogroup here (Linux with autogrouping on)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            os.setsid()
            os.write(write, b"1" if autogroup_nice() is not None else b"0")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    return answer == b"1"


# /proc numbers processes as this process does (not so in a PID namespace that kept the host's /proc)
PROC_BY_OUR_PIDS = os.readlink("/proc/self") == str(os.getpid())


def test_report_workers_yield_the_cpu_and_code_workers_do_not(worker_env: dict[str, str], tmp_path: Path) -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    reports = Worker(env=worker_env, log_path=tmp_path / "reports.log", queues="reports", concurrency=2).start()
    codes = Worker(env=worker_env, log_path=tmp_path / "codes.log", queues="otp,mail,scheduled").start()
    try:
        assert niceness_of_pool(reports) == {19}  # TWOFA_REPORTS_NICE, by default the lowest priority
        assert niceness_of_pool(codes) == {base}
        if (
            own_session_has_autogroup() and PROC_BY_OUR_PIDS
        ):  # each worker leads a session of its own (as under systemd): its
            assert reports.proc is not None and codes.proc is not None  # autogroup counts too
            assert autogroup_nice(reports.proc.pid) == 19
            assert autogroup_nice(codes.proc.pid) == 0
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
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert in_child(queues, nice, own_session=False)[:2] == (lowered, max(base, nice) if lowered else base)
    if own_session_has_autogroup():
        assert in_child(queues, nice, own_session=True)[2] == (nice if lowered else 0)


def test_a_worker_in_a_shared_session_leaves_the_autogroup_alone() -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    # pytest's session (or the terminal's) is not the worker's to lower
    assert in_child({"reports"}, 15, own_session=False) == (True, max(base, 15), autogroup_nice())


def in_child(queues: set[str], nice: int, *, own_session: bool) -> tuple[bool, int, int | None]:
    """(lowered, process nice, autogroup nice: None without one) as a forked child sees them after the call; with
    ``own_session`` the child first leads a session (and so an autogroup) of its own, as a worker under systemd."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            if own_session:
                os.setsid()
            done = lower_priority_for_reports(queues, nice)
            os.write(write, f"{int(done)} {os.getpriority(os.PRIO_PROCESS, 0)} {autogroup_nice()}".encode())
        except BaseException as error:
            os.write(write, f"failed: {error!r}".encode())
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 256).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert not answer.startswith("failed"), answer
    lowered, priority, group = answer.split()
    return lowered == "1", int(priority), None if group == "None" else int(group)

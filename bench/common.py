"""What the benchmarks share: their settings, percentiles, an SMTP server in a process of its own, and CPU seconds
per party, read from /proc (Linux only; the host is shared, so wall time alone can mislead).

Not named ``bench_*.py``: ``make bench`` runs every ``bench/bench_*.py`` as a benchmark.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for the annotation: importing this module starts nothing and reads no settings
    from tests.harness.services import Worker

CLK_TCK = os.sysconf("SC_CLK_TCK")
# Like tests/conftest.py: cheap argon2, a fixed key. Set before twofa reads its settings; the harness's
# service_env() gives the servers and workers the same.
SETTINGS = {
    "TWOFA_SECRET_KEY": os.environ.get("TWOFA_SECRET_KEY", "bench-key-0123456789-abcdefghijklmnopqrstuvwxyz"),
    "TWOFA_ARGON2_TIME_COST": "1",
    "TWOFA_ARGON2_MEMORY_COST": "256",
    "TWOFA_ARGON2_PARALLELISM": "1",
}
NO_RATE_LIMITS = {f"TWOFA_RATELIMIT_{which}": "10000000" for which in ("PER_IP", "AUTH_PER_IP", "AUTH_PER_ACCOUNT")}


def say(text: str = "") -> None:
    print(text, flush=True)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile; NaN of nothing."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _smtp_process(conn: Connection) -> None:
    """The spawned SMTP server's process: answers "count", ("since", n) and, to stop, None."""
    from tests.harness.services import SmtpServer
    from twofa.heap import freeze_startup_objects

    smtp = SmtpServer()
    freeze_startup_objects()  # it stands in for a mail relay, which has no Python start-up for a collector to walk
    conn.send(smtp.port)
    try:
        while (command := conn.recv()) is not None:
            if command == "count":
                conn.send(len(smtp.handler.received))
            else:
                conn.send([(r.recipients, r.at) for r in smtp.received[command[1] :]])
    finally:
        smtp.stop()


class SmtpProcess:
    """The harness's SMTP server (aiosmtpd) in a process of its own, as a mail relay is: in the benchmark's process
    its replies would wait for the benchmark's own work."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_smtp_process, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        self.port: int = self.conn.recv()

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid

    def count(self) -> int:
        """Emails accepted so far."""
        self.conn.send("count")
        return int(self.conn.recv())

    def since(self, base: int) -> list[tuple[list[str], float]]:
        """(envelope recipients, acceptance time: ``time.monotonic()``) of the emails accepted after the first
        ``base``."""
        self.conn.send(("since", base))
        received: list[tuple[list[str], float]] = self.conn.recv()
        return received

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.proc.join(15)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


def proc_cpu(pid: int) -> tuple[str, float]:
    """(command name, user+system CPU seconds) of a process, from /proc; ("", 0.0) once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "", 0.0
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    return name, (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15 of stat)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children, ...), from /proc."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                found += [int(child), *descendants(int(child))]
    except OSError:
        pass
    return found


def _cmdline(pid: int) -> str:
    """A process's command line, arguments joined by spaces (a PostgreSQL backend's is its process title)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def host_cpu() -> tuple[float, float]:
    """(busy, stolen) CPU seconds of the whole host since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK


@dataclass
class CpuMeter:
    """CPU seconds used during one measurement (``with meter: ...``; then ``meter.used``), by group: this process
    (``me``: the bench, and whatever it hosts, such as the SMTP server), each running worker (its main process and
    every process below it, named by its log file's stem), the PostgreSQL backends connected to ``database`` (the
    server is shared with other runs: their backends and PostgreSQL's background processes are not counted), and
    redis-server. With ``host_wide``, also ``other`` (what the rest of the host used: other jobs, PostgreSQL's
    background processes) and ``steal`` (what the hypervisor took).

    With ``split_pools``, a worker's pool children (every process below its main process) are a group of their own,
    ``<name> pool``: the main process receives, hands out and acknowledges the messages; the children run the tasks.

    A process that exits during the measurement drops out with its CPU time (pool children are long-lived, and the
    backends belong to pooled connections, so this is rare); one that starts during it counts in full."""

    workers: Sequence[Worker]
    redis_pid: int
    database: str
    me: str = "bench"
    host_wide: bool = False
    split_pools: bool = False
    processes: dict[str, int] = field(default_factory=dict)  # more groups: a name, a process (and those below it)
    start: dict[str, dict[int, float]] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)

    def _sample(self) -> dict[str, dict[int, float]]:
        pid = os.getpid()
        groups: dict[str, dict[int, float]] = {self.me: {pid: proc_cpu(pid)[1]}, "postgres": {}}
        groups["redis"] = {self.redis_pid: proc_cpu(self.redis_pid)[1]}
        for w in self.workers:
            if w.proc is not None and w.proc.poll() is None:
                group = groups.setdefault(w.log_path.stem, {})
                pool = groups.setdefault(f"{w.log_path.stem} pool", {}) if self.split_pools else group
                group[w.proc.pid] = proc_cpu(w.proc.pid)[1]
                for p in descendants(w.proc.pid):
                    pool[p] = proc_cpu(p)[1]
        for name, root in self.processes.items():
            groups[name] = {p: proc_cpu(p)[1] for p in [root, *descendants(root)]}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                name, cpu = proc_cpu(int(entry.name))
                if name == "postgres" and f" {self.database} " in _cmdline(int(entry.name)):
                    groups["postgres"][int(entry.name)] = cpu
        if self.host_wide:
            busy, steal = host_cpu()
            groups["host"], groups["steal"] = {0: busy}, {0: steal}
        return groups

    def __enter__(self) -> CpuMeter:
        self.start = self._sample()
        return self

    def __exit__(self, *_: object) -> None:
        end = self._sample()
        used = {
            group: sum(cpu - self.start.get(group, {}).get(pid, 0.0) for pid, cpu in pids.items())
            for group, pids in end.items()
        }
        if self.host_wide:
            host, steal = used.pop("host"), used.pop("steal")
            used["other"] = max(0.0, host - sum(used.values()))
            used["steal"] = steal
        self.used = {group: round(cpu, 2) for group, cpu in used.items()}

    def line(self, seconds: float, extra: dict[str, float] | None = None) -> str:
        """One indented line: every group's CPU seconds (and ``extra``'s) beside the host's capacity over
        ``seconds`` of wall time."""
        parts = ", ".join(f"{k} {v:.2f}" for k, v in {**self.used, **(extra or {})}.items())
        cores = os.cpu_count() or 1
        return f"    CPU seconds over {seconds:.2f} s of wall time ({cores} cores = {cores * seconds:.2f}): {parts}"

"""What the benchmarks share: CPU seconds per party, read from /proc (Linux only).

The host is shared, so wall time alone can mislead: ``CpuMeter`` says who used the CPU during one measurement.
Not named ``bench_*.py``: ``make bench`` runs every ``bench/bench_*.py`` as a benchmark.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for the annotation: importing this module starts nothing and reads no settings
    from tests.harness.services import Worker

CLK_TCK = os.sysconf("SC_CLK_TCK")


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

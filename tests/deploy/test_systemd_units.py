"""The systemd units an operator installs from ``deploy/systemd/``: systemd accepts them, each starts a real
``twofa`` command, and they keep invariant 4 and the warm shutdown that delivery relies on."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import celeryconfig
from cli.main import app
from cli.worker import QUEUES
from twofa.settings import Settings

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
INSTALLED_TWOFA = "/opt/twofa/venv/bin/twofa"  # where the units expect the virtualenv
STATE = "/var/lib/twofa"  # StateDirectory=twofa: the one place ProtectSystem=strict leaves writable
SERVICES = sorted(UNITS.glob("*.service"))


def service(path: Path) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd's keys are case-sensitive
    parser.read(path)
    return parser["Service"]


def argv(path: Path) -> list[str]:
    return shlex.split(service(path)["ExecStart"])


def worker_queues(path: Path) -> set[str]:
    args = argv(path)
    return set(args[args.index("--queues") + 1].split(",")) if args[1] == "worker" else set()


def test_systemd_accepts_every_unit(tmp_path: Path) -> None:
    verify = shutil.which("systemd-analyze")
    assert verify, "systemd-analyze is not installed (apt-get install systemd)"
    # The units as installed, but pointing at this checkout's twofa: systemd checks that the command exists.
    for unit in [*SERVICES, UNITS / "twofa.target"]:
        text = unit.read_text().replace(INSTALLED_TWOFA, str(Path(sys.executable).parent / "twofa"))
        (tmp_path / unit.name).write_text(text)
    done = subprocess.run(
        [verify, "verify", *sorted(str(p) for p in tmp_path.iterdir())], capture_output=True, text=True, check=False
    )
    # Unknown keys and bad values are only warnings to systemd: any output is a defect.
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@pytest.mark.parametrize("unit", SERVICES, ids=lambda p: p.stem)
def test_each_unit_starts_a_real_twofa_command(unit: Path) -> None:
    command = argv(unit)
    assert command[0] == INSTALLED_TWOFA
    answer = CliRunner().invoke(app, [*command[1:], "--help"])  # unknown options fail before --help is read
    assert answer.exit_code == 0, answer.output


def test_every_queue_has_a_worker_and_email_codes_have_one_of_their_own() -> None:
    served = {unit.stem: worker_queues(unit) for unit in SERVICES if worker_queues(unit)}
    assert set().union(*served.values()) == set(QUEUES)
    assert served["twofa-worker-otp"] == {"otp"}
    assert all("otp" not in queues for name, queues in served.items() if name != "twofa-worker-otp")


def test_the_report_worker_takes_only_the_cpu_the_others_leave() -> None:
    def nice(unit: Path) -> int:
        return int(service(unit).get("Nice", "0"))

    def weight(unit: Path) -> int:
        return int(service(unit).get("CPUWeight", "100"))  # systemd's default

    reports = UNITS / "twofa-worker-reports.service"
    others = [unit for unit in SERVICES if unit != reports]
    assert nice(reports) > max(map(nice, others))
    assert weight(reports) < min(map(weight, others))


def test_workers_stop_warm_and_outlast_the_longest_task() -> None:
    for unit in SERVICES:
        if worker_queues(unit):
            assert service(unit)["KillMode"] == "mixed"  # SIGTERM to the main process only
            assert int(service(unit)["TimeoutStopSec"]) > celeryconfig.task_time_limit


def test_one_beat_and_the_target_starts_everything() -> None:
    assert [unit.stem for unit in SERVICES if argv(unit)[1] == "beat"] == ["twofa-beat"]
    target = configparser.ConfigParser(interpolation=None)
    target.read(UNITS / "twofa.target")
    assert set(target["Unit"]["Wants"].split()) == {unit.name for unit in SERVICES}


@pytest.mark.parametrize("unit", SERVICES, ids=lambda p: p.stem)
def test_units_are_confined_and_write_only_their_state_directory(unit: Path) -> None:
    s = service(unit)
    assert (s["User"], s["NoNewPrivileges"], s["ProtectSystem"], s["PrivateTmp"]) == ("twofa", "yes", "strict", "yes")
    assert (s["StateDirectory"], s["WorkingDirectory"]) == ("twofa", STATE)
    assert s["EnvironmentFile"] == "/etc/twofa/twofa.env"
    command = argv(unit)
    if "--schedule" in command:  # beat's schedule file must be where the service may write
        assert command[command.index("--schedule") + 1].startswith(STATE + "/")


def test_the_example_environment_sets_only_real_settings() -> None:
    lines = (UNITS / "twofa.env.example").read_text().splitlines()
    names = [line.split("=", 1)[0] for line in lines if line and not line.startswith("#")]
    fields = {f"TWOFA_{name.upper()}" for name in Settings.model_fields}
    assert names and set(names) <= fields, set(names) - fields

"""How a report worker reads and lowers its session's autogroup (``/proc/self/autogroup``), whatever the kernel shows
there: a process in the root group reads an empty file, a kernel without autogroups has none."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workers import app


@pytest.fixture
def own_session(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "getsid", lambda _pid: os.getpid())


@pytest.mark.parametrize(
    ("shown", "written"),
    [
        ("/autogroup-85 nice 0\n", "12"),
        ("/autogroup-85 nice 15\n", "/autogroup-85 nice 15\n"),  # already lower: left as it is
        ("", ""),  # the root group: the kernel shows nothing and there is nothing of the worker's own to lower
    ],
)
def test_the_autogroup_is_lowered_only_where_there_is_one_to_lower(
    own_session: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, shown: str, written: str
) -> None:
    group = tmp_path / "autogroup"
    group.write_text(shown)
    monkeypatch.setattr(app, "AUTOGROUP", group)
    app._lower_autogroup(12)
    assert group.read_text() == written


def test_no_autogroups_at_all_is_no_error(own_session: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(app, "AUTOGROUP", tmp_path / "missing")
    app._lower_autogroup(12)
    assert not (tmp_path / "missing").exists()


def test_a_shared_session_is_left_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "getsid", lambda _pid: 1)
    group = tmp_path / "autogroup"
    group.write_text("/autogroup-85 nice 0\n")
    monkeypatch.setattr(app, "AUTOGROUP", group)
    app._lower_autogroup(12)
    assert group.read_text() == "/autogroup-85 nice 0\n"

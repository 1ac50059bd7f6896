"""The ``file`` mail backend: messages carry email codes, so only their owner may read them."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from email.mime.text import MIMEText
from pathlib import Path

import pytest

from twofa.mail.backends import FileBackend


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most permissive umask: the modes below are the backend's, not the umask's luck."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def code_message(n: int) -> MIMEText:
    message = MIMEText(f"Your verification code is {n:06d}")
    message["Message-ID"] = f"<code-{n}@wevion.test>"
    return message


@pytest.mark.usefixtures("open_umask")
def test_mail_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    directory = tmp_path / "var" / "outbox"
    backend = FileBackend(directory)
    backend.send(code_message(1))
    backend.send(code_message(1))  # a retry overwrites its file, under the same rules
    backend.send(code_message(2))
    files = sorted(directory.iterdir())
    assert [f.name for f in files] == ["code-1@wevion.test.eml", "code-2@wevion.test.eml"]  # no temporary left
    assert {mode(f) for f in files} == {0o600}
    assert mode(directory) == 0o700
    assert "000001" in files[0].read_text()


@pytest.mark.usefixtures("open_umask")
def test_an_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    """The operator's choice (a group that reads the demo's mail, say) stands; only new files are restricted."""
    tmp_path.chmod(0o750)
    FileBackend(tmp_path).send(code_message(3))
    assert mode(tmp_path) == 0o750
    assert mode(tmp_path / "code-3@wevion.test.eml") == 0o600

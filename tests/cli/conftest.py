"""The ``twofa`` command run as a user runs it, against the test database."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from twofa.settings import get_settings


@pytest.fixture
def cli(factory: sessionmaker[Session], db_url: str, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("TWOFA_DATABASE_URL", db_url)
    monkeypatch.delenv("TWOFA_BROKER_URL", raising=False)  # no broker configured unless a test sets one
    get_settings.cache_clear()
    return CliRunner()

"""The Alembic migrations build exactly the schema the models describe, and can be undone."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import policies.models  # noqa: F401
import reports.models  # noqa: F401
import twofa.models  # noqa: F401
from twofa.db import Base, get_engine
from twofa.migrate import alembic_config


def test_migrated_schema_matches_the_models(db_url: str) -> None:
    with get_engine(db_url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_downgrade_and_upgrade_again(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    config = alembic_config(url)
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    assert sa.inspect(get_engine(url)).get_table_names() == ["alembic_version"]
    command.upgrade(config, "head")
    assert "login_history" in sa.inspect(get_engine(url)).get_table_names()

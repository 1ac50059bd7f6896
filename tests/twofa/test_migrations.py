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


def test_audit_rows_written_before_the_chain_join_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy.orm import Session

    from twofa.audit_chain import verify

    url = f"sqlite:///{tmp_path / 'c.sqlite3'}"
    config = alembic_config(url)
    command.upgrade(config, "0004")
    with get_engine(url).begin() as conn:
        conn.execute(sa.text("INSERT INTO organizations (slug, name, created_at) VALUES ('a', 'A', '2026-11-30')"))
        for event, org in (("2fa_enabled", None), ("policy_changed", 1), ("2fa_disabled", None)):
            conn.execute(
                sa.text(
                    "INSERT INTO audit_log (at, event, org_id, details) VALUES ('2026-11-30 10:00:00', :e, :o, '{}')"
                ),
                {"e": event, "o": org},
            )
    command.upgrade(config, "head")
    with Session(get_engine(url)) as s:
        result = verify(s)
        chains = s.execute(sa.text("SELECT chain, chain_seq FROM audit_log ORDER BY id")).all()
    assert (result.breaks, result.rows, result.chains) == ([], 3, 2)
    assert [tuple(c) for c in chains] == [("none", 1), ("org:1", 1), ("none", 2)]

"""``twofa user list``, ``twofa user add`` and ``twofa org list``, as an operator reads them."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from cli.main import app
from tests.cli.common import count
from tests.helpers import enrol_totp, make_user
from twofa import accounts
from twofa.clock import FrozenClock
from twofa.db import transaction
from twofa.models import AuditEvent, Membership, Organization, User


@pytest.fixture
def people(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    ann = make_user(factory, "ann@acme.io", role="owner", clock=clock)
    enrol_totp(factory, ann, clock)
    make_user(factory, "bob@acme.io", role="finance", clock=clock)
    make_user(factory, "cy@sso.io", org="ssoco", sso="okta", role="admin", clock=clock)
    with transaction(factory) as s:
        accounts.create_org(s, "empty", clock=clock)
        bob = accounts.get_user(s, "bob@acme.io")
        assert bob is not None
        accounts.add_member(s, accounts.require_org(s, "ssoco"), bob, "member", clock=clock)


@pytest.mark.usefixtures("people")
def test_user_list_shows_email_organisations_roles_and_second_factor(cli: CliRunner) -> None:
    result = cli.invoke(app, ["user", "list"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "email        organisations                   2FA",
        "ann@acme.io  acme (owner)                    authenticator app",
        "bob@acme.io  acme (finance), ssoco (member)  managed by SSO (okta)",
        "cy@sso.io    ssoco (admin)                   managed by SSO (okta)",
        "3 user(s)",
    ]
    result = cli.invoke(app, ["user", "list", "--org", "acme"])
    assert result.output.splitlines()[1:] == [
        "ann@acme.io  acme (owner)                    authenticator app",
        "bob@acme.io  acme (finance), ssoco (member)  managed by SSO (okta)",
        "2 user(s) in acme",
    ]
    assert cli.invoke(app, ["user", "list", "--org", "empty"]).output.splitlines() == [
        "email  organisations  2FA",
        "0 user(s) in empty",
    ]
    missing = cli.invoke(app, ["user", "list", "--org", "nope"])
    assert (missing.exit_code, missing.stdout, missing.stderr) == (2, "", "error: no organisation 'nope' [not_found]\n")


@pytest.mark.usefixtures("people")
def test_user_list_says_when_2fa_is_off(cli: CliRunner, factory: sessionmaker[Session], clock: FrozenClock) -> None:
    make_user(factory, "dee@acme.io", role="member", clock=clock)
    assert "dee@acme.io  acme (member)                   none" in cli.invoke(app, ["user", "list"]).output


@pytest.mark.usefixtures("people")
def test_org_list_shows_slug_sso_members_and_policy(cli: CliRunner) -> None:
    cli.invoke(app, ["policy", "set", "--org", "empty", "--not-required"])
    result = cli.invoke(app, ["org", "list"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "organisation  SSO   members  policy",
        "acme          -     2        2FA required for owner, admin, super_admin, finance; 14 days to enrol (default)",
        "empty         -     0        2FA not required",
        "ssoco         okta  2        managed by SSO",
        "3 organisation(s)",
    ]


@pytest.mark.usefixtures("people")
def test_user_add_makes_an_existing_user_a_member(cli: CliRunner, factory: sessionmaker[Session]) -> None:
    result = cli.invoke(app, ["user", "add", "--email", "Ann@acme.io", "--org", "empty", "--role", "admin"])
    assert (result.exit_code, result.output) == (0, "added ann@acme.io as admin of empty\n")
    result = cli.invoke(app, ["user", "add", "--email", "ann@acme.io", "--org", "ssoco", "--role", "member"])
    assert result.output == "added ann@acme.io as member of ssoco; their 2FA is managed by SSO (okta)\n"
    listed = cli.invoke(app, ["user", "list", "--org", "empty"]).output
    assert "ann@acme.io  acme (owner), empty (admin), ssoco (member)  managed by SSO (okta)" in listed


@pytest.mark.usefixtures("people")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--email", "nobody@acme.io", "--org", "acme", "--role", "member"],
            "no user 'nobody@acme.io' (create one with `twofa user create`)",
        ),
        (["--email", "ann@acme.io", "--org", "nope", "--role", "member"], "no organisation 'nope' [not_found]"),
        (
            ["--email", "ann@acme.io", "--org", "acme", "--role", "admin"],
            "ann@acme.io is already a member of acme [conflict]",
        ),
        (
            ["--email", "ann@acme.io", "--org", "empty", "--role", "emperor"],
            "unknown role 'emperor' (one of: owner, admin, super_admin, finance, member) [invalid_input]",
        ),
    ],
)
def test_user_add_refuses_with_one_line(
    cli: CliRunner, factory: sessionmaker[Session], args: list[str], message: str
) -> None:
    before = [count(factory, model) for model in (User, Organization, Membership, AuditEvent)]
    result = cli.invoke(app, ["user", "add", *args])
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"error: {message}\n")
    assert [count(factory, model) for model in (User, Organization, Membership, AuditEvent)] == before

"""Email rendering and the SMTP backend, against a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from email.mime.text import MIMEText
from email.policy import compat32
from pathlib import Path
from typing import Any

import pytest

from tests.harness.services import ScriptedHandler, SmtpServer
from tests.helpers import parsed
from twofa.clock import SYSTEM_CLOCK
from twofa.mail.backends import FileBackend, PermanentMailError, SmtpBackend, TransientMailError
from twofa.mail.render import build_message, text_part
from twofa.settings import Settings, get_settings

SAMPLE: dict[str, dict[str, Any]] = {
    "email_code": {"code": "123456", "expires_in_minutes": 5, "purpose": "login"},
    "twofa_enabled": {"method": "totp"},
    "twofa_disabled": {},
    "backup_code_used": {"remaining": 1},
    "backup_codes_low": {"remaining": 2},
    "backup_codes_regenerated": {},
    "twofa_reset_by_support": {"reason": "lost phone"},
    "api_key_created": {"name": "<script>alert(1)</script>", "prefix": "abc"},
    "second_factor_locked": {"failures": 5},
    "policy_reminder": {
        "org_name": "Acme",
        "role": "admin",
        "deadline": "2026-12-14",
        "days_left": 3,
        "email_allowed": True,
    },
    "policy_escalation": {
        "org_name": "Acme",
        "overdue": [{"email": "a@x.io", "role": "owner", "deadline": "2026-12-01", "days_overdue": 2}],
    },
    "admin_notice": {
        "kind": "member_disabled",
        "org_names": ["Acme"],
        "member": "fin@acme.io",
        "role": "finance",
        "deadline": "2026-12-01 10:00 UTC",
    },
    "weekly_report": {
        "org_name": "Acme",
        "week": "2026-W48",
        "coverage_pct": 80,
        "enrolled": 4,
        "in_scope": 5,
        "period": "Monday 23 November 2026 to Sunday 29 November 2026 (UTC)",
        "logins": 10,
        "verified": 9,
        "verified_pct": 90,
        "privileged_unverified_logins": 1,
        "privileged_unverified_members": 1,
        "non_compliant": 1,
        "report_html": "<!doctype html><html><body><h1>Report</h1></body></html>",
    },
}
BASE = {"email": "user@example.com", "issuer": "Wevion", "at": "2026-11-30 10:00 UTC"}


def templates(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "templates" / "email").iterdir() if p.is_dir())


def test_every_template_has_a_sample_and_renders_multipart(project_root: Path) -> None:
    assert templates(project_root) == sorted(SAMPLE)
    for name, context in SAMPLE.items():
        msg = build_message(template=name, context=BASE | context, to="user@example.com", message_id="<id@wevion.ai>")
        assert msg["From"] == "Wevion <noreply@wevion.ai>" and msg["Message-ID"] == "<id@wevion.ai>"
        assert msg["Subject"] and "\n" not in str(msg["Subject"])
        assert [p.get_content_type() for p in parsed(msg).iter_parts()] == ["text/plain", "text/html"], name


def test_part_boundaries_are_fresh_and_cannot_occur_in_a_body() -> None:
    def build(**extra: Any) -> Any:
        return build_message(
            template="weekly_report",
            context=BASE | SAMPLE["weekly_report"],
            to="u@example.com",
            message_id="<b@y>",
            **extra,
        )

    attachment = ("report.csv", "text/csv", b"--=_ looks like a boundary\r\n" * 50)
    first, second = build(), build(attachments=[attachment])
    boundaries = [first.get_boundary(), second.get_boundary(), second.get_payload(0).get_boundary()]
    assert len(set(boundaries)) == 3 and all(b and b.startswith("=_") for b in boundaries)
    raw = second.as_bytes()
    assert raw.count(f"--{boundaries[1]}".encode()) == 3  # two parts and the closing line: nowhere else
    reread = parsed(second)
    assert [p.get_content_type() for p in reread.walk()][-1] == "text/csv"
    assert reread.get_payload()[-1].get_content() == attachment[2].decode()


def test_messages_are_written_as_compat32_writes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """The header short cut of ``render.POLICY`` changes nothing in the bytes: every template, a non-ASCII sender
    name and subject, a long subject that must be folded, an attachment."""
    monkeypatch.setenv("TWOFA_MAIL_FROM", "Wévion Sécurité <noreply@wevion.ai>")
    cases = [(name, BASE | context, []) for name, context in SAMPLE.items()]
    cases.append(("policy_reminder", BASE | SAMPLE["policy_reminder"] | {"org_name": "Ü" * 3 + " Corp " * 30}, []))
    cases.append(("weekly_report", BASE | SAMPLE["weekly_report"], [("r.csv", "text/csv", b"a,b\r\n1,2\r\n")]))
    for name, context, attachments in cases:
        msg = build_message(
            template=name, context=context, to="Zoë <zoe@example.com>", message_id="<m@x>", attachments=attachments
        )
        assert msg.as_bytes() == msg.as_bytes(policy=compat32), name
        assert msg.as_string() == msg.as_string(policy=compat32), name


@pytest.mark.parametrize("text", ["", "Your code: 123456\n", "Grüße, «Wevion» 🔐\n" * 40, "x" * 200 + "\r\n"])
@pytest.mark.parametrize("subtype", ["plain", "html", "csv"])
def test_text_parts_are_what_mimetext_makes(text: str, subtype: str) -> None:
    assert text_part(text, subtype).as_bytes() == MIMEText(text, subtype, "utf-8").as_bytes()


def test_html_is_autoescaped_and_text_is_not() -> None:
    msg = build_message(
        template="api_key_created", context=BASE | SAMPLE["api_key_created"], to="u@example.com", message_id="<x@y>"
    )
    text, html = (p.get_content() for p in parsed(msg).iter_parts())
    assert "<script>alert(1)</script>" in text
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_sender_comes_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWOFA_MAIL_FROM", "Security <security@example.org>")
    get_settings.cache_clear()
    msg = build_message(template="twofa_disabled", context=BASE, to="u@example.com", message_id="<x@y>")
    assert msg["From"] == "Security <security@example.org>"


class CountingHandler(ScriptedHandler):
    def __init__(self) -> None:
        super().__init__()
        self.peers: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.peers.append(session.peer)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def server() -> Iterator[SmtpServer]:
    smtp = SmtpServer()
    smtp.stop()
    smtp.handler = CountingHandler()
    smtp.start()
    yield smtp
    smtp.stop()


_open: list[SmtpBackend] = []


def backend_for(smtp: SmtpServer, **overrides: Any) -> SmtpBackend:
    backend = SmtpBackend(Settings(smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_timeout=5, **overrides))
    _open.append(backend)
    return backend


@pytest.fixture(autouse=True)
def _close_backends() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


def message(i: int) -> Any:
    return build_message(
        template="twofa_disabled", context=BASE, to=f"u{i}@example.com", message_id=f"<m{i}@w>", clock=SYSTEM_CLOCK
    )


def test_one_connection_is_reused(server: SmtpServer) -> None:
    backend = backend_for(server)
    for i in range(3):
        backend.send(message(i))
    backend.close()
    peers = server.handler.peers  # type: ignore[attr-defined]
    assert len(server.received) == 3 and len(set(peers)) == 1


def test_connection_per_message_when_reuse_is_off(server: SmtpServer) -> None:
    backend = backend_for(server, smtp_reuse_connection=False)
    for i in range(3):
        backend.send(message(i))
    assert len(set(server.handler.peers)) == 3  # type: ignore[attr-defined]


def test_reconnects_after_the_server_dropped_the_connection(server: SmtpServer) -> None:
    backend = backend_for(server)
    backend.send(message(1))
    server.stop()
    server.start()
    backend.send(message(2))
    assert [r.message["To"] for r in server.received] == ["u1@example.com", "u2@example.com"]


def test_reply_codes_map_to_transient_and_permanent(server: SmtpServer) -> None:
    backend = backend_for(server)
    server.handler.script.extend(["451 4.3.0 later", "550 5.1.1 no such user"])
    with pytest.raises(TransientMailError, match="451"):
        backend.send(message(1))
    with pytest.raises(PermanentMailError, match="550"):
        backend.send(message(2))
    backend.send(message(3))  # the connection is still good after both
    assert [r.message["To"] for r in server.received] == ["u3@example.com"]


def test_server_down_is_transient(server: SmtpServer) -> None:
    server.stop()
    with pytest.raises(TransientMailError, match="451"):
        backend_for(server).send(message(1))


def test_file_backend_writes_once_per_message_id(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path)
    backend.send(message(1))
    backend.send(message(1))  # a retry of the same message
    assert len(list(tmp_path.glob("*.eml"))) == 1


def test_non_ascii_names_and_subjects_survive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWOFA_MAIL_FROM", "Wévion Sécurité <security@example.org>")
    get_settings.cache_clear()
    context = BASE | SAMPLE["policy_escalation"] | {"org_name": "Société Générale"}
    msg = parsed(
        build_message(template="policy_escalation", context=context, to="Zoë <zoe@example.com>", message_id="<x@y>")
    )
    assert str(msg["Subject"]) == "1 member of Société Générale still without two-factor authentication"
    assert str(msg["From"]) == "Wévion Sécurité <security@example.org>"
    assert (
        msg.get_body(preferencelist=("plain",))
        .get_content()
        .startswith(  # type: ignore[union-attr]
            "These members of Société Générale"
        )
    )

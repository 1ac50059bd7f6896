"""Rendering ``templates/email/<name>/{subject.txt,body.txt,body.html}`` into a multipart message."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import format_datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.settings import get_settings


@lru_cache(maxsize=4)
def _environment(templates_dir: Path) -> Environment:
    return Environment(
        loader=FileSystemLoader(templates_dir),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def render(template: str, context: dict[str, Any]) -> tuple[str, str, str]:
    """(subject, text body, HTML body) of the email ``template``; HTML is autoescaped."""
    env = _environment(get_settings().templates_dir)
    subject = env.get_template(f"email/{template}/subject.txt").render(context).strip()
    text = env.get_template(f"email/{template}/body.txt").render(context)
    html = env.get_template(f"email/{template}/body.html").render(context)
    return " ".join(subject.split()), text, html


def build_message(
    *,
    template: str,
    context: dict[str, Any],
    to: str,
    message_id: str,
    attachments: list[tuple[str, str, bytes]] | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> EmailMessage:
    """A text + HTML message. ``message_id`` is stored with the outbox row, so a retry carries the same one."""
    settings = get_settings()
    # Every template may use these; the caller's context wins.
    subject, text, html = render(template, {"issuer": settings.issuer, "email": to} | context)
    msg = EmailMessage()
    msg["From"] = settings.mail_from
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    msg["Date"] = format_datetime(clock.now())
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    for filename, mimetype, data in attachments or []:
        maintype, _, subtype = mimetype.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg

"""Rendering ``templates/email/<name>/{subject.txt,body.txt,body.html}`` into a multipart message."""

from __future__ import annotations

import secrets
from email.header import Header
from email.message import Message
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr, parseaddr
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
) -> Message:
    """A text + HTML message. ``message_id`` is stored with the outbox row, so a retry carries the same one.

    Built with ``email.mime`` (the compat32 policy): the header registry of ``EmailMessage`` costs about 1.5 ms a
    message, more than rendering, and bulk mail is sent by the thousand.
    """
    settings = get_settings()
    # Every template may use these; the caller's context wins.
    subject, text, html = render(template, {"issuer": settings.issuer, "email": to} | context)
    body = MIMEMultipart("alternative", boundary=_boundary())
    body.attach(MIMEText(text, "plain", "utf-8"))
    body.attach(MIMEText(html, "html", "utf-8"))
    msg: Message = body
    if attachments:
        msg = MIMEMultipart("mixed", boundary=_boundary())
        msg.attach(body)
        for filename, mimetype, data in attachments:
            maintype, _, subtype = mimetype.partition("/")
            part = MIMEText(data.decode(), subtype, "utf-8") if maintype == "text" else MIMEApplication(data, subtype)
            part.add_header("Content-Disposition", "attachment", filename=filename)
            msg.attach(part)
    msg["From"] = _address(settings.mail_from)
    msg["To"] = _address(to)
    msg["Subject"] = subject if subject.isascii() else Header(subject, "utf-8", header_name="Subject").encode()
    msg["Message-ID"] = message_id
    msg["Date"] = format_datetime(clock.now())
    return msg


def _boundary() -> str:
    """A part boundary no body can contain: every part is base64 (``MIMEText`` with utf-8, ``MIMEApplication``),
    whose alphabet has no ``=_``. Left to itself, the generator makes one and compiles a regular expression per
    message to search the bodies for it."""
    return f"=_{secrets.token_hex(16)}"


def _address(value: str) -> str:
    name, address = parseaddr(value)
    return formataddr((name, address), charset="utf-8") if name else address

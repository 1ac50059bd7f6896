"""Rendering ``templates/email/<name>/{subject.txt,body.txt,body.html}`` into a multipart message."""

from __future__ import annotations

import base64
import secrets
from email import base64mime
from email.header import Header
from email.message import Message
from email.mime.application import MIMEApplication
from email.mime.image import MIMEImage
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.policy import Compat32
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


class _Compat32(Compat32):
    """``compat32``, with a short cut for the headers this module writes: a one-line ASCII value that fits is written as
    it is, which is what ``Header`` folding produces for it, without building a ``Header`` per header (the largest
    part of what writing an email costs). Anything else is folded as before."""

    def _as_is(self, name: str, value: object) -> str | None:
        if (
            isinstance(value, str)
            and value.isascii()
            and "\n" not in value
            and "\r" not in value
            and len(name) + 2 + len(value) <= (self.max_line_length or 78)
        ):
            return f"{name}: {value}{self.linesep}"
        return None

    def fold(self, name: str, value: str) -> str:
        return self._as_is(name, value) or super().fold(name, value)

    def fold_binary(self, name: str, value: str) -> bytes:
        line = self._as_is(name, value)
        return line.encode("ascii") if line is not None else super().fold_binary(name, value)


POLICY = _Compat32()
INLINE_IMAGES = "inline_images"


def build_message(
    *,
    template: str,
    context: dict[str, Any],
    to: str,
    message_id: str,
    attachments: list[tuple[str, str, bytes]] | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> Message:
    """A text + HTML message. ``message_id`` is stored with the outbox row, so a retry carries the same one (but an
    email code's, which ``delivery.code_message_id`` makes anew with each attempt's new code).

    The context key ``inline_images`` (a list of ``{"cid", "mimetype", "filename", "content_base64"}``) is no
    template variable: each image becomes a part of the HTML (``multipart/related``), which the HTML shows as
    ``<img src="cid:...">``. Gmail and Outlook show such images; they block ``data:`` URLs.

    Built with ``email.mime`` (the compat32 policy): the header registry of ``EmailMessage`` costs more a message than
    rendering, and bulk mail is sent by the thousand.
    """
    settings = get_settings()
    context = dict(context)
    images = [inline_image(**spec) for spec in context.pop(INLINE_IMAGES, None) or []]
    # Every template may use these; the caller's context wins.
    subject, text, html = render(template, {"issuer": settings.issuer, "email": to} | context)
    body = MIMEMultipart("alternative", boundary=_boundary(), policy=POLICY)
    body.attach(text_part(text, "plain"))
    html_part: Message = text_part(html, "html")
    if images:
        html_part = MIMEMultipart("related", boundary=_boundary(), policy=POLICY, type="text/html")
        html_part.attach(text_part(html, "html"))
        for image in images:
            html_part.attach(image)
    body.attach(html_part)
    msg: Message = body
    if attachments:
        msg = MIMEMultipart("mixed", boundary=_boundary(), policy=POLICY)
        msg.attach(body)
        for filename, mimetype, data in attachments:
            maintype, _, subtype = mimetype.partition("/")
            part = text_part(data.decode(), subtype) if maintype == "text" else MIMEApplication(data, subtype)
            part.add_header("Content-Disposition", "attachment", filename=filename)
            msg.attach(part)
    msg["From"] = _sender(settings.mail_from)
    msg["To"] = _address(to)
    msg["Subject"] = subject if subject.isascii() else Header(subject, "utf-8", header_name="Subject").encode()
    msg["Message-ID"] = message_id
    msg["Date"] = format_datetime(clock.now())
    return msg


def inline_image(*, cid: str, mimetype: str, filename: str, content_base64: str) -> MIMEImage:
    """An image that the HTML part of the same ``multipart/related`` shows as ``<img src="cid:{cid}">``."""
    maintype, _, subtype = mimetype.partition("/")
    if maintype != "image" or not cid or any(c in cid for c in "<> \t\r\n"):
        raise ValueError(f"not an inline image: {mimetype!r}, content id {cid!r}")
    part = MIMEImage(base64.b64decode(content_base64, validate=True), subtype, policy=POLICY)
    part["Content-ID"] = f"<{cid}>"
    part.add_header("Content-Disposition", "inline", filename=filename)
    return part


def text_part(text: str, subtype: str) -> MIMENonMultipart:
    """What ``MIMEText(text, subtype, "utf-8")`` makes, byte for byte (a test holds it to that), in a fifth of the
    time: ``MIMEText`` sets the charset parameter it was given a second time, parsing the header to do it."""
    part = MIMENonMultipart("text", subtype, policy=POLICY, charset="utf-8")
    part["Content-Transfer-Encoding"] = "base64"
    part.set_payload(base64mime.body_encode(text.encode("utf-8")))
    return part


def _boundary() -> str:
    """A part boundary no body can contain: every part is base64 (``text_part``, ``MIMEApplication``),
    whose alphabet has no ``=_``. Left to itself, the generator makes one and compiles a regular expression per
    message to search the bodies for it."""
    return f"=_{secrets.token_hex(16)}"


@lru_cache(maxsize=4)
def _sender(mail_from: str) -> str:
    """``TWOFA_MAIL_FROM`` as a header value, formatted once: the same for every message."""
    return _address(mail_from)


def _address(value: str) -> str:
    name, address = parseaddr(value)
    return formataddr((name, address), charset="utf-8") if name else address

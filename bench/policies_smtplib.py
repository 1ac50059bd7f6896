"""The baseline of ``bench/bench_policies.py``: a plain smtplib loop over one reused connection, in its own process.

Run as a script by the benchmark (not named ``bench_*.py``: ``make bench`` runs every ``bench/bench_*.py``):

    python bench/policies_smtplib.py --port PORT --count N [--distinct D]

It renders ``D`` reminder emails (default: ``N``) with ``twofa.mail.render.build_message`` first (untimed), opens
one SMTP connection (EHLO included), then sends ``N`` messages back to back, cycling through the ``D`` prebuilt
ones, with ``send_message`` (which serialises the message on every call, as the worker does), and QUITs. Building
an ``EmailMessage`` costs more than sending it, so a smaller ``D`` keeps the untimed part short without changing the
loop. It prints one JSON
line: ``start`` (``time.monotonic()`` just before the first message, host-wide on Linux, so the parent compares
it with the SMTP server's acceptance times), ``end``, the render time and this process's CPU seconds in the loop.
"""

from __future__ import annotations

import argparse
import json
import smtplib
import sys
import time
from email.message import Message
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twofa.mail.render import build_message
from twofa.outbox import new_message_id


def reminder_messages(count: int, prefix: str) -> list[Message]:
    """Messages like the ones the policy job sends (same template, same kind of context)."""
    return [
        build_message(
            template="policy_reminder",
            context={
                "org_name": f"Organisation {i % 100}",
                "role": "finance",
                "deadline": "2026-12-05 10:00 UTC",
                "days_left": 5,
                "email_allowed": True,
                "stage": "d7",
            },
            to=f"{prefix}-{i}@bench.example",
            message_id=new_message_id(),
        )
        for i in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--distinct", type=int, default=0, help="messages to build (default: --count)")
    parser.add_argument("--prefix", default="baseline")
    args = parser.parse_args()

    rendered_at = time.monotonic()
    prebuilt = reminder_messages(args.distinct or args.count, args.prefix)
    messages = [prebuilt[i % len(prebuilt)] for i in range(args.count)]
    render_s = time.monotonic() - rendered_at

    conn = smtplib.SMTP(args.host, args.port, timeout=30)
    conn.ehlo()
    cpu_before = time.process_time()
    start = time.monotonic()
    for message in messages:
        conn.send_message(message)
    end = time.monotonic()
    cpu = time.process_time() - cpu_before
    conn.quit()
    result = {"start": start, "end": end, "render_s": render_s, "built": len(prebuilt), "cpu_s": cpu}
    print(json.dumps({**result, "count": args.count}))


if __name__ == "__main__":
    main()

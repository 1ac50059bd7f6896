"""``twofa keys rotate``: every TOTP seed re-encrypted under the first key of ``TWOFA_SECRET_KEY``."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from twofa import key_rotation
from twofa.db import transaction
from twofa.settings import get_settings, require_secret_key, secret_keys

app = typer.Typer(help="The secret keys that protect TOTP seeds and email codes.", no_args_is_help=True)


@app.command()
def rotate(
    batch_size: int = typer.Option(
        key_rotation.BATCH_SIZE, min=1, max=10_000, help="Seeds re-encrypted per transaction (rows locked at once)."
    ),
) -> None:
    """Re-encrypt every TOTP seed under the first key of TWOFA_SECRET_KEY (new,old), so the old keys can be removed.
    Safe while the service runs, and safe to run again."""
    require_secret_key(first_only=True)  # the keys after it may be weak: moving seeds away from them is the point
    with transaction() as session:
        total = key_rotation.seed_count(session)
    rotated = undecryptable = 0
    after = 0
    columns = (TextColumn("re-encrypting seeds"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    console = Console(stderr=True)
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("seeds", total=total)
        while True:
            with transaction() as session:
                batch = key_rotation.rotate_batch(session, after, batch_size)
            if batch is None:
                break
            after = batch.last_id
            rotated += batch.rotated
            undecryptable += batch.undecryptable
            progress.advance(task, batch.read)
    typer.echo(f"re-encrypted {rotated} of {total} TOTP seeds under the first key (the others were already)")
    if undecryptable:
        typer.echo(
            f"error: {undecryptable} seeds decrypt under none of the keys: those users must set up their app again "
            "(twofa support reset-2fa)",
            err=True,
        )
        raise typer.Exit(1)
    if len(secret_keys()) > 1:
        minutes = -(-get_settings().email_otp_ttl // 60)
        typer.echo(
            "every seed is under the first key: remove the others from TWOFA_SECRET_KEY once every process runs with "
            f"the new first key and {minutes} minutes have passed (email codes sent before then still need them)"
        )

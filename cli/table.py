"""Plain aligned columns: readable on a terminal, and stable for scripts and `grep` (no box drawing, no wrapping)."""

from __future__ import annotations

from collections.abc import Sequence

import typer


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    for line in (headers, *rows):
        typer.echo("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())

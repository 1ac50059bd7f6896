"""CSV for people who open it in a spreadsheet (no pandas here: the CLI and the API load this module alone).

Excel, LibreOffice and Google Sheets read a cell that begins with ``=``, ``+``, ``-`` or ``@`` as a formula, and
strip a leading tab or carriage return before looking; a member's email or an admin's reason is typed by someone
else, so every text cell of every CSV the product writes goes through ``defuse_cell`` (OWASP "CSV Injection")."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, TextIO

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def defuse_cell(value: object) -> object:
    """``value`` with a leading ``'`` when it is text that a spreadsheet would read as a formula; else unchanged
    (numbers, dates and empty cells are not formulas, and keep their type)."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def cell(value: Any) -> str:
    """One value as a CSV cell: times in ISO 8601, nothing for None, and text that a spreadsheet would run as a
    formula prefixed with ``'`` (OWASP CSV injection)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict | list):
        value = json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, str):
        return str(defuse_cell(value))
    return str(value)


def write_csv(out: TextIO, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Every CSV this product writes goes through here, one cell at a time through ``cell``."""
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([cell(v) for v in row])


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    out = io.StringIO()
    write_csv(out, header, rows)
    return out.getvalue()

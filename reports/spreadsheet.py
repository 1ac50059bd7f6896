"""CSV cells that a spreadsheet cannot run (OWASP "CSV Injection").

Excel, LibreOffice and Google Sheets read a cell that begins with ``=``, ``+``, ``-`` or ``@`` as a formula, and
strip a leading tab or carriage return before looking; a member's email or an admin's reason is typed by someone
else, so every text cell of every CSV the product writes goes through ``defuse_cell``.
"""

from __future__ import annotations

import pandas as pd

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def defuse_cell(value: object) -> object:
    """``value`` with a leading ``'`` when it is text that a spreadsheet would read as a formula; else unchanged
    (numbers, dates and empty cells are not formulas, and keep their type)."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def defuse_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells, index included, went through ``defuse_cell``."""
    out = frame.copy()
    for column in out.columns:
        if _is_text(out[column]):
            out[column] = out[column].map(defuse_cell)
    if _is_text(out.index.to_series()):
        out.index = out.index.map(defuse_cell)
    return out


def _is_text(values: pd.Series) -> bool:
    dtype = values.dtype
    return not (
        pd.api.types.is_numeric_dtype(dtype)
        or pd.api.types.is_bool_dtype(dtype)
        or pd.api.types.is_datetime64_any_dtype(dtype)
    )

"""Pandas frames whose text cells a spreadsheet cannot run (``csv_export.defuse_cell``, OWASP "CSV Injection")."""

from __future__ import annotations

import pandas as pd

from reports.csv_export import defuse_cell


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

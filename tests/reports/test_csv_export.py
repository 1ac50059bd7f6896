"""The product's CSV: what a spreadsheet would run as a formula is defused; times and JSON read back as written."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from reports.csv_export import csv_text


def test_cells_a_spreadsheet_would_run_are_prefixed() -> None:
    text = csv_text(
        ["a", "b", "c", "d"],
        [
            ['=HYPERLINK("x")', "+1", "-2", "@SUM(A1)"],
            ["\tx", "\rx", -3, None],
            [datetime(2026, 11, 30, 10, tzinfo=UTC), {"reason": "=x", "n": 1}, "plain", 0],
        ],
    )
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[1] == ['\'=HYPERLINK("x")', "'+1", "'-2", "'@SUM(A1)"]
    assert rows[2] == ["'\tx", "'\rx", "-3", ""]
    assert rows[3] == ["2026-11-30T10:00:00+00:00", '{"n": 1, "reason": "=x"}', "plain", "0"]

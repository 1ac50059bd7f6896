"""The trend chart's axes, and CSV cells that a spreadsheet cannot run."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from reports.chart import trend_figure, week_labels
from reports.spreadsheet import defuse_cell, defuse_frame


def test_the_axis_is_in_percent_and_the_weeks_show_their_year() -> None:
    weeks = ["2025-W51", "2025-W52", "2026-W01", "2026-W02"]
    trend = pd.DataFrame({"week": weeks, "coverage": [0.1, 0.5, 0.75, 1.0], "verified_share": [0.2, 0.4, 0.6, 0.8]})
    fig = trend_figure(trend, "Acme", partial=True)
    try:
        fig.canvas.draw()
        [ax] = fig.axes
        assert [t.get_text() for t in ax.get_yticklabels()] == ["0%", "25%", "50%", "75%", "100%"]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["W51\n2025", "W52", "W01\n2026", "W02 (to date)"]
        assert ax.get_xlabel() == "ISO week (Monday to Sunday, UTC)"
        assert list(ax.get_lines()[0].get_ydata()) == [10.0, 50.0, 75.0, 100.0]
    finally:
        plt.close(fig)
    assert week_labels(["2026-W48", "2026-W49"], partial=False) == ["W48\n2026", "W49"]


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1@evil.io", "'+1@evil.io"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("ann@acme.io", "ann@acme.io"),
        ("", ""),
        (-5, -5),
        (None, None),
    ],
)
def test_a_cell_that_a_spreadsheet_would_run_gets_an_apostrophe(cell: object, written: object) -> None:
    assert defuse_cell(cell) == written


def test_a_frame_keeps_its_numbers_and_index_name() -> None:
    frame = pd.DataFrame({"email": ["=a@x", "b@x"], "n": [-1, 2]}, index=pd.Index(["-r", "s"], name="role"))
    out = defuse_frame(frame)
    assert out.to_csv(lineterminator="\n") == "role,email,n\n'-r,'=a@x,-1\ns,b@x,2\n"
    assert frame.loc["-r", "email"] == "=a@x"  # the caller's frame is left alone

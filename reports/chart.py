"""The trend chart: coverage and verified-login share over the report's weeks, as a PNG."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter


def week_labels(weeks: list[str], partial: bool) -> list[str]:
    """``2026-W47`` -> ``W47``, with the year under the first week and under a week where the year changes; the
    last week is marked "to date" while it is not over."""
    labels, previous = [], None
    for i, week in enumerate(weeks):
        year, _, number = week.partition("-")
        if partial and i == len(weeks) - 1:
            number += " (to date)"
        labels.append(f"{number}\n{year}" if year != previous else number)
        previous = year
    return labels


def trend_figure(trend: pd.DataFrame, title: str, partial: bool = False) -> Figure:
    """A line chart of ``coverage`` and ``verified_share`` (0-1) per ``week``, in percent. The caller closes it."""
    fig, ax = plt.subplots(figsize=(7, 3), dpi=100)
    x = range(len(trend))
    ax.plot(x, trend["coverage"] * 100, marker="o", label="members enrolled")
    ax.plot(x, trend["verified_share"] * 100, marker="s", label="sign-ins verified with 2FA")
    ax.set_xticks(list(x), week_labels(list(trend["week"]), partial), fontsize=8)
    ax.set_xlabel("ISO week (Monday to Sunday, UTC)", fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_yticks([0, 25, 50, 75, 100])
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=100, decimals=0))
    ax.tick_params(axis="y", labelsize=8)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def trend_png(trend: pd.DataFrame, title: str, partial: bool = False) -> bytes:
    fig = trend_figure(trend, title, partial)
    try:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", metadata={"Software": None})
        return buffer.getvalue()
    finally:
        plt.close(fig)

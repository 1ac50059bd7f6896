"""The trend chart: coverage and verified-login share over the report's weeks, as a PNG."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot

import matplotlib.pyplot as plt
import pandas as pd


def trend_png(trend: pd.DataFrame, title: str) -> bytes:
    """A line chart of ``coverage`` and ``verified_share`` (0-1) per ``week``."""
    fig, ax = plt.subplots(figsize=(7, 3), dpi=100)
    try:
        x = range(len(trend))
        ax.plot(x, trend["coverage"] * 100, marker="o", label="members enrolled (%)")
        ax.plot(x, trend["verified_share"] * 100, marker="s", label="sign-ins verified with 2FA (%)")
        ax.set_xticks(list(x), [w.split("-")[1] for w in trend["week"]])
        ax.set_ylim(0, 105)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", metadata={"Software": None})
        return buffer.getvalue()
    finally:
        plt.close(fig)

"""Turning report data into an HTML page (with the trend chart inline) and CSV files.

The same data gives the same CSV bytes: rows and columns in a fixed order, fixed number formats, UTC timestamps.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from reports import compute
from reports.chart import trend_png
from reports.extract import TREND_WEEKS, ReportData
from twofa.settings import get_settings

CSV_OPTIONS: dict[str, Any] = {"lineterminator": "\n", "float_format": "%.4f", "date_format": "%Y-%m-%dT%H:%M:%SZ"}


@dataclass(frozen=True)
class Rendered:
    html: str
    csv: dict[str, bytes]  # file name -> bytes
    chart_png: bytes
    summary: dict[str, Any]


@lru_cache(maxsize=2)
def _environment(templates_dir: str) -> Environment:
    return Environment(
        loader=FileSystemLoader(templates_dir), autoescape=select_autoescape(["html"]), undefined=StrictUndefined
    )


def _pct(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def _csv(frame: pd.DataFrame, index: bool = False) -> bytes:
    return str(frame.to_csv(index=index, **CSV_OPTIONS)).encode()


def render(data: ReportData) -> Rendered:
    week = data.week
    members = data.members.assign(
        deadline=pd.to_datetime(data.members["deadline"], utc=True),
        joined_at=pd.to_datetime(data.members["joined_at"], utc=True),
        enabled_at=pd.to_datetime(data.members["enabled_at"], utc=True),
    )
    toggles = data.toggles.assign(at=pd.to_datetime(data.toggles["at"], utc=True))
    by_role = compute.coverage_by_role(members)
    by_method = compute.coverage_by_method(members)
    non_compliant = compute.non_compliant(members)
    activity = compute.activity(members, data.logins, data.lockouts)
    privileged = compute.privileged_unverified(activity)
    weeks = [week.minus(n) for n in reversed(range(TREND_WEEKS))]
    trend = compute.trend(members, toggles, data.trend_logins, [pd.Timestamp(w.end) for w in weeks])
    summary = compute.summary(members, activity)
    summary.update(week=str(week), org=data.org.slug)

    title = f"{data.org.name}: 2FA coverage and verified sign-ins"
    png = trend_png(trend, title)
    template = _environment(str(get_settings().templates_dir)).get_template("report/weekly.html")
    html = template.render(
        org_name=data.org.name,
        sso=data.org.sso_idp,
        week=str(week),
        week_start=f"{week.start:%Y-%m-%d}",
        week_end=f"{week.end:%Y-%m-%d}",
        s=summary,
        chart_data_url="data:image/png;base64," + base64.b64encode(png).decode(),
        by_role=[
            {
                "role": role,
                **{k: int(v) for k, v in row.items() if k != "coverage"},
                "coverage_text": _pct(row["coverage"]),
            }
            for role, row in by_role.iterrows()
        ],
        privileged=privileged.to_dict("records"),
        non_compliant=[
            {**r, "deadline": f"{r['deadline']:%Y-%m-%d %H:%M}" if pd.notna(r["deadline"]) else ""}
            for r in non_compliant.to_dict("records")
        ],
        trend=[
            {
                **r,
                "coverage_text": _pct(r["coverage"]),
                "verified_text": f"{r['verified']} ({_pct(r['verified_share'])})",
            }
            for r in trend.to_dict("records")
        ],
    )
    csv = {
        "coverage_by_role.csv": _csv(by_role, index=True),
        "coverage_by_method.csv": _csv(by_method, index=True),
        "non_compliant.csv": _csv(non_compliant),
        "privileged_unverified.csv": _csv(privileged),
        "activity.csv": _csv(activity.drop(columns=["user_id"]).sort_values("email")),
        "trend.csv": _csv(trend),
    }
    return Rendered(html=html, csv=csv, chart_png=png, summary=summary)

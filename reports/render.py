"""Turning report data into an HTML page (with the trend chart inline), the email's HTML and CSV files.

The same data gives the same CSV bytes: rows and columns in a fixed order, fixed number formats, UTC timestamps,
and text cells that a spreadsheet cannot run as formulas (``reports.spreadsheet``).
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from reports import compute
from reports.chart import trend_png
from reports.extract import TREND_WEEKS, ReportData
from reports.spreadsheet import defuse_frame
from reports.week import IsoWeek
from twofa.settings import get_settings

CSV_OPTIONS: dict[str, Any] = {"lineterminator": "\n", "float_format": "%.4f", "date_format": "%Y-%m-%dT%H:%M:%SZ"}
CHART_CID = "trend-chart@report.wevion"  # the email's HTML shows the chart as <img src="cid:...">


@dataclass(frozen=True)
class Rendered:
    html: str  # the report as one file: the chart inside it as a data: URL
    email_html: str  # the same report as an email's HTML: the chart as the inline part CHART_CID
    csv: dict[str, bytes]  # file name -> bytes
    chart_png: bytes
    summary: dict[str, Any]
    period: str  # the days covered, in words


@lru_cache(maxsize=2)
def _environment(templates_dir: str) -> Environment:
    return Environment(
        loader=FileSystemLoader(templates_dir), autoescape=select_autoescape(["html"]), undefined=StrictUndefined
    )


def _pct(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def _csv(frame: pd.DataFrame, index: bool = False) -> bytes:
    return str(defuse_frame(frame).to_csv(index=index, **CSV_OPTIONS)).encode()


def _day(at: date) -> str:
    return f"{at:%A} {at.day} {at:%B %Y}"


def period(week: IsoWeek, as_of: datetime) -> str:
    """The days a report covers, in words: Monday to Sunday, or Monday to now while the week runs."""
    if as_of >= week.end:
        return f"{_day(week.first_day)} to {_day(week.last_day)} (UTC)"
    return f"{_day(week.first_day)} to {_day(as_of)}, {as_of:%H:%M} UTC (the week ends on {_day(week.last_day)})"


def _members(data: ReportData) -> pd.DataFrame:
    return data.members.assign(
        deadline=pd.to_datetime(data.members["deadline"], utc=True),
        joined_at=pd.to_datetime(data.members["joined_at"], utc=True),
        enabled_at=pd.to_datetime(data.members["enabled_at"], utc=True),
    )


def _summary(data: ReportData, members: pd.DataFrame, activity: pd.DataFrame) -> dict[str, Any]:
    week = data.week
    summary = compute.summary(members, activity)
    summary.update(
        org=data.org.slug,
        week=str(week),
        first_day=week.first_day.isoformat(),
        last_day=week.last_day.isoformat(),
        partial=data.as_of < week.end,
        as_of=f"{data.as_of:%Y-%m-%dT%H:%M:%SZ}",
    )
    return summary


def summarise(data: ReportData) -> dict[str, Any]:
    """The report's headline figures alone (``Rendered.summary``), without the chart, the HTML or the CSVs."""
    members = _members(data)
    return _summary(data, members, compute.activity(members, data.logins, data.lockouts))


def render(data: ReportData) -> Rendered:
    week = data.week
    members = _members(data)
    toggles = data.toggles.assign(at=pd.to_datetime(data.toggles["at"], utc=True))
    by_role = compute.coverage_by_role(members)
    by_method = compute.coverage_by_method(members)
    non_compliant = compute.non_compliant(members)
    activity = compute.activity(members, data.logins, data.lockouts)
    privileged = compute.privileged_unverified(activity)
    weeks = [week.minus(n) for n in reversed(range(TREND_WEEKS))]
    trend = compute.trend(members, toggles, data.trend_logins, [pd.Timestamp(w.end) for w in weeks])
    summary = _summary(data, members, activity)
    partial = bool(summary["partial"])
    week_name = f"{week} to date" if partial else str(week)

    title = f"{data.org.name}: 2FA coverage and verified sign-ins"
    png = trend_png(trend, title, partial=partial)
    template = _environment(str(get_settings().templates_dir)).get_template("report/weekly.html")
    days = period(week, data.as_of)
    context = dict(
        org_name=data.org.name,
        sso=data.org.sso_idp,
        week=week_name,
        period=days,
        partial=partial,
        s=summary,
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
                "week": f"{r['week']} (to date)" if partial and r["week"] == str(week) else r["week"],
                "days": _days(IsoWeek.parse(r["week"])),
                "coverage_text": _pct(r["coverage"]),
                "verified_text": f"{r['verified']} ({_pct(r['verified_share'])})",
            }
            for r in trend.to_dict("records")
        ],
    )
    html = template.render(chart_src="data:image/png;base64," + base64.b64encode(png).decode(), email=False, **context)
    email_html = template.render(chart_src=f"cid:{CHART_CID}", email=True, **context)
    csv = {
        "coverage_by_role.csv": _csv(by_role, index=True),
        "coverage_by_method.csv": _csv(by_method, index=True),
        "non_compliant.csv": _csv(non_compliant),
        "privileged_unverified.csv": _csv(privileged),
        "activity.csv": _csv(activity.drop(columns=["user_id"]).sort_values("email")),
        "trend.csv": _csv(trend),
    }
    return Rendered(html=html, email_html=email_html, csv=csv, chart_png=png, summary=summary, period=days)


def _days(week: IsoWeek) -> str:
    first, last = week.first_day, week.last_day
    return f"{first.day} {first:%b} to {last.day} {last:%b}"

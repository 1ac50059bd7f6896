"""Report arithmetic: plain pandas functions over the frames of ``reports.extract``.

A member is *in scope* when a policy applies to them (verdict compliant, pending or overdue); members of SSO
organisations are counted apart (verdict exempt, reason managed_by_sso). *Enrolled* means 2FA is on with any
method; *non-compliant* means pending or overdue (including email codes where the role needs an app).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from twofa.models import Role

PRIVILEGED = [Role.OWNER.value, Role.ADMIN.value, Role.SUPER_ADMIN.value, Role.FINANCE.value]
ROLE_ORDER = [*PRIVILEGED, Role.MEMBER.value]
IN_SCOPE = ("compliant", "pending", "overdue")


def _share(part: pd.Series | int, whole: pd.Series | int) -> Any:
    return np.where(np.asarray(whole) > 0, np.round(np.asarray(part) / np.maximum(np.asarray(whole), 1), 4), np.nan)


def coverage_by_role(members: pd.DataFrame) -> pd.DataFrame:
    """Index ``role`` (every role, fixed order). Columns: members, sso_managed, in_scope, enrolled, totp, email,
    coverage (enrolled / in_scope, NaN when nobody is in scope)."""
    m = members.assign(
        sso_managed=members["reason"].eq("managed_by_sso"),
        in_scope=members["verdict"].isin(IN_SCOPE),
    )
    m = m.assign(
        enrolled=m["in_scope"] & m["method"].notna(),
        totp=m["in_scope"] & m["method"].eq("totp"),
        email=m["in_scope"] & m["method"].eq("email"),
    )
    out = (
        m.groupby("role")[["sso_managed", "in_scope", "enrolled", "totp", "email"]]
        .sum()
        .join(m.groupby("role").size().rename("members"))
        .reindex(ROLE_ORDER, fill_value=0)
        .astype("int64")
    )
    out = out[["members", "sso_managed", "in_scope", "enrolled", "totp", "email"]]
    out["coverage"] = _share(out["enrolled"], out["in_scope"])
    out.index.name = "role"
    return out


def coverage_by_method(members: pd.DataFrame) -> pd.DataFrame:
    """Index ``method`` (totp, email, none). Column: members (in scope, by their current method)."""
    in_scope = members[members["verdict"].isin(IN_SCOPE)]
    counts = in_scope["method"].fillna("none").value_counts().reindex(["totp", "email", "none"], fill_value=0)
    return counts.rename("members").rename_axis("method").to_frame().astype("int64")


def non_compliant(members: pd.DataFrame) -> pd.DataFrame:
    """Pending and overdue members, earliest deadline first. Columns: email, role, verdict, reason, deadline,
    reminders_sent."""
    rows = members[members["verdict"].isin(["pending", "overdue"])]
    cols = ["email", "role", "verdict", "reason", "deadline", "reminders_sent"]
    return rows.sort_values(["deadline", "email"])[cols].reset_index(drop=True)


def activity(members: pd.DataFrame, logins: pd.DataFrame, lockouts: pd.DataFrame) -> pd.DataFrame:
    """One row per member. Columns: user_id, email, role, signed_in, verified, unverified, failed_password,
    failed_2fa, backup_codes_used, lockouts (zero when the member did nothing that week)."""
    counts = ["signed_in", "verified", "unverified", "failed_password", "failed_2fa", "backup_codes_used"]
    out = members[["user_id", "email", "role"]].merge(logins, on="user_id", how="left")
    out = out.merge(lockouts, on="user_id", how="left")
    out[[*counts, "lockouts"]] = out[[*counts, "lockouts"]].fillna(0).astype("int64")
    return out


def privileged_unverified(activity_frame: pd.DataFrame) -> pd.DataFrame:
    """Members in privileged roles who signed in without a second factor. Columns: email, role, unverified."""
    rows = activity_frame[activity_frame["role"].isin(PRIVILEGED) & (activity_frame["unverified"] > 0)]
    return rows.sort_values(["unverified", "email"], ascending=[False, True])[
        ["email", "role", "unverified"]
    ].reset_index(drop=True)


def trend(
    members: pd.DataFrame, toggles: pd.DataFrame, trend_logins: pd.DataFrame, week_ends: list[Any]
) -> pd.DataFrame:
    """One row per week, oldest first. Columns: week, in_scope, enrolled, coverage, signed_in, verified,
    verified_share.

    Coverage at each week's end counts the members in scope today who had joined by then, enrolled if their last
    2FA change before then turned it on (or, with no recorded change, if it is on now and was on by then)."""
    in_scope = members[members["verdict"].isin(IN_SCOPE)]
    in_scope_rows, enrolled_rows = [], []
    for end in week_ends:
        present = in_scope[in_scope["joined_at"] < end]
        before = toggles[toggles["at"] < end]
        last = before.groupby("user_id")["enabled"].last() if len(before) else pd.Series(dtype=bool)
        recorded = present["user_id"].map(last)
        untracked = present["method"].notna() & present["enabled_at"].notna() & (present["enabled_at"] < end)
        on = recorded.where(recorded.notna(), untracked & ~present["user_id"].isin(toggles["user_id"]))
        in_scope_rows.append(len(present))
        enrolled_rows.append(int(on.fillna(False).astype(bool).sum()))
    out = trend_logins.copy()
    out.insert(1, "in_scope", in_scope_rows)
    out.insert(2, "enrolled", enrolled_rows)
    out.insert(3, "coverage", _share(out["enrolled"], out["in_scope"]))
    out["verified_share"] = _share(out["verified"], out["signed_in"])
    return out


def summary(members: pd.DataFrame, activity_frame: pd.DataFrame) -> dict[str, Any]:
    """The headline figures, as plain numbers (stored with the report and used in the email subject)."""
    in_scope = members["verdict"].isin(IN_SCOPE)
    enrolled = int((in_scope & members["method"].notna()).sum())
    signed_in = int(activity_frame["signed_in"].sum())
    verified = int(activity_frame["verified"].sum())
    privileged = activity_frame["role"].isin(PRIVILEGED)
    return {
        "members": len(members),
        "in_scope": int(in_scope.sum()),
        "sso_managed": int(members["reason"].eq("managed_by_sso").sum()),
        "enrolled": enrolled,
        "coverage_pct": round(100 * enrolled / int(in_scope.sum()), 1) if in_scope.any() else None,
        "non_compliant": int(members["verdict"].isin(["pending", "overdue"]).sum()),
        "overdue": int(members["verdict"].eq("overdue").sum()),
        "logins": signed_in,
        "verified": verified,
        "verified_pct": round(100 * verified / signed_in, 1) if signed_in else None,
        "privileged_unverified_logins": int(activity_frame.loc[privileged, "unverified"].sum()),
        "privileged_unverified_members": int((privileged & (activity_frame["unverified"] > 0)).sum()),
        "backup_codes_used": int(activity_frame["backup_codes_used"].sum()),
        "failed_2fa": int(activity_frame["failed_2fa"].sum()),
        "failed_password": int(activity_frame["failed_password"].sum()),
        "lockouts": int(activity_frame["lockouts"].sum()),
    }

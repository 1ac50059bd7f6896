"""Report arithmetic on five-row literal frames; every expected number is worked out by hand."""

from __future__ import annotations

import math

import pandas as pd

from reports import compute

T = pd.Timestamp


def members() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [1, 2, 3, 4, 5],
            "email": ["a@x", "b@x", "c@x", "d@x", "e@x"],
            "role": ["owner", "admin", "finance", "member", "finance"],
            "method": ["totp", "email", None, None, "email"],
            "enabled_at": [T("2026-11-01", tz="UTC"), T("2026-11-20", tz="UTC"), None, None, T("2026-11-25", tz="UTC")],
            "verdict": ["compliant", "compliant", "overdue", "exempt", "pending"],
            "reason": [None, None, "not_enrolled", "role_not_required", "totp_required"],
            "deadline": [None, None, T("2026-11-20", tz="UTC"), None, T("2026-12-10", tz="UTC")],
            "joined_at": [T("2026-10-01", tz="UTC")] * 4 + [T("2026-11-24", tz="UTC")],
            "reminders_sent": [0, 0, 5, 0, 1],
        }
    )


def test_coverage_by_role() -> None:
    out = compute.coverage_by_role(members())
    assert list(out.index) == ["owner", "admin", "super_admin", "finance", "member"]
    assert out.loc["finance"].to_dict() == {
        "members": 2,
        "sso_managed": 0,
        "in_scope": 2,
        "enrolled": 1,
        "totp": 0,
        "email": 1,
        "coverage": 0.5,
    }
    assert out.loc["owner", "coverage"] == 1.0 and out.loc["owner", "totp"] == 1
    assert out.loc["member", "in_scope"] == 0 and math.isnan(out.loc["member", "coverage"])
    assert math.isnan(out.loc["super_admin", "coverage"]) and out.loc["super_admin", "members"] == 0


def test_coverage_by_method() -> None:
    out = compute.coverage_by_method(members())
    assert out["members"].to_dict() == {"totp": 1, "email": 2, "none": 1}


def test_non_compliant_earliest_deadline_first() -> None:
    out = compute.non_compliant(members())
    assert out[["email", "verdict", "reason", "reminders_sent"]].values.tolist() == [
        ["c@x", "overdue", "not_enrolled", 5],
        ["e@x", "pending", "totp_required", 1],
    ]


def test_activity_and_privileged_unverified() -> None:
    logins = pd.DataFrame(
        {
            "user_id": [1, 3, 4],
            "signed_in": [3, 2, 1],
            "verified": [3, 0, 0],
            "unverified": [0, 2, 1],
            "failed_password": [0, 1, 0],
            "failed_2fa": [1, 0, 0],
            "backup_codes_used": [1, 0, 0],
        }
    )
    lockouts = pd.DataFrame({"user_id": [3], "lockouts": [1]})
    activity = compute.activity(members(), logins, lockouts)
    assert activity.set_index("email")["signed_in"].to_dict() == {"a@x": 3, "b@x": 0, "c@x": 2, "d@x": 1, "e@x": 0}
    assert activity.set_index("email")["lockouts"].to_dict() == {"a@x": 0, "b@x": 0, "c@x": 1, "d@x": 0, "e@x": 0}
    privileged = compute.privileged_unverified(activity)
    assert privileged.values.tolist() == [["c@x", "finance", 2]]  # d@x is a plain member
    s = compute.summary(members(), activity)
    assert (s["in_scope"], s["enrolled"], s["coverage_pct"]) == (4, 3, 75.0)
    assert (s["logins"], s["verified"], s["verified_pct"]) == (6, 3, 50.0)
    assert (s["privileged_unverified_logins"], s["failed_2fa"], s["lockouts"], s["backup_codes_used"]) == (2, 1, 1, 1)
    assert (s["non_compliant"], s["overdue"], s["sso_managed"]) == (2, 1, 0)


def test_trend_uses_the_state_at_each_week_end() -> None:
    toggles = pd.DataFrame(
        {
            "user_id": [2, 2, 2],
            "at": [T("2026-11-10", tz="UTC"), T("2026-11-12", tz="UTC"), T("2026-11-20", tz="UTC")],
            "enabled": [True, False, True],
        }
    )
    logins = pd.DataFrame({"week": ["W1", "W2", "W3"], "signed_in": [4, 0, 10], "verified": [1, 0, 10]})
    ends = [T("2026-11-11", tz="UTC"), T("2026-11-18", tz="UTC"), T("2026-11-25", tz="UTC")]
    out = compute.trend(members(), toggles, logins, ends)
    # In scope: a, b, c always; e joined 11-24, so only by the third end.
    assert out["in_scope"].tolist() == [3, 3, 4]
    # a: no toggles, enabled 11-01 -> on at every end. b: on 11-10, off 11-12, on 11-20. c: never. e: no toggles,
    # enabled 11-25, not before the third end (exclusive).
    assert out["enrolled"].tolist() == [2, 1, 2]
    assert out["coverage"].tolist()[:2] == [0.6667, 0.3333] and out["coverage"].tolist()[2] == 0.5
    assert out["verified_share"].tolist()[0] == 0.25 and math.isnan(out["verified_share"].tolist()[1])


def test_empty_organisation() -> None:
    empty = members().iloc[0:0]
    out = compute.coverage_by_role(empty)
    assert out["members"].sum() == 0 and out["coverage"].isna().all()
    activity = compute.activity(
        empty,
        pd.DataFrame(
            columns=[
                "user_id",
                "signed_in",
                "verified",
                "unverified",
                "failed_password",
                "failed_2fa",
                "backup_codes_used",
            ]
        ),
        pd.DataFrame(columns=["user_id", "lockouts"]),
    )
    s = compute.summary(empty, activity)
    assert (s["members"], s["coverage_pct"], s["verified_pct"]) == (0, None, None)

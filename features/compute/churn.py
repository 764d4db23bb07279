"""Churn features: purchase recency, frequency and spend in windows, tenure, inter-purchase time,
activity trends, sessions, abandoned carts and refunds, at each snapshot."""

from __future__ import annotations

import pandas as pd

from features.compute.workspace import (
    EventsInput,
    SnapshotsInput,
    Workspace,
    age_days,
    conform,
    open_workspace,
)
from features.schema import CHURN_FEATURES

__all__ = ["churn_features", "churn_from"]

_COUNTS = [
    "purchases_7d",
    "purchases_30d",
    "purchases_90d",
    "purchases_365d",
    "spend_7d",
    "spend_30d",
    "spend_90d",
    "spend_365d",
    "sessions_7d",
    "sessions_30d",
    "cart_abandons_30d",
    "cart_abandons_90d",
    "refunds_90d",
    "refunds_365d",
    "refund_amount_365d",
]


def churn_features(
    events: EventsInput, snapshots: SnapshotsInput, customers: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The churn view's table: one row per (customer, snapshot) of the scoring population."""
    with open_workspace(events, snapshots, customers) as ws:
        return churn_from(ws)


def churn_from(ws: Workspace) -> pd.DataFrame:
    """The churn view's table computed in an open workspace."""
    window, purchases, last = ws.window_stats(), ws.purchase_stats(), ws.last_seen()
    counts = ",\n           ".join(f"coalesce(w.{c}, 0) AS {c}" for c in _COUNTS)
    # A signup date from the profile only counts once it has happened: profiles are current
    # state, and a snapshot before the signup must not know about it.
    signup = "CASE WHEN pr.signup_at <= p.snapshot_ts THEN pr.signup_at END"
    return conform(
        ws.df(f"""
        SELECT p.customer_id, p.snapshot_ts AS event_timestamp,
           {age_days("ps.last_purchase_ts", "p.snapshot_ts")} AS recency_days,
           {counts},
           {age_days(f"least(p.first_event_ts, {signup})", "p.snapshot_ts")} AS tenure_days,
           ps.ipt_mean_days, ps.ipt_std_days,
           {age_days("l.last_session_ts", "p.snapshot_ts")} AS days_since_last_session,
           -- +1 on both sides: no activity in either window reads as 1 (no change).
           (coalesce(w.sessions_30d, 0) + 1.0) / (coalesce(w.sessions_prev_30d, 0) + 1.0)
               AS session_trend_30d,
           (coalesce(w.purchases_90d, 0) + 1.0)
               / (coalesce(w.purchases_180d, 0) - coalesce(w.purchases_90d, 0) + 1.0)
               AS purchase_trend_90d
        FROM population p
        LEFT JOIN {window} w ON w.customer_id = p.customer_id AND w.snapshot_ts = p.snapshot_ts
        LEFT JOIN {purchases} ps
               ON ps.customer_id = p.customer_id AND ps.snapshot_ts = p.snapshot_ts
        LEFT JOIN {last} l ON l.customer_id = p.customer_id AND l.snapshot_ts = p.snapshot_ts
        LEFT JOIN profiles pr ON pr.customer_id = p.customer_id
        """),
        CHURN_FEATURES,
    )

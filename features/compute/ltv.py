"""LTV features: purchase totals, order values, spend trend, and the BG/NBD and Gamma-Gamma
summaries (x, t_x, T, mean repeat spend) at each snapshot.

The BG/NBD summaries count purchase *days* (UTC), as the model wants repeat transactions, not
split orders: x = distinct purchase days − 1, t_x = days from the first to the last purchase day,
T (`bgnbd_age`) = days from the start of the first purchase day to the snapshot, so t_x <= T.
The spend trend is (last 90 d − the 90 d before) / (their sum): in [−1, 1], 0 without spend,
and free of the currency's scale, unlike a ratio with a pseudo-count.
A customer with no purchase at or before the snapshot has x = 0 and null t_x, T and monetary
value: the models do not apply before the first purchase.
"""

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
from features.schema import LTV_FEATURES

__all__ = ["ltv_features", "ltv_from"]


def ltv_features(
    events: EventsInput, snapshots: SnapshotsInput, customers: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The LTV view's table: one row per (customer, snapshot) of the scoring population."""
    with open_workspace(events, snapshots, customers) as ws:
        return ltv_from(ws)


def ltv_from(ws: Workspace) -> pd.DataFrame:
    """The LTV view's table computed in an open workspace."""
    window, purchases = ws.window_stats(), ws.purchase_stats()
    return conform(
        ws.df(f"""
        SELECT p.customer_id, p.snapshot_ts AS event_timestamp,
           coalesce(ps.purchases_total, 0) AS purchases_total,
           coalesce(ps.spend_total, 0) AS spend_total,
           ps.spend_total / ps.purchases_total AS avg_order_value,
           ps.max_order_value,
           {_normalised_difference("coalesce(w.spend_90d, 0)", "coalesce(w.spend_180d, 0) - coalesce(w.spend_90d, 0)")}
               AS spend_trend_90d,
           coalesce(ps.bgnbd_x, 0) AS bgnbd_x,
           {age_days("ps.first_day", "ps.last_day")} AS bgnbd_t_x,
           {age_days("ps.first_day", "p.snapshot_ts")} AS bgnbd_age,
           ps.repeat_day_spend / nullif(ps.bgnbd_x, 0) AS gg_monetary
        FROM population p
        LEFT JOIN {window} w ON w.customer_id = p.customer_id AND w.snapshot_ts = p.snapshot_ts
        LEFT JOIN {purchases} ps
               ON ps.customer_id = p.customer_id AND ps.snapshot_ts = p.snapshot_ts
        """),
        LTV_FEATURES,
    )


def _normalised_difference(recent: str, before: str) -> str:
    return f"coalesce(({recent} - ({before})) / nullif({recent} + ({before}), 0), 0.0)"

"""Labels at snapshot t, from the events in (t, t + H] — the future the features must not see.

- churn: ``churned`` = 1 when the customer makes no purchase in (t, t + H], H = 90 days by
  default;
- ltv: ``future_spend`` = the purchase totals in (t, t + H], gross: refunds are not deducted,
  because the BG/NBD × Gamma-Gamma baseline predicts gross transaction value and a refund in the
  window may belong to a purchase made before t. ``future_refunds`` carries the refund amounts
  for anyone who wants the net;
- engagement: ``engaged`` = 1 when the customer opens or clicks any email in (t, t + 14 days];
  ``future_sends`` tells whether anything was sent to open.

Rows cover the same population as the features (customers with an event at or before t). A
label is only valid when the data covers t + H: see `complete_label_snapshots`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

import pandas as pd

from features.compute.workspace import (
    EMAIL_CLICKED,
    EMAIL_OPENED,
    EMAIL_SENT,
    PURCHASE,
    REFUND,
    EventsInput,
    SnapshotsInput,
    Workspace,
    as_snapshots,
    open_workspace,
)
from features.schema import ENTITY_KEY, TIMESTAMP_COLUMN

__all__ = [
    "CHURN_HORIZON",
    "ENGAGEMENT_HORIZON",
    "LTV_HORIZON",
    "churn_labels",
    "complete_label_snapshots",
    "compute_labels",
    "engagement_labels",
    "ltv_labels",
]

CHURN_HORIZON: Final = timedelta(days=90)
LTV_HORIZON: Final = timedelta(days=90)
ENGAGEMENT_HORIZON: Final = timedelta(days=14)


def compute_labels(
    events: EventsInput,
    snapshots: SnapshotsInput,
    *,
    churn_horizon: timedelta = CHURN_HORIZON,
    ltv_horizon: timedelta = LTV_HORIZON,
    engagement_horizon: timedelta = ENGAGEMENT_HORIZON,
) -> dict[str, pd.DataFrame]:
    """Every model's labels by model name, sharing one pass over the events per horizon."""
    with open_workspace(events, snapshots) as ws:
        future = {h: _future(ws, h) for h in {churn_horizon, ltv_horizon, engagement_horizon}}
    return {
        "churn": _churn(future[churn_horizon]),
        "ltv": _ltv(future[ltv_horizon]),
        "engagement": _engagement(future[engagement_horizon]),
    }


def churn_labels(
    events: EventsInput, snapshots: SnapshotsInput, horizon: timedelta = CHURN_HORIZON
) -> pd.DataFrame:
    """customer_id, event_timestamp, churned (0/1), future_purchases."""
    with open_workspace(events, snapshots) as ws:
        return _churn(_future(ws, horizon))


def ltv_labels(
    events: EventsInput, snapshots: SnapshotsInput, horizon: timedelta = LTV_HORIZON
) -> pd.DataFrame:
    """customer_id, event_timestamp, future_spend (gross), future_refunds, future_purchases."""
    with open_workspace(events, snapshots) as ws:
        return _ltv(_future(ws, horizon))


def engagement_labels(
    events: EventsInput, snapshots: SnapshotsInput, horizon: timedelta = ENGAGEMENT_HORIZON
) -> pd.DataFrame:
    """customer_id, event_timestamp, engaged (0/1: any open or click), future_sends."""
    with open_workspace(events, snapshots) as ws:
        return _engagement(_future(ws, horizon))


def complete_label_snapshots(
    snapshots: SnapshotsInput, covered_until: datetime | pd.Timestamp, horizon: timedelta
) -> list[pd.Timestamp]:
    """The snapshots whose label window (t, t + horizon] ends by `covered_until`.

    `covered_until` is the time up to which the event data is complete — for a simulation its
    end, for the lake the end of the last fully ingested day (its latest event is a lower bound).
    """
    covered = pd.Timestamp(covered_until)
    covered = covered.tz_localize("UTC") if covered.tz is None else covered.tz_convert("UTC")
    return [t for t in as_snapshots(snapshots) if t + horizon <= covered]


def _churn(future: pd.DataFrame) -> pd.DataFrame:
    churned = (future["future_purchases"] == 0).astype("int64")
    return future.assign(churned=churned)[[*_KEYS, "churned", "future_purchases"]]


def _ltv(future: pd.DataFrame) -> pd.DataFrame:
    return future[[*_KEYS, "future_spend", "future_refunds", "future_purchases"]]


def _engagement(future: pd.DataFrame) -> pd.DataFrame:
    engaged = (future["future_opens_or_clicks"] > 0).astype("int64")
    return future.assign(engaged=engaged)[[*_KEYS, "engaged", "future_sends"]]


_KEYS = [ENTITY_KEY, TIMESTAMP_COLUMN]


def _future(ws: Workspace, horizon: timedelta) -> pd.DataFrame:
    """Per (customer, snapshot): purchases, spend, refunds, sends, opens/clicks in (t, t + H]."""
    if horizon <= timedelta(0):
        raise ValueError(f"the label horizon must be positive (got {horizon})")
    table = ws.con.execute(
        f"""
        SELECT p.customer_id AS {ENTITY_KEY}, p.snapshot_ts AS {TIMESTAMP_COLUMN},
           count(e.ts) FILTER (e.event_type = '{PURCHASE}') AS future_purchases,
           coalesce(sum(e.amount) FILTER (e.event_type = '{PURCHASE}'), 0) AS future_spend,
           coalesce(sum(e.amount) FILTER (e.event_type = '{REFUND}'), 0) AS future_refunds,
           count(e.ts) FILTER (e.event_type = '{EMAIL_SENT}') AS future_sends,
           count(e.ts) FILTER (e.event_type IN ('{EMAIL_OPENED}', '{EMAIL_CLICKED}'))
               AS future_opens_or_clicks
        FROM population p
        LEFT JOIN events e
          ON e.customer_id = p.customer_id
         AND e.ts > p.snapshot_ts
         AND e.ts <= p.snapshot_ts + to_microseconds($horizon_us)
        GROUP BY ALL
        """,
        {"horizon_us": horizon // timedelta(microseconds=1)},
    ).df()
    table[TIMESTAMP_COLUMN] = pd.to_datetime(table[TIMESTAMP_COLUMN], utc=True).dt.as_unit("us")
    return table.sort_values([TIMESTAMP_COLUMN, ENTITY_KEY], ignore_index=True)

"""Engagement features: email sends, opens and clicks in windows and time-decayed, smoothed
open and click rates, fatigue, and the customer's preferred local send hour, at each snapshot.

Rates are per email sent and shrunk towards a fixed prior, ``(events + m·prior) / (sends + m)``
with m = `RATE_PRIOR_SENDS`, so that a customer with two sends and one open does not read as a
50 % opener; a fixed prior (not the population's rate) keeps each customer's features a function
of their own events only, so that any subset of customers can be computed on its own. Opens of
emails sent before a window can fall inside it, so rates are capped at 1.

The preferred send hour is the local hour (profile time zone; UTC when the profile has none or
DuckDB does not know it) with most opens in the last 365 days, ties going to the earlier hour,
and `UNKNOWN_HOUR` (-1) without opens.
"""

from __future__ import annotations

from typing import Final

import pandas as pd

from features.compute.workspace import (
    DEFAULT_HALF_LIFE_DAYS,
    EMAIL_OPENED,
    LONGEST_WINDOW_DAYS,
    EventsInput,
    SnapshotsInput,
    Workspace,
    age_days,
    conform,
    open_workspace,
)
from features.schema import ENGAGEMENT_FEATURES, UNKNOWN_HOUR

__all__ = [
    "CLICK_RATE_PRIOR",
    "OPEN_RATE_PRIOR",
    "RATE_PRIOR_SENDS",
    "engagement_features",
    "engagement_from",
]

RATE_PRIOR_SENDS: Final = 10.0
OPEN_RATE_PRIOR: Final = 0.2  # typical marketing-email open and click rates per send
CLICK_RATE_PRIOR: Final = 0.03

_COUNTS = [
    "emails_sent_7d",
    "emails_sent_30d",
    "emails_sent_90d",
    "emails_opened_30d",
    "emails_opened_90d",
    "emails_clicked_30d",
    "emails_clicked_90d",
    "emails_bounced_90d",
    "emails_sent_decayed",
    "emails_opened_decayed",
    "emails_clicked_decayed",
]


def engagement_features(
    events: EventsInput,
    snapshots: SnapshotsInput,
    customers: pd.DataFrame | None = None,
    *,
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
) -> pd.DataFrame:
    """The engagement view's table: one row per (customer, snapshot) of the scoring population."""
    with open_workspace(events, snapshots, customers, half_life_days=half_life_days) as ws:
        return engagement_from(ws)


def engagement_from(ws: Workspace) -> pd.DataFrame:
    """The engagement view's table computed in an open workspace."""
    window, last = ws.window_stats(), ws.last_seen()
    counts = ",\n           ".join(f"coalesce(w.{c}, 0) AS {c}" for c in _COUNTS)
    return conform(
        ws.df(f"""
        WITH {_PREFERRED_HOUR_CTE}
        SELECT p.customer_id, p.snapshot_ts AS event_timestamp,
           {counts},
           {_rate("w.emails_opened_90d", "w.emails_sent_90d", OPEN_RATE_PRIOR)}
               AS email_open_rate_90d,
           {_rate("w.emails_clicked_90d", "w.emails_sent_90d", CLICK_RATE_PRIOR)}
               AS email_click_rate_90d,
           {_rate("w.emails_opened_decayed", "w.emails_sent_decayed", OPEN_RATE_PRIOR)}
               AS email_open_rate_decayed,
           {age_days("l.last_open_ts", "p.snapshot_ts")} AS days_since_last_open,
           {age_days("l.last_email_ts", "p.snapshot_ts")} AS days_since_last_email,
           (l.last_unsubscribe_ts IS NOT NULL)::BIGINT AS email_unsubscribed,
           coalesce(h.local_hour, {UNKNOWN_HOUR}) AS preferred_send_hour,
           coalesce(h.opens, 0) AS preferred_send_hour_opens
        FROM population p
        LEFT JOIN {window} w ON w.customer_id = p.customer_id AND w.snapshot_ts = p.snapshot_ts
        LEFT JOIN {last} l ON l.customer_id = p.customer_id AND l.snapshot_ts = p.snapshot_ts
        LEFT JOIN preferred_hour h
               ON h.customer_id = p.customer_id AND h.snapshot_ts = p.snapshot_ts
        """),
        ENGAGEMENT_FEATURES,
    )


def _rate(events: str, sends: str, prior: float) -> str:
    m = RATE_PRIOR_SENDS
    return f"least(1.0, (coalesce({events}, 0) + {m * prior!r}) / (coalesce({sends}, 0) + {m!r}))"


_PREFERRED_HOUR_CTE = f"""
opens_by_hour AS (
    SELECT e.customer_id, s.snapshot_ts,
           hour(timezone(coalesce(pr.timezone, 'UTC'), e.ts)) AS local_hour,
           count(*) AS opens
    FROM events e
    JOIN snapshots s
      ON e.ts <= s.snapshot_ts AND e.ts > s.snapshot_ts - INTERVAL {LONGEST_WINDOW_DAYS} DAY
    LEFT JOIN profiles pr ON pr.customer_id = e.customer_id
    WHERE e.event_type = '{EMAIL_OPENED}'
    GROUP BY ALL
),
preferred_hour AS (
    SELECT customer_id, snapshot_ts, local_hour, opens
    FROM opens_by_hour
    QUALIFY row_number() OVER (
        PARTITION BY customer_id, snapshot_ts ORDER BY opens DESC, local_hour
    ) = 1
)"""

"""Slow, obvious pandas versions of the features and labels of one customer at one snapshot,
to check the vectorised SQL against."""

from __future__ import annotations

import math
from collections import Counter
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from features.compute.engagement import CLICK_RATE_PRIOR, OPEN_RATE_PRIOR, RATE_PRIOR_SENDS

DAY = pd.Timedelta(days=1)


def history(events: pd.DataFrame, customer: str, t: pd.Timestamp) -> pd.DataFrame:
    """The customer's events at or before t."""
    mine = events[(events["customer_id"] == customer) & (events["timestamp"] <= t)]
    return mine.sort_values("timestamp")


def churn_row(
    events: pd.DataFrame, customers: pd.DataFrame, customer: str, t: pd.Timestamp
) -> dict[str, float]:
    past = history(events, customer, t)
    buys = past[past["event_type"] == "purchase_completed"]
    sessions = past[past["event_type"] == "session_start"]

    def n(kind: str, days: int, skip: int = 0) -> int:
        rows = past[past["event_type"] == kind]
        return int(
            ((rows["timestamp"] > t - days * DAY) & (rows["timestamp"] <= t - skip * DAY)).sum()
        )

    def spend(days: int) -> float:
        return float(buys.loc[buys["timestamp"] > t - days * DAY, "amount"].sum())

    signup = customers.set_index("customer_id")["signup_at"].get(customer)
    start = past["timestamp"].min()
    if signup is not None and not pd.isna(signup) and signup <= t:
        start = min(start, signup)
    gaps = buys["timestamp"].diff().dropna() / DAY
    refunds = past[past["event_type"] == "refund"]
    row = {
        "recency_days": (t - buys["timestamp"].max()) / DAY if len(buys) else math.nan,
        "tenure_days": (t - start) / DAY,
        "ipt_mean_days": gaps.mean() if len(gaps) else math.nan,
        "ipt_std_days": gaps.std() if len(gaps) > 1 else math.nan,
        "days_since_last_session": (
            (t - sessions["timestamp"].max()) / DAY if len(sessions) else math.nan
        ),
        "session_trend_30d": (n("session_start", 30) + 1) / (n("session_start", 60, 30) + 1),
        "purchase_trend_90d": (n("purchase_completed", 90) + 1)
        / (n("purchase_completed", 180, 90) + 1),
        "sessions_7d": n("session_start", 7),
        "sessions_30d": n("session_start", 30),
        "cart_abandons_30d": n("cart_abandoned", 30),
        "cart_abandons_90d": n("cart_abandoned", 90),
        "refunds_90d": n("refund", 90),
        "refunds_365d": n("refund", 365),
        "refund_amount_365d": float(
            refunds.loc[refunds["timestamp"] > t - 365 * DAY, "amount"].sum()
        ),
    }
    for days in (7, 30, 90, 365):
        row[f"purchases_{days}d"] = n("purchase_completed", days)
        row[f"spend_{days}d"] = spend(days)
    return row


def ltv_row(events: pd.DataFrame, customer: str, t: pd.Timestamp) -> dict[str, float]:
    past = history(events, customer, t)
    buys = past[past["event_type"] == "purchase_completed"]
    days = buys.groupby(buys["timestamp"].dt.floor("D"))["amount"].sum().sort_index()
    recent = buys.loc[buys["timestamp"] > t - 90 * DAY, "amount"].sum()
    before = buys.loc[
        (buys["timestamp"] > t - 180 * DAY) & (buys["timestamp"] <= t - 90 * DAY), "amount"
    ].sum()
    x = max(len(days) - 1, 0)
    return {
        "purchases_total": len(buys),
        "spend_total": float(buys["amount"].sum()),
        "avg_order_value": buys["amount"].mean() if len(buys) else math.nan,
        "max_order_value": buys["amount"].max() if len(buys) else math.nan,
        "spend_trend_90d": (recent - before) / (recent + before) if recent + before else 0.0,
        "bgnbd_x": x,
        "bgnbd_t_x": (days.index[-1] - days.index[0]) / DAY if len(days) else math.nan,
        "bgnbd_age": (t - days.index[0]) / DAY if len(days) else math.nan,
        "gg_monetary": days.iloc[1:].mean() if x else math.nan,
    }


def engagement_row(
    events: pd.DataFrame,
    customers: pd.DataFrame,
    customer: str,
    t: pd.Timestamp,
    half_life_days: float,
) -> dict[str, float]:
    past = history(events, customer, t)
    year = past[past["timestamp"] > t - 365 * DAY]
    age = (t - year["timestamp"]) / DAY

    def n(kind: str, days: int) -> int:
        return int(((year["event_type"] == kind) & (age < days)).sum())

    def decayed(kind: str) -> float:
        return float(np.power(0.5, age[year["event_type"] == kind] / half_life_days).sum())

    def rate(events_: float, sends: float, prior: float) -> float:
        return min(1.0, (events_ + RATE_PRIOR_SENDS * prior) / (sends + RATE_PRIOR_SENDS))

    def since(kind: str) -> float:
        rows = past[past["event_type"] == kind]
        return (t - rows["timestamp"].max()) / DAY if len(rows) else math.nan

    zone = customers.set_index("customer_id")["timezone"].get(customer) or "UTC"
    opens = year.loc[year["event_type"] == "email_opened", "timestamp"]
    hours = Counter(ts.tz_convert(ZoneInfo(zone)).hour for ts in opens)
    best = min(hours, key=lambda h: (-hours[h], h)) if hours else -1
    return {
        "emails_sent_7d": n("email_sent", 7),
        "emails_sent_30d": n("email_sent", 30),
        "emails_sent_90d": n("email_sent", 90),
        "emails_opened_30d": n("email_opened", 30),
        "emails_opened_90d": n("email_opened", 90),
        "emails_clicked_30d": n("email_clicked", 30),
        "emails_clicked_90d": n("email_clicked", 90),
        "emails_bounced_90d": n("email_bounced", 90),
        "emails_sent_decayed": decayed("email_sent"),
        "emails_opened_decayed": decayed("email_opened"),
        "emails_clicked_decayed": decayed("email_clicked"),
        "email_open_rate_90d": rate(n("email_opened", 90), n("email_sent", 90), OPEN_RATE_PRIOR),
        "email_click_rate_90d": rate(n("email_clicked", 90), n("email_sent", 90), CLICK_RATE_PRIOR),
        "email_open_rate_decayed": rate(
            decayed("email_opened"), decayed("email_sent"), OPEN_RATE_PRIOR
        ),
        "days_since_last_open": since("email_opened"),
        "days_since_last_email": since("email_sent"),
        "email_unsubscribed": int((past["event_type"] == "unsubscribed").any()),
        "preferred_send_hour": best,
        "preferred_send_hour_opens": hours[best] if hours else 0,
    }


def label_row(
    events: pd.DataFrame, customer: str, t: pd.Timestamp, horizon: pd.Timedelta
) -> dict[str, float]:
    mine = events[
        (events["customer_id"] == customer)
        & (events["timestamp"] > t)
        & (events["timestamp"] <= t + horizon)
    ]
    buys = mine[mine["event_type"] == "purchase_completed"]
    return {
        "future_purchases": len(buys),
        "churned": int(len(buys) == 0),
        "future_spend": float(buys["amount"].sum()),
        "future_refunds": float(mine.loc[mine["event_type"] == "refund", "amount"].sum()),
        "future_sends": int((mine["event_type"] == "email_sent").sum()),
        "engaged": int(mine["event_type"].isin(["email_opened", "email_clicked"]).any()),
    }


def assert_row_matches(actual: pd.Series, expected: dict[str, float]) -> None:
    """Every expected value equals the computed one (NaN equal to NaN, floats to 1e-9)."""
    for name, value in expected.items():
        got = actual[name]
        if isinstance(value, float) and math.isnan(value):
            assert pd.isna(got), f"{name}: expected null, got {got}"
        else:
            assert got == pytest.approx(value, rel=1e-9, abs=1e-9), name


def sample_rows(table: pd.DataFrame, busiest_by: str, n: int = 12, seed: int = 0) -> pd.DataFrame:
    """Rows worth checking: the busiest by a column at each of two snapshots, and random ones."""
    stamps = sorted(table["event_timestamp"].unique())
    busiest = [
        table[table["event_timestamp"] == stamp].nlargest(3, busiest_by) for stamp in stamps[-2:]
    ]
    return pd.concat([*busiest, table.sample(n, random_state=seed)]).drop_duplicates(
        ["customer_id", "event_timestamp"]
    )

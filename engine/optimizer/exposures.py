"""Exposures from the execution log: who was assigned what, and what they did afterwards.

One row per (trigger, customer), from the customer's first decision with an experiment variant
(the assignment), in the contract of `engine.optimizer.analyses`: `sent` when the planned email
went out; `delivered`, `opened`, `clicked` from email events that carry the action's idempotency
key as their `message_id` (a click also proves the open, an open the delivery); `converted`
and `revenue` from the customer's purchases within the
attribution window after the triggering event — whether or not an email was sent, so that a
holdout is judged the same way as a variant.

Pure: the frames come from the store (`engine.store.exposures.load_exposures` selects them).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from engine.optimizer.labels import ALL

__all__ = ["EMAIL_STAGES", "EXPOSURE_COLUMNS", "exposures_from_log"]

# The exposure contract of engine.optimizer.analyses, in order.
EXPOSURE_COLUMNS = ("customer_id", "trigger_id", "variant", "segment", "sent", "delivered", "opened",
                    "clicked", "converted", "revenue")  # fmt: skip
EMAIL_STAGES = {
    "email_delivered": "delivered",
    "email_opened": "opened",
    "email_clicked": "clicked",
}


def exposures_from_log(
    decisions: pd.DataFrame,
    actions: pd.DataFrame,
    events: pd.DataFrame,
    *,
    attribution_window: float,
    segments: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Exposure rows from decisions (event_id, customer_id, trigger_id, variant, occurred_at),
    actions (event_id, trigger_id, idempotency_key, kind, status) and later events
    (customer_id, event_type, occurred_at, message_id, amount); times in epoch seconds."""
    assigned = decisions[decisions["variant"].notna()].sort_values("occurred_at")
    assigned = assigned.drop_duplicates(["trigger_id", "customer_id"], keep="first")
    emails = actions[actions["kind"] == "send_email"].drop_duplicates(["event_id", "trigger_id"])
    frame = assigned.merge(
        emails[["event_id", "trigger_id", "idempotency_key", "status"]],
        on=["event_id", "trigger_id"],
        how="left",
    )
    frame["sent"] = frame["status"].eq("sent")
    stage_events = events[events["event_type"].isin(EMAIL_STAGES)]
    for event_type, stage in EMAIL_STAGES.items():
        keys = set(
            stage_events.loc[stage_events["event_type"] == event_type, "message_id"].dropna()
        )
        frame[stage] = frame["sent"] & frame["idempotency_key"].isin(keys)
    # Feedback is often incomplete (a provider reports opens but no delivery; an image-blocking
    # client reports a click but no open): a later stage proves the earlier ones.
    frame["opened"] |= frame["clicked"]
    frame["delivered"] |= frame["opened"]
    frame["converted"], frame["revenue"] = _conversions(frame, events, attribution_window)
    frame["segment"] = frame["customer_id"].map(segments).fillna(ALL) if segments else ALL
    columns = list(EXPOSURE_COLUMNS)
    return frame[columns].reset_index(drop=True)


def _conversions(
    frame: pd.DataFrame, events: pd.DataFrame, window: float
) -> tuple[pd.Series, pd.Series]:
    """Whether, and for how much, each exposed customer bought within the window after exposure."""
    purchases = events.loc[
        events["event_type"] == "purchase_completed", ["customer_id", "occurred_at", "amount"]
    ]
    if frame.empty or purchases.empty:
        return pd.Series(False, index=frame.index), pd.Series(0.0, index=frame.index)
    joined = (
        frame[["customer_id", "occurred_at"]]
        .reset_index()
        .merge(
            purchases.rename(columns={"occurred_at": "bought_at"}), on="customer_id", how="inner"
        )
    )
    inside = joined[
        (joined["bought_at"] > joined["occurred_at"])
        & (joined["bought_at"] <= joined["occurred_at"] + window)
    ]
    revenue = inside.groupby("index")["amount"].sum(min_count=1).fillna(0.0)
    converted = pd.Series(False, index=frame.index)
    converted.loc[revenue.index] = True
    return converted, revenue.reindex(frame.index).fillna(0.0).astype(np.float64)

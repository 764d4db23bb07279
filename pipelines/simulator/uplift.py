"""A randomized email experiment drawn from a simulation with planted response types.

``uplift_experiment`` takes the customers who are subscribed at a decision time, computes
features that a marketer could see at that time (recency, frequency, spend, browsing, email
engagement — from the events before it, never the planted truth), assigns an email at random,
and samples each customer's conversion within the attribution window from the closed-loop
responder. The result is one row per customer, ready for ``nudge uplift backtest``, with the
oracle uplift beside it (to score the models against the truth, not as a feature).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from engine.dsl.durations import parse_duration
from pipelines.simulator.generate import Simulation
from pipelines.simulator.responder import Responder

__all__ = ["FEATURES", "uplift_experiment"]

FEATURES: Final = (
    "tenure_days",
    "recency_days",
    "purchases",
    "spend",
    "sessions_30d",
    "cart_adds_30d",
    "emails_delivered",
    "open_rate",
    "click_rate",
)
"""The observable features of the experiment table (the other columns are the arm, the outcome
and the oracle)."""

_DAY: Final = pd.Timedelta(days=1)


def uplift_experiment(
    sim: Simulation,
    *,
    at: pd.Timestamp | None = None,
    seed: int = 0,
    treated_share: float = 0.5,
    delay: timedelta | None = None,
) -> pd.DataFrame:
    """One row per subscribed customer at ``at`` (default: the simulation's end): features,
    ``treatment`` (``email`` or ``holdout``), ``converted`` (0/1) and ``oracle_uplift``.

    The email goes out ``delay`` after the decision, or (None) at each segment's planted best
    delay — as a trigger whose delay experiment has ended. Needs planted response types (``PlantedConfig.response_types``): without them every
    customer of a segment shares one effect, and there is nothing customer-level to find.
    """
    if sim.planted.response_types is None:
        raise ValueError("the simulation has no planted response types (response_types)")
    at = sim.params.end if at is None else pd.Timestamp(at)
    truth = sim.truth
    subscribed = (
        truth["consent_email"]
        & (truth["signup_at"] < at)
        & ~(truth["unsubscribed_at"] < at).fillna(False)
    )
    customers = truth.loc[subscribed, ["customer_id"]].reset_index(drop=True)
    events = sim.events.select(["customer_id", "event_type", "timestamp", "amount"])
    events = events.filter(pc.less(events["timestamp"], at.to_pydatetime())).to_pandas()
    features = _features(events, customers["customer_id"], truth.set_index("customer_id"), at)
    rng = np.random.default_rng([seed, 18])
    sent = rng.random(len(customers)) < treated_share
    responder = Responder(truth, sim.planted, sim.params.seed)
    moment = at.to_pydatetime()
    segment_of = truth.set_index("customer_id")["segment"]
    planted = sim.planted

    def delay_of(customer: str) -> timedelta:
        if delay is not None:
            return delay
        best = planted.best_delay(str(segment_of[customer]))
        return parse_duration(best) if best else planted.delays[0]

    delays = [delay_of(c) for c in customers["customer_id"]]
    converted = [
        (
            responder.respond(c, moment, "uplift_experiment", d)
            if s
            else responder.respond_without_email(c, moment)
        ).converted
        for c, s, d in zip(customers["customer_id"], sent, delays, strict=True)
    ]
    oracle = [responder.uplift(c, d) for c, d in zip(customers["customer_id"], delays, strict=True)]
    return features.assign(
        treatment=np.where(sent, "email", "holdout"),
        converted=np.asarray(converted, dtype=int),
        oracle_uplift=oracle,
    )


def _features(
    events: pd.DataFrame, ids: pd.Series, truth: pd.DataFrame, at: pd.Timestamp
) -> pd.DataFrame:
    """Recency, frequency, monetary, recent browsing and email engagement per customer."""
    by_type = (
        events.groupby(["customer_id", "event_type"], observed=True).size().unstack(fill_value=0)
    )
    recent = events[events["timestamp"] >= at - 30 * _DAY]
    recent_types = (
        recent.groupby(["customer_id", "event_type"], observed=True).size().unstack(fill_value=0)
    )
    purchases = events[events["event_type"] == "purchase_completed"]
    last = purchases.groupby("customer_id")["timestamp"].max()
    spend = purchases.groupby("customer_id")["amount"].sum()

    def count(table: pd.DataFrame, kind: str) -> pd.Series:
        return table[kind].reindex(ids, fill_value=0) if kind in table else pd.Series(0, index=ids)

    signup = truth.loc[ids, "signup_at"]
    delivered = count(by_type, "email_delivered").to_numpy(dtype=float)
    frame = pd.DataFrame(
        {
            "customer_id": ids.to_numpy(),
            "tenure_days": ((at - signup) / _DAY).to_numpy(),
            # Never bought: recency is the tenure (as long as one can have gone without).
            "recency_days": ((at - last.reindex(ids).fillna(signup)) / _DAY).to_numpy(),
            "purchases": count(by_type, "purchase_completed").to_numpy(),
            "spend": spend.reindex(ids, fill_value=0.0).to_numpy(),
            "sessions_30d": count(recent_types, "session_start").to_numpy(),
            "cart_adds_30d": count(recent_types, "cart_add").to_numpy(),
            "emails_delivered": delivered,
            "open_rate": np.divide(count(by_type, "email_opened").to_numpy(dtype=float), delivered,
                                   out=np.full(len(ids), np.nan), where=delivered > 0),
            "click_rate": np.divide(count(by_type, "email_clicked").to_numpy(dtype=float), delivered,
                                    out=np.full(len(ids), np.nan), where=delivered > 0),
        }
    )  # fmt: skip
    return frame

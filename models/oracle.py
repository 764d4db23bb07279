"""Churn probabilities from a simulation's planted truth: the yardsticks for the churn model.

The simulator draws purchases as a Poisson process with a customer's rate λ and, after each
purchase, a dropout with probability p (`pipelines.simulator`). Two oracles follow:

- `latent_churn_probability` knows whether the customer had already dropped out at t (1 if so,
  else e^(−λH)). Nothing observable reveals that state, so no model can reach its AUC; it bounds
  what the data could ever say.
- `bayes_churn_probability` knows λ and p but, like a model, only sees the purchase history up to
  t: P(dead | k ≥ 1 purchases, last one s days ago) = p / (p + (1 − p) e^(−λs)), and
  P(churn) = P(dead) + (1 − P(dead)) e^(−λH). It is the best score computable from the purchase
  history with the true parameters: the quality bar's "oracle". (Sessions and emails carry a
  little more information about dropout, so a model may come close to it, rarely above.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import NDArray

__all__ = ["bayes_churn_probability", "latent_churn_probability"]


def latent_churn_probability(
    truth: pd.DataFrame, snapshot: pd.Timestamp, horizon_days: float, customers: pd.Series
) -> NDArray[np.float64]:
    """P(no purchase in (t, t + H]) given the planted rate and the (hidden) dropout state at t."""
    rows = _truth_rows(truth, customers)
    dropped = pd.to_datetime(rows["dropout_at"], utc=True)
    dead = (dropped.notna() & (dropped <= snapshot)).to_numpy()
    rate = rows["purchase_rate_per_day"].to_numpy(dtype=float)
    return np.where(dead, 1.0, np.exp(-rate * horizon_days))


def bayes_churn_probability(
    truth: pd.DataFrame,
    purchases: pd.DataFrame,
    snapshot: pd.Timestamp,
    horizon_days: float,
    customers: pd.Series,
) -> NDArray[np.float64]:
    """P(no purchase in (t, t + H]) given the planted λ and p and the purchases up to t.

    `purchases` holds customer_id and timestamp of purchase events (any range; later ones are
    ignored).
    """
    rows = _truth_rows(truth, customers)
    seen = purchases[pd.to_datetime(purchases["timestamp"], utc=True) <= snapshot]
    history = seen.groupby("customer_id")["timestamp"].agg(["count", "max"])
    history = history.reindex(pd.Index(customers.astype(str)))
    count = history["count"].fillna(0).to_numpy()
    silent_days = (
        (snapshot - pd.to_datetime(history["max"], utc=True)).dt.total_seconds() / 86_400
    ).to_numpy()
    rate: NDArray[np.float64] = rows["purchase_rate_per_day"].to_numpy(dtype=float)
    p: NDArray[np.float64] = rows["dropout_prob"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        dead = p / (p + (1 - p) * np.exp(-rate * np.nan_to_num(silent_days)))
    # Before the first purchase nobody has dropped out: dropout follows a purchase.
    dead = np.where(count > 0, dead, 0.0)
    churn: NDArray[np.float64] = dead + (1 - dead) * np.exp(-rate * horizon_days)
    return churn


def _truth_rows(truth: pd.DataFrame, customers: pd.Series) -> pd.DataFrame:
    indexed = truth.set_index("customer_id")
    missing = pd.Index(customers.astype(str)).difference(indexed.index)
    if len(missing):
        raise ValueError(f"{len(missing)} customer(s) have no planted truth, e.g. {missing[0]}")
    return indexed.loc[customers.astype(str).to_numpy()]

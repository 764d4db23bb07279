"""The churn oracles from planted truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.oracle import bayes_churn_probability, latent_churn_probability

T = pd.Timestamp("2025-06-01", tz="UTC")
TRUTH = pd.DataFrame(
    {
        "customer_id": ["dead", "alive", "new", "quiet"],
        "purchase_rate_per_day": [0.05, 0.05, 0.05, 0.05],
        "dropout_prob": [0.3, 0.3, 0.3, 0.3],
        "dropout_at": [pd.Timestamp("2025-05-01", tz="UTC"), pd.NaT, pd.NaT, pd.NaT],
    }
)
PURCHASES = pd.DataFrame(
    {
        "customer_id": ["dead", "alive", "quiet", "alive"],
        "timestamp": pd.to_datetime(
            ["2025-05-01", "2025-05-31", "2025-01-01", "2025-07-01"], utc=True
        ),
    }
)
IDS = pd.Series(["dead", "alive", "new", "quiet"])


def test_the_latent_oracle_knows_who_dropped_out():
    p = latent_churn_probability(TRUTH, T, 30, IDS)
    assert p[0] == 1.0
    assert p[1] == pytest.approx(np.exp(-0.05 * 30))


def test_the_bayes_oracle_grows_with_silence_and_ignores_the_future():
    p = bayes_churn_probability(TRUTH, PURCHASES, T, 30, IDS)
    silent_if_alive = np.exp(-0.05 * 30)
    assert p[2] == pytest.approx(silent_if_alive)  # no purchase yet: cannot have dropped out
    # One day of silence barely moves P(dead) from p; five months make it near certain.
    dead_alive = 0.3 / (0.3 + 0.7 * np.exp(-0.05 * 1))
    assert p[1] == pytest.approx(dead_alive + (1 - dead_alive) * silent_if_alive)
    assert p[3] > p[0] > p[1] > p[2]
    with pytest.raises(ValueError, match="no planted truth"):
        bayes_churn_probability(TRUTH, PURCHASES, T, 30, pd.Series(["stranger"]))

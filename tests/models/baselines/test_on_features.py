"""The baselines on feature-table rows: inputs mapped as documented, outputs that make sense."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.baselines.on_features import (
    BGNBDChurn,
    BGNBDSpend,
    DecayedOpenRate,
    HistoricalSpend,
    RFMChurn,
    make_baselines,
)
from models.specs import BASELINES


def _customers(n: int = 2_000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Feature rows of a BG/NBD-like population; y = churned (no purchase in 90 days)."""
    rng = np.random.default_rng(seed)
    rate = rng.gamma(0.8, 1 / 20, size=n)  # purchases per day
    age = rng.uniform(60, 365, size=n)
    x = rng.poisson(rate * age)
    t_x = np.where(x > 0, age * rng.beta(x + 1, 1.5), 0.0)
    recency = age - t_x
    order = rng.gamma(3, 20, size=n)
    frame = pd.DataFrame(
        {
            "event_timestamp": pd.Timestamp("2025-06-01", tz="UTC"),
            "recency_days": recency,
            "tenure_days": age + rng.uniform(0, 20, size=n),
            "purchases_total": (x + 1).astype("int64"),
            "spend_total": (x + 1) * order,
            "avg_order_value": order,
            "bgnbd_x": x.astype("int64"),
            "bgnbd_t_x": t_x,
            "bgnbd_age": age,
            "gg_monetary": np.where(x > 0, order, np.nan),
            "emails_sent_decayed": rng.uniform(0, 8, size=n),
        }
    )
    frame["emails_opened_decayed"] = frame["emails_sent_decayed"] * rng.beta(2, 3, size=n)
    # Silent for long relative to the own rate: likely to stay silent.
    y = (rng.random(n) < np.exp(-rate * 90) + 0.3 * (recency > 120)).astype(int)
    return frame, y


def test_make_baselines_names_match_the_specs():
    for model, names in BASELINES.items():
        assert tuple(make_baselines(model, 90)) == names
    with pytest.raises(ValueError, match="unknown model"):
        make_baselines("upsell", 90)


def test_churn_baselines_give_probabilities_that_rise_with_silence():
    frame, y = _customers()
    for baseline in (RFMChurn(), BGNBDChurn(90)):
        p = baseline.fit(frame, y).predict_proba(frame)[:, 1]
        assert p.shape == (len(frame),) and ((p >= 0) & (p <= 1)).all()
        assert np.corrcoef(p, frame["recency_days"])[0, 1] > 0.2
    # A customer who never bought has no BG/NBD clock: he is scored from his tenure, x = 0.
    never = frame.head(1).assign(
        bgnbd_x=0, bgnbd_t_x=np.nan, bgnbd_age=np.nan, recency_days=np.nan, gg_monetary=np.nan
    )
    assert np.isfinite(BGNBDChurn(90).fit(frame).predict_proba(never)).all()
    assert np.isfinite(RFMChurn().fit(frame, y).predict_proba(never)).all()


def test_spend_baselines_scale_with_the_horizon():
    frame, _ = _customers()
    short = BGNBDSpend(30).fit(frame).predict(frame)
    long = BGNBDSpend(90).fit(frame).predict(frame)
    assert (short >= 0).all() and np.isfinite(short).all()
    assert 1.5 < long.sum() / short.sum() < 3.0  # fewer than 3×: some customers die meanwhile
    # Serving passes NumPy columns by name instead of a frame: the same numbers, never-buyers too.
    mixed = pd.concat([frame, frame.head(3).assign(bgnbd_x=0, bgnbd_t_x=np.nan, bgnbd_age=np.nan,
                                                   gg_monetary=np.nan)])  # fmt: skip
    model = BGNBDSpend(90).fit(frame)
    columns = {name: mixed[name].to_numpy(dtype=float) for name in mixed.columns
               if pd.api.types.is_numeric_dtype(mixed[name])}  # fmt: skip
    assert np.array_equal(model.predict(columns), model.predict(mixed))
    historical = HistoricalSpend(90).fit(frame).predict(frame)
    expected = frame["spend_total"] / frame["tenure_days"] * 90
    assert np.allclose(historical, expected)


def test_the_open_rate_baseline_ranks_by_the_shrunk_decayed_rate():
    frame, _ = _customers()
    rate = frame["emails_opened_decayed"] / frame["emails_sent_decayed"]
    y = (np.random.default_rng(1).random(len(frame)) < rate.clip(0, 1)).astype(int)
    model = DecayedOpenRate().fit(frame, y)
    prior = frame["emails_opened_decayed"].sum() / frame["emails_sent_decayed"].sum()
    assert model.prior_rate_ == pytest.approx(prior)
    assert model.open_rate(frame.assign(emails_sent_decayed=0.0, emails_opened_decayed=0.0)) == (
        pytest.approx(prior)
    )
    p = model.predict_proba(frame)[:, 1]
    order = np.argsort(model.open_rate(frame))
    assert (np.diff(p[order]) >= -1e-12).all()  # Platt scaling keeps the ranking

"""BG/NBD and Gamma-Gamma: the published CDNOW fits, hand-made summaries, simulated recovery."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import quad
from scipy.special import beta, betaln, gamma, hyp2f1
from scipy.stats import chi2
from sklearn.exceptions import NotFittedError

from models.baselines.bgnbd import (
    BetaGeoModel,
    GammaGammaModel,
    expected_spend,
    summarize_transactions,
)

DATASETS = Path(metadata.distribution("lifetimes").locate_file("lifetimes/datasets"))
# Fader, Hardie & Lee (2005) on the CDNOW sample, 39-week calibration period.
PUBLISHED_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PUBLISHED_LL = -9582.4
PUBLISHED_GG = {"p": 6.25, "q": 3.74, "gamma": 15.44}


@pytest.fixture(scope="module")
def cdnow_transactions(cdnow_sample: Path) -> pd.DataFrame:
    frame = pd.read_csv(
        cdnow_sample,
        sep=r"\s+",
        header=None,
        names=["master_id", "customer_id", "date", "units", "dollars"],
        dtype={"date": str},
    )
    return frame.assign(date=pd.to_datetime(frame["date"], format="%Y%m%d"))


@pytest.fixture(scope="module")
def cdnow_summary(cdnow_transactions: pd.DataFrame) -> pd.DataFrame:
    return summarize_transactions(
        cdnow_transactions,
        customer_col="customer_id",
        time_col="date",
        amount_col="dollars",
        observation_end="1997-09-30",
    )


@pytest.fixture(scope="module")
def cdnow_bgnbd(cdnow_summary: pd.DataFrame) -> BetaGeoModel:
    return BetaGeoModel().fit(
        cdnow_summary["frequency"], cdnow_summary["recency"], cdnow_summary["T"]
    )


def published_bgnbd() -> BetaGeoModel:
    model = BetaGeoModel()
    model.params_ = dict(PUBLISHED_BGNBD)
    return model


# -- the published CDNOW results ------------------------------------------------------------------


def test_cdnow_summary_matches_the_reference_summary(cdnow_summary):
    reference = pd.read_csv(
        DATASETS / "cdnow_customers_summary_with_transactions.csv", index_col="ID"
    )
    assert len(cdnow_summary) == 2_357
    assert cdnow_summary.index.equals(reference.index)
    assert (cdnow_summary["frequency"] == reference["x"]).all()
    # The reference rounds to 2 decimals.
    half_cent = 0.005 + 1e-9
    assert np.abs(cdnow_summary["recency"] - reference["t_x"]).max() <= half_cent
    assert np.abs(cdnow_summary["T"] - reference["T"]).max() <= half_cent
    assert np.abs(cdnow_summary["monetary_value"] - reference["zbar"]).max() <= half_cent
    assert (cdnow_summary["frequency"] > 0).sum() == 946


def test_bgnbd_reproduces_the_published_cdnow_fit(cdnow_bgnbd):
    for name, published in PUBLISHED_BGNBD.items():
        assert cdnow_bgnbd.params_[name] == pytest.approx(published, rel=0.01), name
    assert cdnow_bgnbd.log_likelihood_ == pytest.approx(PUBLISHED_LL, abs=0.1)
    assert cdnow_bgnbd.n_customers_ == 2_357


def test_gamma_gamma_reproduces_the_published_cdnow_fit(cdnow_summary):
    model = GammaGammaModel().fit(cdnow_summary["frequency"], cdnow_summary["monetary_value"])
    assert model.n_customers_ == 946
    for name, published in PUBLISHED_GG.items():
        assert model.params_[name] == pytest.approx(published, rel=0.01), name


def test_log_likelihood_equals_the_paper_formula_evaluated_directly(cdnow_summary, cdnow_bgnbd):
    r, alpha, a, b = (cdnow_bgnbd.params_[k] for k in ("r", "alpha", "a", "b"))
    x, t_x, T = (cdnow_summary[c].to_numpy(dtype=float) for c in ("frequency", "recency", "T"))
    # Eq. 6 of FHL 2005 as printed, without logs (fine for CDNOW's small x).
    head = gamma(r + x) * alpha**r / gamma(r)
    likelihood = beta(a, b + x) / beta(a, b) * head / (alpha + T) ** (r + x) + (x > 0) * beta(
        a + 1, b + x - 1
    ) / beta(a, b) * head / (alpha + t_x) ** (r + x)
    assert cdnow_bgnbd.log_likelihood_ == pytest.approx(np.log(likelihood).sum(), rel=1e-10)
    assert cdnow_bgnbd.log_likelihood(x, t_x, T) == cdnow_bgnbd.log_likelihood_


def test_conditional_expectation_matches_the_papers_worked_example():
    # FHL 2005, section 5: x = 2, t_x = 30.43, T = 38.86 → 1.226 purchases in the next 39 weeks.
    assert published_bgnbd().expected_purchases(39, 2, 30.43, 38.86)[0] == pytest.approx(
        1.226, abs=0.0005
    )


def test_conditional_expectation_equals_eq_10_as_printed(cdnow_summary, cdnow_bgnbd):
    r, alpha, a, b = (cdnow_bgnbd.params_[k] for k in ("r", "alpha", "a", "b"))
    x, t_x, T = (cdnow_summary[c].to_numpy(dtype=float) for c in ("frequency", "recency", "T"))
    for t in (1.0, 39.0, 78.0):
        z = t / (alpha + T + t)
        printed = (
            (a + b + x - 1) / (a - 1)
            * (1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp2f1(r + x, b + x, a + b + x - 1, z))
            / (1 + (x > 0) * a / (b + x - 1 + (x == 0)) * ((alpha + T) / (alpha + t_x)) ** (r + x))
        )  # fmt: skip
        np.testing.assert_allclose(cdnow_bgnbd.expected_purchases(t, x, t_x, T), printed, rtol=1e-8)


@pytest.mark.parametrize("x", [0, 1, 3, 50, 1_000, 5_000, 100_000])
def test_conditional_expectation_matches_quadrature_even_for_heavy_buyers(x):
    # Independent of hyp2f1: given alive, λ ~ Gamma(r+x, α+T) and p ~ Beta(a, b+x) a posteriori,
    # and E[Y(t) | λ, p] = (1 - e^(-λpt))/p; integrating λ out leaves a 1-D integral over p
    # taken here over u = log p. Eq. 10 as printed gives nan from x ≈ 1,100 (inf · 0).
    r, alpha, a, b = PUBLISHED_BGNBD.values()
    T = t_x = 38.86
    t = 39.0

    def integrand(u: float) -> float:
        log_density = a * u + (b + x - 1) * np.log1p(-np.exp(u)) - betaln(a, b + x)
        buys = -np.expm1((r + x) * (np.log(alpha + T) - np.log(alpha + T + np.exp(u) * t)))
        return np.exp(log_density - u) * buys

    mode = np.log(a / (a + b + x))
    if_alive = (
        quad(integrand, -60, mode, limit=500)[0] + quad(integrand, mode, -1e-12, limit=500)[0]
    )
    model = published_bgnbd()
    alive = model.probability_alive(x, t_x, T)[0]
    assert model.expected_purchases(t, x, t_x, T)[0] == pytest.approx(if_alive * alive, rel=1e-6)


def test_probability_alive_falls_with_time_since_the_last_purchase():
    alive = published_bgnbd().probability_alive(5, [38.0, 30.0, 20.0, 10.0, 1.0], 38.86)
    assert np.all(np.diff(alive) < 0)
    # 1,000 purchases in 38 weeks, then 29 silent weeks: gone, and nothing more to expect.
    assert published_bgnbd().expected_purchases(39, 1_000, 10.0, 38.86)[0] < 1e-6


def test_probability_alive_is_one_without_repeat_purchases_and_below_one_otherwise():
    model = published_bgnbd()
    alive = model.probability_alive([0, 1, 2], [0.0, 1.71, 30.43], 38.86)
    assert alive[0] == 1.0
    assert 0 < alive[1] < alive[2] < 1
    # Closed form for x = 1: 1 / (1 + a/b ((α+T)/(α+t_x))^(r+1)).
    r, alpha, a, b = PUBLISHED_BGNBD.values()
    assert alive[1] == pytest.approx(
        1 / (1 + a / b * ((alpha + 38.86) / (alpha + 1.71)) ** (r + 1))
    )


def test_expected_spend_is_purchases_times_shrunk_value(cdnow_summary, cdnow_bgnbd):
    gg = GammaGammaModel().fit(cdnow_summary["frequency"], cdnow_summary["monetary_value"])
    p, q, g = gg.params_.values()
    x, t_x, T, value = (cdnow_summary[c] for c in ("frequency", "recency", "T", "monetary_value"))
    spend = expected_spend(cdnow_bgnbd, gg, 39.0, x, t_x, T, value)
    purchases = cdnow_bgnbd.expected_purchases(39.0, x, t_x, T)
    mean_value = p * g / (q - 1)
    assert gg.population_mean_value_ == pytest.approx(mean_value)
    new = (x == 0).to_numpy()
    np.testing.assert_allclose(spend[new], purchases[new] * mean_value)
    shrunk = gg.conditional_expected_average_value(x, value)[~new]
    low, high = np.minimum(value[~new], mean_value), np.maximum(value[~new], mean_value)
    assert np.all((low - 1e-9 <= shrunk) & (shrunk <= high + 1e-9))
    np.testing.assert_allclose(spend[~new], purchases[~new] * shrunk)


# -- summaries on hand-made logs ------------------------------------------------------------------


def hand_log() -> pd.DataFrame:
    rows = [
        ("a", "2024-01-01 09:00", 10.0),
        ("a", "2024-01-01 18:00", 5.0),  # same day as the first purchase: part of it
        ("a", "2024-01-05 10:00", 20.0),
        ("a", "2024-01-05 11:00", 20.0),  # one purchase day worth 40
        ("a", "2024-01-08 12:00", 10.0),
        ("a", "2024-01-20 12:00", 99.0),  # after the observation end
        ("b", "2024-01-03 08:00", 7.0),
        ("c", "2024-01-11 00:00", 3.0),  # the observation end day itself counts
        ("d", "2024-02-01 00:00", 1.0),  # not born yet
    ]
    return pd.DataFrame(rows, columns=["who", "at", "spent"]).assign(
        at=lambda f: pd.to_datetime(f["at"])
    )


def summarize_hand_log(log: pd.DataFrame, **kwargs) -> pd.DataFrame:
    return summarize_transactions(
        log, customer_col="who", time_col="at", amount_col="spent", observation_end="2024-01-11 15:00",
        time_unit_days=1.0, **kwargs,
    )  # fmt: skip


def test_summary_counts_purchase_days_and_ignores_the_future():
    summary = summarize_hand_log(hand_log())
    assert list(summary.columns) == ["frequency", "recency", "T", "monetary_value"]
    assert summary.index.name == "who"
    assert summary.to_dict("index") == {
        "a": {"frequency": 2, "recency": 7.0, "T": 10.0, "monetary_value": 25.0},
        "b": {"frequency": 0, "recency": 0.0, "T": 8.0, "monetary_value": 0.0},
        "c": {"frequency": 0, "recency": 0.0, "T": 0.0, "monetary_value": 0.0},
    }


def test_summary_in_weeks_and_with_shuffled_rows():
    log = hand_log().sample(frac=1.0, random_state=3)
    weeks = summarize_transactions(
        log, customer_col="who", time_col="at", amount_col="spent", observation_end="2024-01-11"
    )
    assert weeks.loc["a", "recency"] == pytest.approx(1.0)
    assert weeks.loc["a", "T"] == pytest.approx(10 / 7)
    assert weeks.loc["a", "monetary_value"] == 25.0


def test_summary_starts_the_clock_at_first_observed_when_it_is_earlier():
    known = pd.Series(
        pd.to_datetime(
            ["2023-12-22", "2024-01-03 23:00", "2023-12-01", "2024-01-30"], format="ISO8601"
        ),
        index=["a", "b", "e", "f"],
    )
    summary = summarize_hand_log(hand_log(), first_observed=known)
    # a's first logged day is now a repeat purchase; b's first observed day is its first purchase.
    assert summary.loc["a"].to_dict() == {
        "frequency": 3, "recency": 17.0, "T": 20.0, "monetary_value": pytest.approx(65 / 3),
    }  # fmt: skip
    assert summary.loc["b"].to_dict() == {
        "frequency": 0, "recency": 0.0, "T": 8.0, "monetary_value": 0.0,
    }  # fmt: skip
    # e is a known customer without a logged purchase; f is not a customer yet.
    assert summary.loc["e", "T"] == 41.0 and summary.loc["e", "frequency"] == 0
    assert "f" not in summary.index


def test_summary_uses_the_days_of_the_transactions_time_zone():
    log = hand_log().assign(at=lambda f: f["at"].dt.tz_localize("America/New_York"))
    local = summarize_hand_log(log)
    assert local.equals(summarize_hand_log(hand_log()))


def test_summary_days_follow_the_time_zone_the_times_are_in():
    evening_and_morning = pd.DataFrame(
        {
            "who": ["a", "a"],
            "at": pd.to_datetime(["2024-01-05 20:00", "2024-01-06 09:00"]).tz_localize(
                "America/New_York"
            ),
            "spent": [1.0, 2.0],
        }
    )
    in_utc = evening_and_morning.assign(at=lambda f: f["at"].dt.tz_convert("UTC"))
    # Two local days in New York, but both on 2024-01-06 in UTC.
    assert summarize_hand_log(evening_and_morning).loc["a", "frequency"] == 1
    assert summarize_hand_log(in_utc).loc["a", "frequency"] == 0


def test_summary_of_an_empty_log_is_empty():
    summary = summarize_hand_log(hand_log().iloc[:0])
    assert summary.empty
    assert list(summary.columns) == ["frequency", "recency", "T", "monetary_value"]


# -- inputs and recovery --------------------------------------------------------------------------


def test_models_reject_bad_inputs_and_refuse_to_predict_unfitted():
    with pytest.raises(ValueError, match="recency"):
        BetaGeoModel().fit([1, 2], [5.0, 50.0], [10.0, 40.0])
    with pytest.raises(ValueError, match="whole numbers"):
        BetaGeoModel().fit([1.5], [5.0], [10.0])
    with pytest.raises(NotFittedError, match="not fitted"):
        BetaGeoModel().probability_alive([1], [1.0], [2.0])
    with pytest.raises(ValueError, match="positive"):
        GammaGammaModel().fit([1, 2], [10.0, 0.0])
    with pytest.raises(ValueError, match="repeat purchase"):
        GammaGammaModel().fit([0, 0], [0.0, 0.0])


def simulate_bgnbd(
    n: int, params: dict[str, float], horizon: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Draw customers from the BG/NBD model itself, with their purchases in a later holdout."""
    T = rng.uniform(26.0, 78.0, n)
    rate = rng.gamma(params["r"], 1 / params["alpha"], n)
    dropout = np.clip(rng.beta(params["a"], params["b"], n), 1e-12, 1.0)
    # Drop-out comes right after the K-th repeat purchase, K ~ Geometric(p) on 1, 2, ...
    repeats_before_dropout = rng.geometric(dropout)
    arrivals = rng.poisson(rate * T)  # purchases the customer would make if alive throughout
    x = np.minimum(arrivals, repeats_before_dropout)
    # The x-th of `arrivals` uniform points on [0, T] is T · Beta(x, arrivals - x + 1).
    t_x = np.where(x > 0, T * rng.beta(np.maximum(x, 1), arrivals - x + 1), 0.0)
    later = rng.poisson(rate * horizon)
    holdout = np.clip(np.minimum(later, repeats_before_dropout - arrivals), 0, None)
    return {
        "x": x,
        "t_x": t_x,
        "T": T,
        "holdout": holdout,
        "alive": repeats_before_dropout > arrivals,
    }


def test_bgnbd_recovers_the_parameters_it_was_simulated_from():
    sim = simulate_bgnbd(20_000, PUBLISHED_BGNBD, 39.0, np.random.default_rng(7))
    model = BetaGeoModel().fit(sim["x"], sim["t_x"], sim["T"])
    for name, tolerance in {"r": 0.1, "alpha": 0.1, "a": 0.25, "b": 0.25}.items():
        assert model.params_[name] == pytest.approx(PUBLISHED_BGNBD[name], rel=tolerance), name
    # The optimum beats the truth, by no more than a likelihood-ratio test allows.
    at_truth = published_bgnbd().log_likelihood(sim["x"], sim["t_x"], sim["T"])
    assert 0 <= 2 * (model.log_likelihood_ - at_truth) < chi2.ppf(0.999, df=4)


def test_conditional_expectations_match_simulated_holdouts():
    sim = simulate_bgnbd(20_000, PUBLISHED_BGNBD, 39.0, np.random.default_rng(8))
    model = published_bgnbd()
    expected = model.expected_purchases(39.0, sim["x"], sim["t_x"], sim["T"])
    alive = model.probability_alive(sim["x"], sim["t_x"], sim["T"])
    groups = np.minimum(sim["x"], 4)  # 0, 1, 2, 3, 4+
    for g in np.unique(groups):
        sel = groups == g
        for truth, predicted in ((sim["holdout"], expected), (sim["alive"], alive)):
            gap = truth[sel] - predicted[sel]
            assert abs(gap.mean()) <= 4 * gap.std() / np.sqrt(sel.sum()), g


def test_gamma_gamma_recovers_the_parameters_it_was_simulated_from():
    rng = np.random.default_rng(5)
    n, p, q, g = 20_000, 6.25, 3.74, 15.44
    scale_rate = rng.gamma(q, 1 / g, n)
    x = 1 + rng.poisson(2.0, n)
    # The mean of x Gamma(p, ν) values is Gamma(px, xν).
    mean_value = rng.gamma(p * x, 1 / (x * scale_rate))
    model = GammaGammaModel().fit(x, mean_value)
    assert model.params_["p"] == pytest.approx(p, rel=0.1)
    assert model.params_["q"] == pytest.approx(q, rel=0.1)
    assert model.params_["gamma"] == pytest.approx(g, rel=0.15)

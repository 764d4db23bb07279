"""Turning online features and champions into the API's answer: value, band, freshness, reasons.

Works on plain dicts shaped like `serving.schemas.CustomerScores` and on the NumPy rows of
`serving.online`: building pydantic objects or DataFrames per request would cost more than the
models themselves (the schemas still document the shape).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray

from features.store import OnlineRows
from serving.champions import Champion
from serving.settings import Bands

__all__ = ["band_of", "score_batch"]


def band_of(value: float, bands: Bands) -> str:
    """low below the first boundary, high from the second on, medium between."""
    low, high = bands
    if value >= high:
        return "high"
    return "low" if value < low else "medium"


def score_batch(
    customer_ids: Sequence[str],
    features: Mapping[str, OnlineRows],
    champions: Mapping[str, Champion],
    *,
    bands: Mapping[str, Bands],
    stale_after: timedelta,
    now: datetime,
    explain_top: int | None = None,
) -> list[dict[str, Any]]:
    """One result per distinct customer (request order), every model in `features` scored.

    A customer missing from a model's features gets that model's population prior with
    ``known: false``; the customer is `known` only when every requested model found features.
    """
    ids = list(dict.fromkeys(customer_ids))
    results: dict[str, dict[str, Any]] = {
        cid: {"customer_id": cid, "known": True, "scores": {}} for cid in ids
    }
    for model, rows in features.items():
        champion = champions[model]
        scored = _score_known(champion, rows, bands[model], stale_after, now, explain_top)
        prior = _prior_score(champion, bands[model], explain_top is not None)
        for cid in ids:
            entry = results[cid]
            score = scored.get(cid)
            if score is None:
                entry["known"] = False
                score = dict(prior)
            entry["scores"][model] = score
    return list(results.values())


def _score_known(
    champion: Champion,
    rows: OnlineRows,
    bands: Bands,
    stale_after: timedelta,
    now: datetime,
    explain_top: int | None,
) -> dict[str, dict[str, Any]]:
    if not len(rows):
        return {}
    if explain_top is None:
        values, hours = champion.score(rows.matrix)
        reasons = None
    else:
        values, hours, contributions = champion.explained(rows.matrix)
        reasons = _reasons(champion, rows, contributions, explain_top)
    snapshots = rows.snapshots.tolist()
    # Few distinct snapshots per batch: format and age each once.
    meta: dict[int, tuple[str, bool]] = {}
    for stamp in set(snapshots):
        taken = datetime.fromtimestamp(stamp, UTC)
        meta[stamp] = (taken.isoformat(), now - taken > stale_after)
    hour_list = hours.tolist() if hours is not None else None
    scored = {}
    for i, (cid, value) in enumerate(zip(rows.customer_ids, values.tolist(), strict=True)):
        at, stale = meta[snapshots[i]]
        score: dict[str, Any] = {
            "value": value,
            "band": band_of(value, bands),
            "model_version": champion.version,
            "features_at": at,
            "stale": bool(stale),
            "known": True,
        }
        if hour_list is not None:
            score["best_send_hour"] = hour_list[i]
        if reasons is not None:
            score["reasons"] = reasons[i]
        scored[cid] = score
    return scored


def _reasons(
    champion: Champion, rows: OnlineRows, contributions: NDArray[np.float64], k: int
) -> list[list[dict[str, Any]]]:
    """The top `k` features pushing each row's score up (LightGBM pred_contrib), each with what
    it means in words ("42 days since the last purchase")."""
    from features.catalog import describe
    from models.lgbm import top_reason_indices

    picked = top_reason_indices(contributions[:, : len(rows.features)], k)  # no bias
    meanings = champion.meanings or (None,) * len(rows.features)
    return [
        [
            {
                "feature": rows.features[j],
                "value": _number(rows.matrix[i, j]),
                "contribution": contribution,
                "description": describe(rows.features[j], float(rows.matrix[i, j]), meanings[j]),
            }
            for j, contribution in row
        ]
        for i, row in enumerate(picked)
    ]


def _prior_score(champion: Champion, bands: Bands, explain: bool) -> dict[str, Any]:
    score: dict[str, Any] = {
        "value": champion.prior,
        "band": band_of(champion.prior, bands),
        "model_version": champion.version,
        "features_at": None,
        "stale": False,
        "known": False,
    }
    if champion.prior_send_hour is not None:
        score["best_send_hour"] = champion.prior_send_hour
    if explain:
        score["reasons"] = []  # no features, nothing to attribute the prior to
    return score


def _number(value: Any) -> float | None:
    number = float(value)
    return None if math.isnan(number) else number

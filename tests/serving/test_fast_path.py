"""Requests are scored from NumPy matrices, not through pyfunc DataFrames: the two paths must
give the same numbers, and a version whose paths disagree must never serve."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.schema import MODEL_NAMES, model_features

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def frames(prepared) -> dict[str, pd.DataFrame]:
    """Per model, the repo's own online frame of every known customer, plus a customer without
    history (counts 0, undefined floats NaN, no preferred hour)."""
    from features.store import online_features, open_store
    from serving.champions import _no_history_row

    store = open_store(prepared.home, production=False)
    out = {}
    for model in MODEL_NAMES:
        features = model_features(model)
        frame = online_features(store, model, prepared.known_ids)[list(features)]
        out[model] = pd.concat([frame, _no_history_row(features)], ignore_index=True)
    return out


def test_the_numpy_path_scores_as_the_pyfunc_model_does(service, frames):
    from models.lgbm import feature_contributions

    for model, champion in service.champions.served().items():
        frame = frames[model]
        assert len(frame) > 500
        matrix = frame.to_numpy(dtype=np.float64)  # what serving.online builds
        expected = champion.model.predict(None, frame)  # models.pyfunc.ScoringModel.predict
        scores, hours = champion.score(matrix)

        np.testing.assert_allclose(scores, expected["score"], rtol=1e-9, atol=1e-12)
        if model == "engagement":
            np.testing.assert_array_equal(hours, expected["best_send_hour"])
            assert hours.dtype == np.int64
        else:
            assert hours is None and "best_send_hour" not in expected.columns
        contributions = feature_contributions(champion.model.estimator, frame)
        np.testing.assert_allclose(
            champion.contributions(matrix), contributions.to_numpy(), rtol=1e-9, atol=1e-12
        )


def test_the_churn_champion_has_the_linear_base_the_pipeline_gives_it(service):
    """The sample home's champions are trained as models.evaluate trains them, so the fast path
    above is checked on the linear base's terms too."""
    estimator = service.champions.served()["churn"].model.estimator
    assert getattr(estimator, "linear_base_", None) is not None


def test_online_rows_type_the_values_as_the_online_frame_does():
    from features.store import online_rows, typed_online_frame

    features = model_features("ltv")
    ids = ["a", "b", "c"]
    values: dict[str, list[Any]] = {}
    for j, name in enumerate(features):
        number = 7 if features[name] == "int64" else 1.5 + j
        # b has no stored values at all; c has a null float, as Feast returns it.
        values[name] = [number, None, None if features[name] == "float64" and j == 2 else number]
        values[f"{name}__ts"] = [1_754_006_400, 0, 1_754_006_400]
    rows = online_rows(values, features, ids)
    frame = typed_online_frame(values, "ltv", ids)

    assert rows.customer_ids == frame["customer_id"].tolist() == ["a", "c"]
    assert rows.features == tuple(features)
    np.testing.assert_array_equal(rows.matrix, frame[list(features)].to_numpy(dtype=np.float64))
    assert np.isnan(rows.matrix[1, 2]) and not np.isnan(rows.matrix[0]).any()
    assert rows.snapshots.tolist() == [1_754_006_400] * 2
    # An integer feature without a value fails in both, rather than scoring a made-up number.
    broken = {**values, "purchases_total": [None, None, 3]}
    with pytest.raises(TypeError):
        typed_online_frame(broken, "ltv", ids)
    with pytest.raises(TypeError):
        online_rows(broken, features, ids)


def test_nobody_known_gives_empty_rows():
    from features.store import online_rows

    features = model_features("churn")
    values: dict[str, list[Any]] = {name: [None] for name in features}
    values.update({f"{name}__ts": [0] for name in features})
    rows = online_rows(values, features, ["x"])
    assert len(rows) == 0 and rows.matrix.shape == (0, len(features))


class _Drifting:
    """A ScoringModel whose NumPy path is off by a little: what a bad fast path would be."""

    def __init__(self, model: Any) -> None:
        self._model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def score_matrix(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        scores, hours = self._model.score_matrix(matrix)
        return scores * (1 + 1e-6), hours


def test_a_version_whose_numpy_path_disagrees_with_pyfunc_is_refused(service):
    from serving.champions import LoadError, _with_prior

    champion = service.champions.served()["churn"]
    assert _with_prior(champion, None).prior == pytest.approx(
        champion.score(champion.model.matrix(_no_history(champion)))[0][0]
    )
    with pytest.raises(LoadError, match="NumPy scoring path disagrees"):
        _with_prior(replace(champion, model=_Drifting(champion.model)), None)


def _no_history(champion: Any) -> pd.DataFrame:
    from serving.champions import _no_history_row

    return _no_history_row(champion.features)


def test_the_served_process_freezes_its_start_up_objects(service):
    """`nudge serve` moves start-up's objects out of the collector's reach (a full collection
    over them paused every request for ~0.2 s); an app built for tests leaves the GC alone."""
    import gc

    from serving.app import create_app
    from tests.serving.conftest import serve_with_lifespan

    assert gc.get_freeze_count() == 0
    with serve_with_lifespan(create_app(service=service)):
        assert gc.get_freeze_count() == 0
    try:
        with serve_with_lifespan(create_app(service=service, freeze_gc=True)):
            assert gc.get_freeze_count() > 10_000
        assert service.started  # the app did not start it, so it does not stop it
    finally:
        gc.unfreeze()

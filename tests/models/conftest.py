"""One set of in-memory training frames from the session's small simulation, and one fit of the
three models and their baselines, shared by the model tests."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from features.compute import compute_features, compute_labels
from features.schema import ENTITY_KEY, TIMESTAMP_COLUMN
from models.specs import SPECS

KEYS = [ENTITY_KEY, TIMESTAMP_COLUMN]
N_TRAIN = 6


@pytest.fixture(scope="session")
def sim_frames(small_simulation) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """Per model (train, holdout): monthly snapshots, holdout = the latest label-complete one."""
    sim = small_simulation
    end = pd.Timestamp(sim.params.end)
    end = end.tz_localize("UTC") if end.tz is None else end
    snapshots = [end - timedelta(days=14 + 30 * k) for k in range(11)]
    tables = compute_features(sim.events, snapshots, sim.customers)
    labels = compute_labels(sim.events, snapshots)
    features = tables["churn_features"]
    for name in ("ltv_features", "engagement_features"):
        features = features.merge(tables[name], on=KEYS, validate="1:1")
    frames = {}
    for name, spec in SPECS.items():
        rows = labels[name][labels[name][TIMESTAMP_COLUMN] + spec.horizon <= end]
        keep = sorted(rows[TIMESTAMP_COLUMN].unique())[-(N_TRAIN + 1) :]
        rows = rows[rows[TIMESTAMP_COLUMN].isin(keep)].merge(features, on=KEYS, validate="1:1")
        holdout = rows[TIMESTAMP_COLUMN] == keep[-1]
        frames[name] = (rows[~holdout].reset_index(drop=True), rows[holdout].reset_index(drop=True))
    return frames


@pytest.fixture(scope="session")
def sim_results(sim_frames):
    """Each model and its baselines fitted once on the simulation."""
    from models.evaluate import fit_and_evaluate

    return {
        name: fit_and_evaluate(SPECS[name], train, holdout)
        for name, (train, holdout) in sim_frames.items()
    }

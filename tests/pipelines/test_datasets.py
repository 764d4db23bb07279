"""Snapshot plans, label rows and the user errors of the pipelines' data step."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pandas as pd
import pytest

from engine.lake import EventLake
from models.specs import SPECS
from pipelines.datasets import (
    WARMUP,
    DataRange,
    PipelineError,
    covered_range,
    feature_snapshots,
    label_rows,
)

DATA = DataRange(
    pd.Timestamp("2025-01-01 08:00", tz="UTC"), pd.Timestamp("2025-12-31 21:00", tz="UTC")
)


def test_snapshots_end_at_the_last_day_and_skip_the_warm_up():
    snapshots = feature_snapshots(DATA, step_days=30, count=20)
    assert snapshots[-1] == pd.Timestamp("2025-12-31", tz="UTC")
    assert all(b - a == timedelta(days=30) for a, b in itertools.pairwise(snapshots))
    assert snapshots[0] >= DATA.first + WARMUP and len(snapshots) == 12
    assert len(feature_snapshots(DATA, step_days=30, count=3)) == 3


def test_too_little_history_is_a_user_error(tmp_path):
    short = DataRange(DATA.first, DATA.first + timedelta(days=10))
    with pytest.raises(PipelineError, match="too short"):
        feature_snapshots(short)
    with pytest.raises(PipelineError, match="empty"):
        covered_range(EventLake(tmp_path / "lake"))


def test_label_rows_keep_each_models_latest_complete_snapshots(small_simulation):
    snapshots = feature_snapshots(DATA, step_days=30, count=12)
    events = small_simulation.events.to_pandas()
    rows = label_rows(events, snapshots, DATA.last, SPECS, n_train=3)
    for name, spec in SPECS.items():
        stamps = sorted(rows[name]["event_timestamp"].unique())
        assert len(stamps) == 4
        assert stamps[-1] + spec.horizon <= DATA.last  # the holdout's labels are complete
        later = [t for t in snapshots if t > stamps[-1]]
        assert all(t + spec.horizon > DATA.last for t in later)  # and it is the latest such
    with pytest.raises(PipelineError, match="complete 90-day label window"):
        label_rows(events, snapshots[-3:], DATA.last, {"churn": SPECS["churn"]}, n_train=3)

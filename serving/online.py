"""Online features, read in-process from the Feast store opened once at start-up.

One Feast call fetches every feature the requested models need (their services overlap), then
each model gets `OnlineRows`: the customers the store knows, their snapshot, and a float matrix
of the model's features in training order — the values `features.store.online_features` would
give, without a DataFrame: building frames cost more than the read and three predictions.

On the SQLite online store, batches are read by `serving.online_sqlite` instead: one grouped
query per feature view, values decoded in NumPy (Feast's own read costs ~1 ms per customer).
The first read of each set of models is made both ways and compared; the direct reader is used
for that set only if the answers are identical (else a warning, and Feast's read from then on).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from features.schema import ENTITY_KEY, Dtype, feature_refs, model_features
from features.store import OnlineRows, online_rows

if TYPE_CHECKING:
    from feast import FeatureStore

    from serving.settings import ServingSettings

__all__ = ["Layout", "OnlineFeatures"]

log = logging.getLogger("serving")

# How long the models' feature lists are reused before the definitions are read again: reading
# them (settings, file stats) cost more than a single customer's scoring.
PLAN_SECONDS = 5.0
# Stored customers the first direct read of a set of models is also compared on.
CHECK_SAMPLE = 50


@dataclass(frozen=True)
class _Plan:
    """What a set of models needs from the store: Feast refs, and per view its features."""

    refs: list[str]
    features: dict[str, dict[str, Dtype]]  # per model, in training order
    views: dict[str, list[str]]  # per view, the features any of the models reads
    columns: dict[str, list[tuple[str, int]]]  # per model: (view, column in views[view])
    at: float


class Layout(NamedTuple):
    """A model's features (and dtypes) and their Feast refs, both in training order."""

    features: Mapping[str, Dtype]
    refs: tuple[str, ...]


# A plan per requested set of models, each with its own refs when not a definition's.
PlanKey = tuple[tuple[str, tuple[str, ...]], ...]


class OnlineFeatures:
    """Reads model features for customers from one long-lived `FeatureStore`."""

    def __init__(
        self, store: FeatureStore, *, direct: bool = True, snapshot_max_customers: int = 0
    ) -> None:
        self.store = store
        self.backend = str(store.config.online_store.type)
        # Feast's SQLite online store shares one sqlite3 connection between threads; Python's
        # sqlite3 does not make concurrent use of a connection safe, so reads take turns. Redis
        # clients are thread-safe and keep their network waits concurrent.
        self._lock: Any = threading.Lock() if self.backend == "sqlite" else nullcontext()
        self._plans: dict[PlanKey, _Plan] = {}
        self._direct: Any = None  # serving.online_sqlite.SqliteBatchReader on SQLite
        self._checked: dict[PlanKey, bool] = {}  # direct read agreed with Feast's?
        if direct and self.backend == "sqlite":
            from serving.online_sqlite import SqliteBatchReader

            try:
                self._direct = SqliteBatchReader(
                    store, snapshot_max_customers=snapshot_max_customers
                )
            except Exception:  # Feast internals moved: its own read still works
                log.warning("direct SQLite online reads unavailable", exc_info=True)

    @classmethod
    def open(cls, settings: ServingSettings) -> OnlineFeatures:
        """The store of the configured Feast config (embedded or production), opened once."""
        from features.store import open_store

        store = open_store(
            settings.home_dir, settings.feast_production, project=settings.feast_project
        )
        return cls(
            store,
            direct=settings.direct_online_reads,
            snapshot_max_customers=settings.online_snapshot_max_customers,
        )

    def read(
        self,
        models: Sequence[str],
        customer_ids: Sequence[str],
        layouts: Mapping[str, Layout] | None = None,
    ) -> dict[str, OnlineRows]:
        """Per model, the rows of the customers the store knows (see module docstring).

        `layouts` gives a model's features and refs (in training order) where no definition
        does — an uplift model's, which only its loaded champion knows; the rest are read from
        the definitions.
        """
        ids = list(dict.fromkeys(customer_ids))
        own = layouts or {}
        key = tuple((model, own[model].refs if model in own else ()) for model in models)
        plan = self._plan(key, own)
        direct = self._direct is not None and all(map(self._direct.has_view, plan.views))
        if not direct or self._checked.get(key) is False:
            return self._read_feast(plan, ids)
        if key not in self._checked:
            return self._first_direct(key, plan, ids)
        with self._lock:
            return self._read_direct(plan, ids)

    def _read_feast(self, plan: _Plan, ids: list[str]) -> dict[str, OnlineRows]:
        with self._lock:
            values = self.store.get_online_features(
                features=plan.refs, entity_rows={ENTITY_KEY: ids}
            ).to_dict(include_event_timestamps=True)
        return {model: online_rows(values, plan.features[model], ids) for model in plan.features}

    def _read_direct(self, plan: _Plan, ids: list[str]) -> dict[str, OnlineRows]:
        """`online_rows`' answer from one query per view (the caller holds the lock)."""
        blocks = {view: self._direct.read(view, names, ids) for view, names in plan.views.items()}
        out = {}
        for model, features in plan.features.items():
            cols = plan.columns[model]
            views = list(dict.fromkeys(v for v, _ in cols))
            # Known: every view of the model has a row for the customer (Feast's __ts > 0).
            known = np.logical_and.reduce([blocks[v].present for v in views])
            matrix = np.column_stack([blocks[v].values[known, j] for v, j in cols])
            for (v, j), dtype in zip(cols, features.values(), strict=True):
                if dtype != "float64" and blocks[v].nulls[known, j].any():
                    raise ValueError(f"integer feature {v}:{plan.views[v][j]} has no value")
            snapshots = np.min(np.stack([blocks[v].stamps[known] for v in views]), axis=0)
            out[model] = OnlineRows(
                customer_ids=[c for c, k in zip(ids, known.tolist(), strict=True) if k],
                snapshots=snapshots.astype(np.int64),
                matrix=matrix.reshape(int(known.sum()), len(cols)),
                features=tuple(features),
            )
        return out

    def _first_direct(self, key: PlanKey, plan: _Plan, ids: list[str]) -> dict[str, OnlineRows]:
        """Read `ids` (and a sample of stored customers) both ways; trust the direct read of
        these models only if every row, snapshot and value is the same."""
        try:
            with self._lock:
                sample = self._direct.sample_ids(next(iter(plan.views)), CHECK_SAMPLE)
            probe = list(dict.fromkeys([*ids, *sample]))
            theirs = self._read_feast(plan, probe)
            with self._lock:
                ours = self._read_direct(plan, probe)
            agrees = all(_same_rows(ours[m], theirs[m]) for m in plan.features)
        except Exception:
            log.warning("direct SQLite online read failed its check", exc_info=True)
            agrees = False
        if not agrees:
            log.warning("direct SQLite online read differs from Feast's for %s: using Feast's", key)
        self._checked[key] = agrees
        return self._read_feast(plan, ids)

    def _plan(self, key: PlanKey, own: Mapping[str, Layout]) -> _Plan:
        plan = self._plans.get(key)
        now = time.monotonic()
        if plan is not None and now - plan.at < PLAN_SECONDS:
            return plan
        models = [model for model, _ in key]
        features = {
            model: dict(own[model].features) if model in own else model_features(model)
            for model in models
        }
        views: dict[str, list[str]] = {}
        columns: dict[str, list[tuple[str, int]]] = {}
        refs: list[str] = []
        for model in models:
            cols = []
            for ref in own[model].refs if model in own else feature_refs(model):
                view, name = ref.split(":", 1)
                names = views.setdefault(view, [])
                if name not in names:
                    names.append(name)
                cols.append((view, names.index(name)))
                if ref not in refs:
                    refs.append(ref)
            columns[model] = cols
        plan = _Plan(refs, features, views, columns, now)
        if len(self._plans) > 64:
            self._plans.clear()
        self._plans[key] = plan
        return plan

    def close(self) -> None:
        """Release the online store's connections."""
        online = getattr(self.store, "_provider", None)
        store = getattr(online, "_online_store", None)
        conn = getattr(store, "_conn", None)
        if store is not None and conn is not None:  # SQLite; Redis pools close with the process
            conn.close()
            store._conn = None


def _same_rows(a: OnlineRows, b: OnlineRows) -> bool:
    return (
        a.customer_ids == b.customer_ids
        and a.features == b.features
        and np.array_equal(a.snapshots, b.snapshots)
        and np.array_equal(a.matrix, b.matrix, equal_nan=True)
    )

"""Online features, read in-process from the Feast store opened once at start-up.

One Feast call fetches every feature the requested models need (their services overlap), then
each model gets `OnlineRows`: the customers the store knows, their snapshot, and a float matrix
of the model's features in training order — the values `features.store.online_features` would
give, without a DataFrame: building frames cost more than the read and three predictions.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from features.schema import ENTITY_KEY, Dtype, feature_refs, model_features

if TYPE_CHECKING:
    from feast import FeatureStore

    from serving.settings import ServingSettings

__all__ = ["OnlineFeatures", "OnlineRows", "online_rows"]


@dataclass(frozen=True)
class OnlineRows:
    """One model's features for the customers the store knows, in request order."""

    customer_ids: list[str]
    snapshots: NDArray[np.int64]  # epoch seconds of the snapshot each row describes
    matrix: NDArray[np.float64]  # one row per customer, the model's features in training order
    features: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.customer_ids)


def online_rows(
    values: Mapping[str, Sequence[Any]], features: Mapping[str, Dtype], ids: Sequence[str]
) -> OnlineRows:
    """`OnlineRows` from Feast's `to_dict(include_event_timestamps=True)` answer for `ids`.

    The same rows, snapshots and values as `features.store.typed_online_frame`: a customer is
    known when every feature has a stored value (``<name>__ts`` > 0); each column is cast to
    its training dtype (an integer feature without a value fails as it would there).
    """
    names = list(features)
    stamps = np.array([values[f"{name}__ts"] for name in names], dtype=np.int64)
    known = (stamps > 0).all(axis=0)
    block = np.array([values[name] for name in names], dtype=object)[:, known]
    matrix = np.empty((int(known.sum()), len(names)), dtype=np.float64)
    floats = [j for j, name in enumerate(names) if features[name] == "float64"]
    ints = [j for j, name in enumerate(names) if features[name] != "float64"]
    # None becomes NaN in float columns; integers go through int64 first, as in the frame.
    matrix[:, floats] = block[floats].astype(np.float64).T
    matrix[:, ints] = block[ints].astype(np.int64).T
    return OnlineRows(
        customer_ids=[cid for cid, k in zip(ids, known.tolist(), strict=True) if k],
        snapshots=stamps[:, known].min(axis=0),
        matrix=matrix,
        features=tuple(names),
    )


class OnlineFeatures:
    """Reads model features for customers from one long-lived `FeatureStore`."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self.backend = str(store.config.online_store.type)
        # Feast's SQLite online store shares one sqlite3 connection between threads; Python's
        # sqlite3 does not make concurrent use of a connection safe, so reads take turns. Redis
        # clients are thread-safe and keep their network waits concurrent.
        self._lock: Any = threading.Lock() if self.backend == "sqlite" else nullcontext()

    @classmethod
    def open(cls, settings: ServingSettings) -> OnlineFeatures:
        """The store of the configured Feast config (embedded or production), opened once."""
        from features.store import open_store

        store = open_store(
            settings.home_dir, settings.feast_production, project=settings.feast_project
        )
        return cls(store)

    def read(self, models: Sequence[str], customer_ids: Sequence[str]) -> dict[str, OnlineRows]:
        """Per model, the rows of the customers the store knows (see module docstring)."""
        ids = list(dict.fromkeys(customer_ids))
        refs = list(dict.fromkeys(ref for model in models for ref in feature_refs(model)))
        with self._lock:
            values = self.store.get_online_features(
                features=refs, entity_rows={ENTITY_KEY: ids}
            ).to_dict(include_event_timestamps=True)
        return {model: online_rows(values, model_features(model), ids) for model in models}

    def close(self) -> None:
        """Release the online store's connections."""
        online = getattr(self.store, "_provider", None)
        store = getattr(online, "_online_store", None)
        conn = getattr(store, "_conn", None)
        if conn is not None:  # SQLite; Redis pools close with the process
            conn.close()
            store._conn = None

"""Online features, read in-process from the Feast store opened once at start-up.

One Feast call fetches every feature the requested models need (their services overlap), then
each model gets `OnlineRows`: the customers the store knows, their snapshot, and a float matrix
of the model's features in training order — the values `features.store.online_features` would
give, without a DataFrame: building frames cost more than the read and three predictions.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

from features.schema import ENTITY_KEY, feature_refs, model_features
from features.store import OnlineRows, online_rows

if TYPE_CHECKING:
    from feast import FeatureStore

    from serving.settings import ServingSettings

__all__ = ["OnlineFeatures"]


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
        if store is not None and conn is not None:  # SQLite; Redis pools close with the process
            conn.close()
            store._conn = None

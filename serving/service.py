"""The scoring service's long-lived state: one Feast store, the champions, the metrics.

Created once per process (`create_app` or a test), started before the first request: opening
Feast and loading the models cost seconds, so they happen at start-up, never per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from engine.dsl.score_models import is_uplift_model
from serving.champions import Champion, Champions, population_from_tables
from serving.metrics import ServiceMetrics
from serving.online import Layout, OnlineFeatures
from serving.scoring import score_batch
from serving.settings import ServingSettings

__all__ = ["FeaturesUnavailable", "ModelsUnavailable", "ScoringService"]

log = logging.getLogger("serving")


class ModelsUnavailable(RuntimeError):
    """A requested model has no loaded version (no champion yet, or none could be loaded)."""

    def __init__(self, models: Sequence[str]) -> None:
        super().__init__(f"no version of {', '.join(models)} is loaded; see GET /v1/models")
        self.models = list(models)


class FeaturesUnavailable(RuntimeError):
    """The online store could not be read (Redis down, SQLite file gone, ...)."""


class ScoringService:
    """Scores customers with the served champions over in-process online features."""

    def __init__(self, settings: ServingSettings) -> None:
        self.settings = settings
        self.metrics = ServiceMetrics()
        self.features: OnlineFeatures | None = None
        self.champions = Champions(
            settings,
            population=population_from_tables(settings),
            on_swap=self._swapped,
            on_failure=lambda model: self.metrics.load_failures.labels(model).inc(),
        )
        for model in settings.models or ():
            self.metrics.model_version.labels(model).set(0)
        self.started = False
        # The model definitions' names, the models a request may name (set by create_app).
        self.defined_models: tuple[str, ...] = ()

    def start(self) -> ScoringService:
        """Open the feature store, load every champion, start watching the aliases."""
        if self.started:
            return self
        begun = time.perf_counter()
        self.features = OnlineFeatures.open(self.settings)
        self.champions.refresh(force=True)
        self.champions.start_polling()
        self.started = True
        served = {name: c.version for name, c in self.champions.served().items()}
        log.info(
            "scoring service started in %.1f s: online store %s, models %s",
            time.perf_counter() - begun,
            self.features.backend,
            served or "none",
        )
        return self

    def close(self) -> None:
        """Stop the alias poller and release the feature store."""
        self.champions.stop()
        if self.features is not None:
            self.features.close()
        self.started = False

    @property
    def ready(self) -> bool:
        return self.features is not None and self.champions.ready

    def score(
        self, customer_ids: Sequence[str], models: Sequence[str] | None, *, explain: bool
    ) -> list[dict[str, Any]]:
        """Results shaped like `serving.schemas.CustomerScores`, one per distinct customer."""
        if self.features is None:
            raise RuntimeError("the scoring service was not started")
        wanted = list(dict.fromkeys(models or self.champions.models))
        if not wanted:
            raise ModelsUnavailable(["any model (none is registered yet)"])
        # One mapping for the whole request: a swap meanwhile does not mix versions in it.
        served: dict[str, Champion] = dict(self.champions.served())
        missing = [m for m in wanted if m not in served]
        if missing:
            raise ModelsUnavailable(missing)
        started = time.perf_counter()
        try:
            rows = self.features.read(wanted, customer_ids, _own_layouts(served, wanted))
        except Exception as exc:  # the store's own errors vary by backend (redis, sqlite3)
            log.exception("online feature read failed")
            raise FeaturesUnavailable(
                f"online feature store unavailable: {type(exc).__name__}"
            ) from exc
        self.metrics.feature_latency.observe(time.perf_counter() - started)
        results = score_batch(
            customer_ids,
            rows,
            served,
            bands={m: self.settings.bands_for(m) for m in wanted},
            stale_after=self.settings.stale_after,
            now=datetime.now(UTC),
            explain_top=self.settings.explain_top if explain else None,
        )
        for model in wanted:
            known = sum(1 for r in results if r["scores"][model]["known"])
            self.metrics.scores.labels(model, "true").inc(known)
            self.metrics.scores.labels(model, "false").inc(len(results) - known)
        return results

    def _swapped(self, champion: Champion) -> None:
        self.metrics.model_swaps.labels(champion.name).inc()
        self.metrics.model_version.labels(champion.name).set(_numeric(champion.version))


def _own_layouts(served: Mapping[str, Champion], wanted: Sequence[str]) -> dict[str, Layout]:
    """The features of the wanted models that no definition declares (uplift models): what
    their loaded champion was trained on."""
    return {m: Layout(served[m].features, served[m].refs) for m in wanted if is_uplift_model(m)}


def _numeric(version: str) -> float:
    try:
        return float(version)
    except ValueError:
        return -1.0

"""Every Feast object of the repo, built for one feature-table folder.

The definition modules (entities, data_sources, feature_views, feature_services) hold factories,
not module-level objects: a source's path depends on $NUDGE_HOME, and `feast apply` imports each
scanned file as a top-level module, so a module-level object imported elsewhere as
``features.<module>`` would be a second, equal object that Feast registers twice. The objects
the CLI sees live in `repo.py` only; in-process code calls `build_definitions`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from feast import Entity, FeatureService, FeatureView, FileSource

from features.catalog import catalog
from features.data_sources import feature_sources
from features.entities import customer
from features.feature_services import feature_services
from features.feature_views import feature_views

if TYPE_CHECKING:
    from models.definitions import Definitions as ModelDefinitions

__all__ = ["Definitions", "build_definitions"]


@dataclass(frozen=True)
class Definitions:
    """The repo's Feast objects."""

    entity: Entity
    sources: dict[str, FileSource]
    views: list[FeatureView]
    services: list[FeatureService]

    def all(self) -> list[Entity | FileSource | FeatureView | FeatureService]:
        """Everything, in the order `FeatureStore.apply` takes it."""
        return [self.entity, *self.sources.values(), *self.views, *self.services]


def build_definitions(tables_dir: Path, models: ModelDefinitions | None = None) -> Definitions:
    """The entity, sources, views and services, the sources reading `tables_dir` (absolute),
    for the model definitions `models` (default: NUDGE_MODELS_DIR's)."""
    found = catalog(models)
    entity = customer()
    sources = feature_sources(tables_dir, found.views)
    views = feature_views(sources, entity, found.views)
    return Definitions(entity, sources, views, feature_services(views, found))

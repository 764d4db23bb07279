"""One feature service per model definition: what each model reads, named after the model.

The composition lives in the catalog (`features.catalog`), plain Python, so that training and
serving code can name a model's features without importing Feast.
"""

from __future__ import annotations

from feast import FeatureService, FeatureView

from features.catalog import Catalog

__all__ = ["feature_services"]


def feature_services(views: list[FeatureView], catalog: Catalog) -> list[FeatureService]:
    """One service per model of the catalog, over the given views."""
    by_name = {view.name: view for view in views}
    return [
        FeatureService(
            name=model,
            features=[by_name[view][list(names)] for view, names in parts.items()],
            description=catalog.descriptions.get(model, model),
        )
        for model, parts in catalog.services.items()
    ]

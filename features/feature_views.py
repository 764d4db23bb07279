"""The feature views: one per feature table (the standard churn, ltv and engagement views, and
one per model definition with feature groups of its own), keyed by customer.

Names and dtypes come from the catalog (`features.catalog`), the contract the compute code
writes to. Every
feature is Float64 or Int64 so that offline and online reads agree on dtypes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float64, Int64, PrimitiveFeastType, String

from features.schema import ENTITY_KEY, Dtype

__all__ = ["FEATURE_TTL", "feature_view", "feature_views"]

# How far back a point-in-time join looks for a snapshot: snapshots are built at least monthly,
# so an entity row between two of them finds the one before; anything older counts as missing.
# (Online reads do not apply it: check the `event_timestamp` that `online_features` returns.)
FEATURE_TTL: Final = timedelta(days=35)
_FEAST_TYPES: dict[Dtype, PrimitiveFeastType] = {"float64": Float64, "int64": Int64}


def feature_views(
    sources: dict[str, FileSource], customer: Entity, views: dict[str, dict[str, Dtype]]
) -> list[FeatureView]:
    """Every view of `views` (name → columns), each reading the source of the same name."""
    return [feature_view(view, sources[view], customer, views[view]) for view in views]


def feature_view(
    view: str, source: FileSource, customer: Entity, columns: dict[str, Dtype]
) -> FeatureView:
    """One view over its source, with the given columns and dtypes."""
    return FeatureView(
        name=view,
        entities=[customer],
        ttl=FEATURE_TTL,
        schema=[
            Field(name=ENTITY_KEY, dtype=String),
            *(Field(name=name, dtype=_FEAST_TYPES[dtype]) for name, dtype in columns.items()),
        ],
        source=source,
        online=True,
        tags={"computed_by": "features.compute"},
    )

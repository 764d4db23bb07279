"""Feature tables and labels computed from lake events at a list of snapshot times.

Import-light (DuckDB, pandas, pyarrow; never Feast). Point in time: the features of snapshot t
use only events with ``timestamp <= t``, its labels only events in ``(t, t + H]``. The rows of
snapshot t are the customers with at least one event (of any type) at or before t.
"""

from features.compute.churn import churn_features
from features.compute.engagement import engagement_features
from features.compute.labels import (
    CHURN_HORIZON,
    ENGAGEMENT_HORIZON,
    LTV_HORIZON,
    churn_labels,
    complete_label_snapshots,
    compute_labels,
    engagement_labels,
    ltv_labels,
)
from features.compute.ltv import ltv_features
from features.compute.tables import (
    build_feature_tables,
    compute_definition_labels,
    compute_features,
    feature_table_snapshots,
    lake_columns,
    property_event_types,
    read_feature_table,
    write_feature_tables,
)
from features.compute.workspace import DEFAULT_HALF_LIFE_DAYS, EVENT_COLUMNS, as_snapshots

__all__ = [
    "CHURN_HORIZON",
    "DEFAULT_HALF_LIFE_DAYS",
    "ENGAGEMENT_HORIZON",
    "EVENT_COLUMNS",
    "LTV_HORIZON",
    "as_snapshots",
    "build_feature_tables",
    "churn_features",
    "churn_labels",
    "complete_label_snapshots",
    "compute_definition_labels",
    "compute_features",
    "compute_labels",
    "engagement_features",
    "engagement_labels",
    "feature_table_snapshots",
    "lake_columns",
    "ltv_features",
    "ltv_labels",
    "property_event_types",
    "read_feature_table",
    "write_feature_tables",
]

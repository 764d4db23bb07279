"""The feature tables' contract: view names, columns and dtypes, shared by compute and Feast.

Plain Python on purpose: the compute code (DuckDB) and the Feast definitions both read these
names, and neither may import the other. Every feature is `float64` or `int64` so that offline
(Parquet → DuckDB) and online (SQLite / Redis) values come back with the same dtype; a float
feature may be null (NaN) where it is undefined, an integer feature never is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from models.definitions import Definitions

__all__ = [
    "CHURN_FEATURES",
    "CHURN_VIEW",
    "ENGAGEMENT_FEATURES",
    "ENGAGEMENT_VIEW",
    "ENTITY_KEY",
    "LTV_FEATURES",
    "LTV_VIEW",
    "MODEL_NAMES",
    "SERVICE_FEATURES",
    "TIMESTAMP_COLUMN",
    "UNKNOWN_HOUR",
    "VIEW_FEATURES",
    "VIEW_NAMES",
    "Dtype",
    "feature_refs",
    "model_features",
    "table_columns",
    "view_features",
]

Dtype = Literal["float64", "int64"]

ENTITY_KEY: Final = "customer_id"
# The snapshot time a row describes; the FileSources' timestamp field.
TIMESTAMP_COLUMN: Final = "event_timestamp"
# `preferred_send_hour` when the customer has opened no email yet.
UNKNOWN_HOUR: Final = -1

CHURN_VIEW: Final = "churn_features"
LTV_VIEW: Final = "ltv_features"
ENGAGEMENT_VIEW: Final = "engagement_features"

CHURN_FEATURES: Final[dict[str, Dtype]] = {
    "recency_days": "float64",  # days since the last purchase; null without one
    "purchases_7d": "int64",
    "purchases_30d": "int64",
    "purchases_90d": "int64",
    "purchases_365d": "int64",
    "spend_7d": "float64",
    "spend_30d": "float64",
    "spend_90d": "float64",
    "spend_365d": "float64",
    "tenure_days": "float64",  # since the first event or the profile's signup, whichever is first
    "ipt_mean_days": "float64",  # inter-purchase time; null with fewer than two purchases
    "ipt_std_days": "float64",  # null with fewer than three purchases
    "sessions_7d": "int64",
    "sessions_30d": "int64",
    "days_since_last_session": "float64",
    "session_trend_30d": "float64",  # (sessions last 30 d + 1) / (sessions the 30 d before + 1)
    "purchase_trend_90d": "float64",  # (purchases last 90 d + 1) / (purchases the 90 d before + 1)
    "cart_abandons_30d": "int64",
    "cart_abandons_90d": "int64",
    "refunds_90d": "int64",
    "refunds_365d": "int64",
    "refund_amount_365d": "float64",
}

LTV_FEATURES: Final[dict[str, Dtype]] = {
    "purchases_total": "int64",
    "spend_total": "float64",  # gross purchase totals, refunds not deducted
    "avg_order_value": "float64",  # null without a purchase
    "max_order_value": "float64",
    "spend_trend_90d": "float64",  # (last 90 d − the 90 d before) / their sum, 0 without spend
    "bgnbd_x": "int64",  # repeat purchase days: distinct UTC purchase days − 1
    "bgnbd_t_x": "float64",  # days from the first to the last purchase day; null without purchase
    "bgnbd_age": "float64",  # T: days from the first purchase day's start to t; null without one
    "gg_monetary": "float64",  # mean spend per repeat purchase day (Gamma-Gamma); null if x = 0
}

ENGAGEMENT_FEATURES: Final[dict[str, Dtype]] = {
    "emails_sent_7d": "int64",  # fatigue
    "emails_sent_30d": "int64",
    "emails_sent_90d": "int64",
    "emails_opened_30d": "int64",
    "emails_opened_90d": "int64",
    "emails_clicked_30d": "int64",
    "emails_clicked_90d": "int64",
    "emails_bounced_90d": "int64",
    "emails_sent_decayed": "float64",  # Σ 0.5^(age / half-life) over the last 365 days
    "emails_opened_decayed": "float64",
    "emails_clicked_decayed": "float64",
    "email_open_rate_90d": "float64",  # smoothed towards a prior, see compute.engagement
    "email_click_rate_90d": "float64",
    "email_open_rate_decayed": "float64",  # the recency-weighted open rate
    "days_since_last_open": "float64",
    "days_since_last_email": "float64",
    "email_unsubscribed": "int64",  # 1 once an `unsubscribed` event was seen
    "preferred_send_hour": "int64",  # local hour 0–23 with most opens; UNKNOWN_HOUR without opens
    "preferred_send_hour_opens": "int64",  # opens at that hour (the preference's support)
}

VIEW_FEATURES: Final[dict[str, dict[str, Dtype]]] = {
    CHURN_VIEW: CHURN_FEATURES,
    LTV_VIEW: LTV_FEATURES,
    ENGAGEMENT_VIEW: ENGAGEMENT_FEATURES,
}
VIEW_NAMES: Final[tuple[str, ...]] = tuple(VIEW_FEATURES)

# What each built-in model reads, by view (the definitions in models/definitions say the same;
# tests/features/test_catalog.py checks it): one Feast feature service per model. A model may
# borrow from another model's view (names are unique across views, so no prefixes): churn
# also reads email engagement, ltv the purchase recency and windows, engagement the browsing.
SERVICE_FEATURES: Final[dict[str, dict[str, tuple[str, ...]]]] = {
    "churn": {CHURN_VIEW: tuple(CHURN_FEATURES), ENGAGEMENT_VIEW: tuple(ENGAGEMENT_FEATURES)},
    "ltv": {
        LTV_VIEW: tuple(LTV_FEATURES),
        CHURN_VIEW: (
            "recency_days",
            "tenure_days",
            "purchases_30d",
            "purchases_90d",
            "purchases_365d",
            "spend_30d",
            "spend_90d",
            "spend_365d",
            "ipt_mean_days",
            "refund_amount_365d",
        ),
    },
    "engagement": {
        ENGAGEMENT_VIEW: tuple(ENGAGEMENT_FEATURES),
        CHURN_VIEW: ("sessions_7d", "sessions_30d", "days_since_last_session", "tenure_days"),
    },
}
MODEL_NAMES: Final[tuple[str, ...]] = tuple(SERVICE_FEATURES)


def model_features(model: str, definitions: Definitions | None = None) -> dict[str, Dtype]:
    """A model's features and their dtypes, in the order training frames and online reads use.

    Models come from the definitions (`models.definitions`, default NUDGE_MODELS_DIR); the
    built-in three read `SERVICE_FEATURES`.
    """
    from features.catalog import catalog

    return catalog(definitions).model_features(model)


def feature_refs(model: str, definitions: Definitions | None = None) -> list[str]:
    """A model's features as Feast references, ``view:feature``."""
    from features.catalog import catalog

    return catalog(definitions).feature_refs(model)


def table_columns(view: str, definitions: Definitions | None = None) -> list[str]:
    """The columns of a view's feature table, in order: entity key, timestamp, features."""
    return [ENTITY_KEY, TIMESTAMP_COLUMN, *view_features(view, definitions)]


def view_features(view: str, definitions: Definitions | None = None) -> dict[str, Dtype]:
    """A view's features and dtypes: a standard view's, or a definition's own view's."""
    if view in VIEW_FEATURES:
        return VIEW_FEATURES[view]
    from features.catalog import catalog

    views = catalog(definitions).views
    if view not in views:
        raise ValueError(f"unknown feature view {view!r}; known: {list(views)}")
    return views[view]

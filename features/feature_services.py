"""One feature service per model (churn, ltv, engagement): what each model reads.

The composition lives in `features.schema.SERVICE_FEATURES`, plain Python, so that training and
serving code can name a model's features without importing Feast.
"""

from __future__ import annotations

from feast import FeatureService, FeatureView

from features.schema import SERVICE_FEATURES

__all__ = ["feature_services"]

_DESCRIPTIONS = {
    "churn": "Churn risk: no purchase in the next 90 days.",
    "ltv": "Predicted spend over the next 90 days.",
    "engagement": "Email open or click in the next 14 days; preferred send hour.",
}


def feature_services(views: list[FeatureView]) -> list[FeatureService]:
    """The churn, ltv and engagement services over the given views."""
    by_name = {view.name: view for view in views}
    return [
        FeatureService(
            name=model,
            features=[by_name[view][list(names)] for view, names in parts.items()],
            description=_DESCRIPTIONS[model],
        )
        for model, parts in SERVICE_FEATURES.items()
    ]

"""Baselines every learned model must beat (see ARCHITECTURE.md, "Models").

`bgnbd`: BG/NBD purchase counts and Gamma-Gamma spend (churn via P(alive), LTV via expected spend).
`rfm`: RFM logistic regression (churn), historical average LTV, recency-weighted open rate.
Names are re-exported here lazily, so importing one module does not import the other's stack.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.baselines.bgnbd import (
        BetaGeoModel,
        GammaGammaModel,
        expected_spend,
        summarize_transactions,
    )
    from models.baselines.rfm import (
        HistoricalAverageLTV,
        RecencyWeightedOpenRate,
        RFMLogisticRegression,
    )

__all__ = [
    "BetaGeoModel",
    "GammaGammaModel",
    "HistoricalAverageLTV",
    "RFMLogisticRegression",
    "RecencyWeightedOpenRate",
    "expected_spend",
    "summarize_transactions",
]

_MODULE_OF = {
    "BetaGeoModel": "bgnbd",
    "GammaGammaModel": "bgnbd",
    "expected_spend": "bgnbd",
    "summarize_transactions": "bgnbd",
    "HistoricalAverageLTV": "rfm",
    "RFMLogisticRegression": "rfm",
    "RecencyWeightedOpenRate": "rfm",
}


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_MODULE_OF[name]}"), name)

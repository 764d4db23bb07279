"""The planted truth the simulator draws from: segments, their behaviour and email effects.

Defaults live here; `nudge simulate --planted FILE.yaml` overrides any part of them. The effect
table says how much a triggered email raises a customer's chance to buy within the attribution
window, per segment and per send delay — the answer the optimizer has to find.
"""

from __future__ import annotations

import itertools
import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.dsl.bounded_yaml import load_yaml_file
from engine.dsl.durations import format_duration, parse_duration
from engine.errors import UserError

__all__ = ["PlantedConfig", "SegmentSpec", "load_planted"]


class SegmentSpec(BaseModel):
    """How customers of one latent segment behave."""

    model_config = ConfigDict(extra="forbid")

    share: float = Field(gt=0, le=1, description="fraction of customers in this segment")
    purchase_interval_days: float = Field(
        gt=0, description="mean days between purchases while active (Gamma-distributed rate)"
    )
    purchase_rate_shape: float = Field(
        default=2.0, gt=0, description="Gamma shape r of the purchase rate (heterogeneity)"
    )
    dropout_a: float = Field(gt=0, description="Beta(a, b) of the dropout chance after a purchase")
    dropout_b: float = Field(gt=0)
    order_value_mean: float = Field(gt=0, description="mean order value")
    sessions_per_purchase: float = Field(
        ge=0, description="browsing sessions without a purchase, per purchase"
    )
    cart_add_rate: float = Field(ge=0, le=1, description="chance a browsing session adds to cart")
    email_engagement: float = Field(
        gt=0, lt=1, description="mean chance to open a marketing email at the best hour"
    )
    preferred_hour: int = Field(ge=0, le=23, description="centre of the best local send hour")
    conversion_baseline: float = Field(
        ge=0, lt=1, description="chance to buy within the attribution window without an email"
    )

    @property
    def mean_dropout(self) -> float:
        return self.dropout_a / (self.dropout_a + self.dropout_b)


DEFAULT_SEGMENTS: dict[str, dict[str, Any]] = {
    "loyal": dict(
        share=0.20,
        purchase_interval_days=20,
        purchase_rate_shape=3.0,
        dropout_a=1.0,
        dropout_b=14.0,
        order_value_mean=80.0,
        sessions_per_purchase=1.5,
        cart_add_rate=0.25,
        email_engagement=0.40,
        preferred_hour=8,
        conversion_baseline=0.08,
    ),
    "bargain_hunter": dict(
        share=0.30,
        purchase_interval_days=40,
        purchase_rate_shape=2.0,
        dropout_a=1.5,
        dropout_b=9.0,
        order_value_mean=35.0,
        sessions_per_purchase=3.0,
        cart_add_rate=0.35,
        email_engagement=0.30,
        preferred_hour=20,
        conversion_baseline=0.05,
    ),
    "browser": dict(
        share=0.30,
        purchase_interval_days=110,
        purchase_rate_shape=1.5,
        dropout_a=2.0,
        dropout_b=6.0,
        order_value_mean=50.0,
        sessions_per_purchase=8.0,
        cart_add_rate=0.20,
        email_engagement=0.18,
        preferred_hour=13,
        conversion_baseline=0.02,
    ),
    "at_risk": dict(
        share=0.20,
        purchase_interval_days=60,
        purchase_rate_shape=1.5,
        dropout_a=3.0,
        dropout_b=5.0,
        order_value_mean=60.0,
        sessions_per_purchase=2.0,
        cart_add_rate=0.25,
        email_engagement=0.12,
        preferred_hour=18,
        conversion_baseline=0.03,
    ),
}

# Absolute conversion uplift of a triggered email by segment and send delay. Bargain hunters
# answer best at once, loyal customers a day later, browsers not at all.
DEFAULT_UPLIFT: dict[str, dict[str, float]] = {
    "loyal": {"1h": 0.01, "4h": 0.02, "24h": 0.05},
    "bargain_hunter": {"1h": 0.06, "4h": 0.03, "24h": 0.01},
    "browser": {"1h": 0.0, "4h": 0.0, "24h": 0.0},
    "at_risk": {"1h": 0.02, "4h": 0.04, "24h": 0.02},
}


class PlantedConfig(BaseModel):
    """Everything the simulator plants; validated, so a typo in the YAML is an error."""

    model_config = ConfigDict(extra="forbid")

    segments: dict[str, SegmentSpec] = Field(
        default_factory=lambda: {k: SegmentSpec(**v) for k, v in DEFAULT_SEGMENTS.items()}
    )
    uplift: dict[str, dict[str, float]] = Field(default_factory=lambda: dict(DEFAULT_UPLIFT))
    attribution_window: timedelta = Field(default=timedelta(hours=72))
    campaign_sends_per_week: float = Field(default=0.5, ge=0, le=14)
    consent_email_rate: float = Field(default=0.88, ge=0, le=1)
    unsubscribe_rate: float = Field(
        default=0.002, ge=0, lt=1, description="chance per marketing email, times fatigue"
    )
    bounce_rate: float = Field(default=0.02, ge=0, lt=1)
    refund_rate: float = Field(default=0.04, ge=0, lt=1)
    acquisition_share: float = Field(
        default=0.9, gt=0, le=1, description="signups spread over this first part of the window"
    )

    @field_validator("attribution_window", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> timedelta:
        return parse_duration(value)

    @field_validator("uplift", mode="after")
    @classmethod
    def _delays_parse(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for segment, table in value.items():
            for delay, effect in table.items():
                parse_duration(delay)
                if not -1 < effect < 1:
                    raise ValueError(
                        f"uplift.{segment}.{delay}: expected a probability change in (-1, 1)"
                    )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> PlantedConfig:
        total = sum(s.share for s in self.segments.values())
        if not math.isclose(total, 1.0, abs_tol=0.01):
            raise ValueError(f"segments: shares must add up to 1 (they add up to {total:.3f})")
        unknown = set(self.uplift) - set(self.segments)
        if unknown:
            raise ValueError(
                f"uplift: unknown segment(s) {sorted(unknown)}; segments are {sorted(self.segments)}"
            )
        missing = set(self.segments) - set(self.uplift)
        if missing:
            raise ValueError(f"uplift: no effects given for segment(s) {sorted(missing)}")
        delays = {frozenset(t) for t in self.uplift.values()}
        if len(delays) != 1:
            raise ValueError("uplift: every segment must list the same delays")
        return self

    @property
    def segment_names(self) -> list[str]:
        return list(self.segments)

    @property
    def delays(self) -> list[timedelta]:
        """The planted delay variants, shortest first."""
        first = next(iter(self.uplift.values()))
        return sorted(parse_duration(d) for d in first)

    def effect(self, segment: str, delay: timedelta) -> float:
        """Planted uplift for `segment` at `delay`, interpolated on log-hours between variants."""
        table = {parse_duration(k): v for k, v in self.uplift[segment].items()}
        points = sorted(table)
        hours = max(delay.total_seconds(), 60) / 3600
        if hours <= points[0].total_seconds() / 3600:
            return table[points[0]]
        for lo, hi in itertools.pairwise(points):
            lo_h, hi_h = lo.total_seconds() / 3600, hi.total_seconds() / 3600
            if hours <= hi_h:
                w = (math.log(hours) - math.log(lo_h)) / (math.log(hi_h) - math.log(lo_h))
                return table[lo] + w * (table[hi] - table[lo])
        return table[points[-1]]

    def best_delay(self, segment: str) -> str | None:
        """The planted best delay label for a segment, or None when all delays are equal."""
        table = self.uplift[segment]
        values = sorted(table.values())
        if math.isclose(values[0], values[-1]):
            return None
        return max(table, key=table.__getitem__)

    def to_yaml(self) -> str:
        data = self.model_dump(mode="python")
        data["attribution_window"] = format_duration(self.attribution_window)
        return yaml.safe_dump(data, sort_keys=False)


def load_planted(path: Path | None) -> PlantedConfig:
    """Defaults, overridden by the YAML at `path` (segments given there replace the defaults)."""
    if path is None:
        return PlantedConfig()
    data = load_yaml_file(Path(path)) or {}  # bounded: size, nesting, alias expansion
    if not isinstance(data, dict):
        raise PlantedFileError(f"{path}: expected a mapping at the top level")
    try:
        return PlantedConfig.model_validate(data)
    except ValidationError as exc:
        from engine.events import describe_validation_error

        raise PlantedFileError(f"{path}: " + "; ".join(describe_validation_error(exc))) from None


class PlantedFileError(UserError):
    """A planted-truth file the simulator refuses; the message names the file and the field."""

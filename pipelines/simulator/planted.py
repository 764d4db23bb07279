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

__all__ = [
    "RESPONSE_TYPES",
    "PlantedConfig",
    "ResponseTypeSpec",
    "ResponseTypes",
    "SegmentSpec",
    "load_planted",
]


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


RESPONSE_TYPES = ("persuadable", "sure_thing", "lost_cause", "sleeping_dog")
"""The four answers to a message of uplift modelling: buys only if mailed, buys anyway, never
buys, and buys less (and unsubscribes more) when mailed."""


class ResponseTypeSpec(BaseModel):
    """How a customer of one response type answers a triggered email."""

    model_config = ConfigDict(extra="forbid")

    baseline: float = Field(
        ge=0, lt=1, description="chance to buy within the attribution window without an email"
    )
    uplift: float = Field(
        gt=-1, lt=1, description="change in that chance from an email sent at the best delay"
    )
    unsubscribe: float = Field(
        default=0.0, ge=0, lt=1, description="extra chance to unsubscribe per email"
    )


DEFAULT_RESPONSE_TYPES: dict[str, dict[str, float]] = {
    "persuadable": dict(baseline=0.03, uplift=0.15),
    "sure_thing": dict(baseline=0.30, uplift=0.0),
    "lost_cause": dict(baseline=0.005, uplift=0.0),
    "sleeping_dog": dict(baseline=0.12, uplift=-0.08, unsubscribe=0.08),
}

# Which response types each segment holds: loyal customers are mostly sure things, bargain
# hunters mostly persuadable, browsers mostly lost causes, at-risk customers split between
# persuadables and sleeping dogs — so that behaviour (the features) reveals the type, partly.
DEFAULT_TYPE_SHARES: dict[str, dict[str, float]] = {
    "loyal": {"persuadable": 0.15, "sure_thing": 0.55, "lost_cause": 0.10, "sleeping_dog": 0.20},
    "bargain_hunter": {
        "persuadable": 0.50,
        "sure_thing": 0.20,
        "lost_cause": 0.20,
        "sleeping_dog": 0.10,
    },
    "browser": {"persuadable": 0.15, "sure_thing": 0.05, "lost_cause": 0.60, "sleeping_dog": 0.20},
    "at_risk": {"persuadable": 0.35, "sure_thing": 0.10, "lost_cause": 0.20, "sleeping_dog": 0.35},
}


class ResponseTypes(BaseModel):
    """Customer-level treatment effects, planted on top of the segments (off by default).

    Each segment's customers are split into response types by its shares (from a random stream
    of its own, so that every other draw of the simulation stays as it is). ``signal`` ties the
    type to behaviour a marketer can see: sure things are picked among the frequent buyers,
    then persuadables among the most and sleeping dogs among the least email-engaged of the
    rest — each ranking blended with chance, ``signal · rank + (1 − signal) · noise``. A typed customer's chance
    to buy within the attribution window is the type's ``baseline`` without an email, and
    ``baseline + uplift · f(delay)`` with one, where f scales the segment's delay table to 1 at
    its best delay (the delay experiment keeps its answer). Sleeping dogs also unsubscribe with
    the chance ``unsubscribe`` per email, triggered or campaign.
    """

    model_config = ConfigDict(extra="forbid")

    types: dict[str, ResponseTypeSpec] = Field(
        default_factory=lambda: {
            k: ResponseTypeSpec(**v) for k, v in DEFAULT_RESPONSE_TYPES.items()
        }
    )
    shares: dict[str, dict[str, float]] = Field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_TYPE_SHARES.items()}
    )
    signal: float = Field(
        default=0.8,
        ge=0,
        le=1,
        description="how much behaviour decides the type within a segment (0: chance alone)",
    )

    @model_validator(mode="after")
    def _known_types(self) -> ResponseTypes:
        if set(self.types) != set(RESPONSE_TYPES):
            raise ValueError(f"response_types.types: expected exactly {', '.join(RESPONSE_TYPES)}")
        for segment, table in self.shares.items():
            unknown = set(table) - set(RESPONSE_TYPES)
            if unknown:
                raise ValueError(
                    f"response_types.shares.{segment}: unknown type(s) {sorted(unknown)}"
                )
            if any(v < 0 for v in table.values()) or not math.isclose(
                sum(table.values()), 1.0, abs_tol=0.01
            ):
                raise ValueError(
                    f"response_types.shares.{segment}: shares must be >= 0 and add up to 1"
                )
        return self


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
    response_types: ResponseTypes | None = Field(
        default=None, description="customer-level treatment effects (issue 18); off when absent"
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
        if self.response_types is not None:
            missing = set(self.segments) - set(self.response_types.shares)
            extra = set(self.response_types.shares) - set(self.segments)
            if missing or extra:
                raise ValueError(
                    "response_types.shares: expected one entry per segment "
                    f"({', '.join(self.segments)})"
                )
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

    def delay_factor(self, segment: str, delay: timedelta) -> float:
        """The segment's planted effect at ``delay`` relative to its best delay's (1 there); 1
        for a segment whose table holds no positive effect (a flat table carries no timing)."""
        best = max(self.uplift[segment].values())
        return self.effect(segment, delay) / best if best > 0 else 1.0

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
        if data["response_types"] is None:  # off: the file reads as before the option existed
            del data["response_types"]
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

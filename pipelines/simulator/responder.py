"""The closed-loop responder: how a simulated customer answers a triggered email.

Given a customer, a send time, a template and the delay between trigger and send, it samples the
customer's open, click and purchase from the planted truth. Answers are deterministic per
(seed, customer, send time, template, delay), so replaying the same send gives the same answer —
which is what exactly-once tests need.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from pipelines.simulator.planted import PlantedConfig

__all__ = ["EmailResponse", "Responder", "UnknownCustomerError"]


class UnknownCustomerError(KeyError):
    """The responder was asked about a customer the simulation does not have."""


@dataclass(frozen=True)
class EmailResponse:
    """What a customer did with one triggered email (None: did not happen)."""

    customer_id: str
    segment: str
    delivered: bool
    opened_at: datetime | None
    clicked_at: datetime | None
    converted_at: datetime | None
    revenue: float
    conversion_probability: float
    unsubscribed: bool = False
    """A sleeping dog pushed away by the email (only with planted response types)."""

    @property
    def converted(self) -> bool:
        return self.converted_at is not None


class Responder:
    """Samples responses to triggered emails from a simulation's planted truth."""

    def __init__(self, truth: pd.DataFrame, planted: PlantedConfig, seed: int) -> None:
        self.planted = planted
        self.seed = seed
        self._truth = truth.set_index("customer_id")

    @classmethod
    def from_directory(cls, path: Path | str) -> Responder:
        """Load the responder of a simulation written by `write_simulation`."""
        from pipelines.simulator.output import read_truth

        truth, planted, summary = read_truth(Path(path))
        return cls(truth, planted, int(summary["seed"]))

    def segment_of(self, customer_id: str) -> str:
        return str(self._row(customer_id)["segment"])

    def conversion_probability(self, customer_id: str, delay: timedelta | None) -> float:
        """Chance to buy within the attribution window: baseline, plus the email's planted uplift.

        With planted response types, the customer's type decides both (its baseline, and its
        uplift scaled by the segment's delay factor); without, the segment does.
        """
        row = self._row(customer_id)
        segment = str(row["segment"])
        types = self.planted.response_types
        if types is not None:
            spec = types.types[str(row["response_type"])]
            if delay is None:
                return spec.baseline
            lift = spec.uplift * self.planted.delay_factor(segment, delay)
            return min(max(spec.baseline + lift, 0.0), 1.0)
        base = self.planted.segments[segment].conversion_baseline
        if delay is None:
            return base
        return min(max(base + self.planted.effect(segment, delay), 0.0), 1.0)

    def uplift(self, customer_id: str, delay: timedelta) -> float:
        """The oracle: how much an email sent ``delay`` after the trigger changes the chance."""
        return self.conversion_probability(customer_id, delay) - self.conversion_probability(
            customer_id, None
        )

    def respond(
        self, customer_id: str, sent_at: datetime, template: str, delay: timedelta
    ) -> EmailResponse:
        """Sample opens, clicks and a conversion for an email sent `delay` after its trigger."""
        row = self._row(customer_id)
        rng = self._rng(customer_id, sent_at, template, delay)
        draws = rng.random(6)
        segment = str(row["segment"])
        delivered = draws[0] >= self.planted.bounce_rate
        p_open = float(row["email_engagement"]) * _hour_factor(
            sent_at, str(row["timezone"]), int(row["preferred_hour"])
        )
        opened_at = (
            sent_at + timedelta(hours=rng.exponential(1.5))
            if delivered and draws[1] < p_open
            else None
        )
        clicked_at = None
        if opened_at is not None and draws[2] < 0.12 + 0.35 * float(row["email_engagement"]):
            clicked_at = opened_at + timedelta(minutes=rng.exponential(10))
        p_convert = (
            self.conversion_probability(customer_id, delay)
            if delivered
            else self.conversion_probability(customer_id, None)
        )
        converted_at, revenue = None, 0.0
        if draws[3] < p_convert:
            window = self.planted.attribution_window.total_seconds()
            converted_at = sent_at + timedelta(seconds=float(draws[4]) * window)
            mean = float(row["order_value_mean"])
            revenue = round(float(rng.gamma(4.0, mean / 4.0)), 2)
        unsubscribed = False
        if delivered and self.planted.response_types is not None:
            # draws[5] was drawn and unused before: the other answers stay as they were.
            spec = self.planted.response_types.types[str(row["response_type"])]
            unsubscribed = bool(draws[5] < spec.unsubscribe)
        return EmailResponse(
            customer_id,
            segment,
            delivered,
            opened_at,
            clicked_at,
            converted_at,
            revenue,
            p_convert,
            unsubscribed,
        )

    def respond_without_email(self, customer_id: str, at: datetime) -> EmailResponse:
        """What a held-out customer (no email) does in the attribution window after `at`."""
        rng = self._rng(customer_id, at, "(holdout)", timedelta(0))
        draws = rng.random(3)
        p_convert = self.conversion_probability(customer_id, None)
        converted_at, revenue = None, 0.0
        if draws[0] < p_convert:
            converted_at = at + timedelta(
                seconds=float(draws[1]) * self.planted.attribution_window.total_seconds()
            )
            revenue = round(
                float(rng.gamma(4.0, float(self._row(customer_id)["order_value_mean"]) / 4.0)), 2
            )
        return EmailResponse(
            customer_id,
            self.segment_of(customer_id),
            False,
            None,
            None,
            converted_at,
            revenue,
            p_convert,
        )

    def _row(self, customer_id: str) -> pd.Series:
        try:
            return self._truth.loc[customer_id]
        except KeyError:
            raise UnknownCustomerError(
                f"customer {customer_id!r} is not in this simulation"
            ) from None

    def _rng(
        self, customer_id: str, at: datetime, template: str, delay: timedelta
    ) -> np.random.Generator:
        stamp = at.astimezone(UTC).isoformat() if at.tzinfo else at.isoformat()
        key = f"{self.seed}|{customer_id}|{stamp}|{template}|{delay.total_seconds()}".encode()
        return np.random.default_rng(
            int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
        )


def _hour_factor(sent_at: datetime, zone: str, preferred_hour: int) -> float:
    """Open chance relative to the best hour: 1 at the preferred local hour, 0.35 far from it."""
    local_hour = sent_at.astimezone(ZoneInfo(zone)).hour
    distance = abs(local_hour - preferred_hour)
    distance = min(distance, 24 - distance)
    return 0.35 + 0.65 * math.exp(-(distance**2) / (2 * 2.5**2))

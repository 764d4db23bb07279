"""The events contract: what an event and a customer profile look like, and how bad input is told.

Every way into nudge (HTTP, files, the simulator) produces these shapes. Timestamps are always
time-zone aware; a naive timestamp is an error unless the caller says explicitly which zone it is
in (``validate_event(data, naive_timezone="UTC")``).
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "AMOUNT_KEYS",
    "STANDARD_EVENT_TYPES",
    "CustomerProfile",
    "Event",
    "EventType",
    "Location",
    "describe_validation_error",
    "event_amount",
    "validate_event",
]


class EventType(StrEnum):
    """The standard event types; any other well-formed type is accepted too."""

    SIGNUP = "signup"
    SESSION_START = "session_start"
    PAGE_VIEW = "page_view"
    PRODUCT_VIEW = "product_view"
    CART_ADD = "cart_add"
    CART_ABANDONED = "cart_abandoned"
    CHECKOUT_STARTED = "checkout_started"
    PURCHASE_COMPLETED = "purchase_completed"
    REFUND = "refund"
    EMAIL_SENT = "email_sent"
    EMAIL_DELIVERED = "email_delivered"
    EMAIL_OPENED = "email_opened"
    EMAIL_CLICKED = "email_clicked"
    EMAIL_BOUNCED = "email_bounced"
    UNSUBSCRIBED = "unsubscribed"
    SUBSCRIPTION_CHANGED = "subscription_changed"


STANDARD_EVENT_TYPES: frozenset[str] = frozenset(t.value for t in EventType)

# Property keys that carry an event's money value, in order of preference: the lake keeps the
# first one present as a typed `amount` column so that features need not parse JSON.
AMOUNT_KEYS: tuple[str, ...] = ("amount", "total", "cart_value")

EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9_.:-]{0,63}$"
_ID_PATTERN = r"^[^\s].{0,127}$"


class Location(BaseModel):
    """Where an event happened, as far as the source knows."""

    model_config = ConfigDict(extra="forbid")

    country: str | None = Field(
        default=None, pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2"
    )
    region: str | None = None
    city: str | None = None
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)


class Event(BaseModel):
    """One customer event. `event_id` makes ingestion idempotent."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)

    event_id: str = Field(min_length=1, max_length=128, pattern=_ID_PATTERN)
    customer_id: str = Field(min_length=1, max_length=128, pattern=_ID_PATTERN)
    event_type: str
    timestamp: datetime
    properties: dict[str, Any] = Field(default_factory=dict)
    session_id: str | None = Field(default=None, max_length=128)
    source: str | None = Field(default=None, max_length=64)
    device: str | None = Field(default=None, max_length=64)
    location: Location | None = None

    @field_validator("event_type", mode="after")
    @classmethod
    def _well_formed_event_type(cls, value: str) -> str:
        value = value.strip().lower()
        if not re.fullmatch(EVENT_TYPE_PATTERN, value):
            raise PydanticCustomError(
                "event_type",
                "expected a name such as cart_abandoned: a letter, then letters, digits or _ . : -"
                " (at most 64 characters)",
            )
        return value

    @field_validator("timestamp", mode="after")
    @classmethod
    def _require_time_zone(cls, value: datetime, info: ValidationInfo) -> datetime:
        if value.tzinfo is not None and value.utcoffset() is not None:
            return value
        zone = (info.context or {}).get("naive_timezone")
        if zone:
            return value.replace(tzinfo=ZoneInfo(zone))
        raise PydanticCustomError(
            "naive_timestamp",
            "has no time zone; expected ISO 8601 with an offset, e.g. 2026-01-31T09:00:00+00:00 "
            "or ...Z (or say which zone naive times are in)",
        )

    @field_validator("properties", mode="after")
    @classmethod
    def _require_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise PydanticCustomError(
                "not_json",
                "must be a JSON object (no NaN, no binary values): {error}",
                {"error": str(exc)},
            ) from None
        return value

    @property
    def amount(self) -> float | None:
        """The money value the event carries (see `AMOUNT_KEYS`), if any."""
        return event_amount(self.properties)

    @property
    def is_standard_type(self) -> bool:
        return self.event_type in STANDARD_EVENT_TYPES


class CustomerProfile(BaseModel):
    """A customer's attributes as nudge knows them; only `customer_id` is required."""

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)

    customer_id: str = Field(min_length=1, max_length=128, pattern=_ID_PATTERN)
    email: EmailStr | None = None
    first_name: str | None = Field(default=None, max_length=100)
    last_name: str | None = Field(default=None, max_length=100)
    timezone: str | None = Field(
        default=None, description="IANA time zone name, e.g. Europe/Berlin"
    )
    country: str | None = Field(
        default=None, pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2"
    )
    language: str | None = Field(default=None, max_length=16)
    consent_email: bool = False
    consent_sms: bool = False
    consent_push: bool = False
    signup_at: datetime | None = None
    acquisition_channel: str | None = Field(default=None, max_length=64)

    @field_validator("timezone", mode="after")
    @classmethod
    def _known_time_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise PydanticCustomError(
                "unknown_timezone",
                "'{value}' is not an IANA time zone name (e.g. Europe/Berlin, America/New_York)",
                {"value": value},
            ) from None
        return value

    @field_validator("signup_at", mode="after")
    @classmethod
    def _aware_signup(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.utcoffset() is None:
            raise PydanticCustomError(
                "naive_timestamp", "has no time zone; expected ISO 8601 with an offset"
            )
        return value


def validate_event(data: Any, *, naive_timezone: str | None = None) -> Event:
    """Validate one raw event (dict or JSON string); naive times are read in `naive_timezone`."""
    context = {"naive_timezone": naive_timezone} if naive_timezone else None
    if isinstance(data, str | bytes):
        return Event.model_validate_json(data, context=context)
    return Event.model_validate(data, context=context)


def describe_validation_error(error: ValidationError) -> list[str]:
    """One readable line per problem: ``field.path: what was expected (got ...)``."""
    lines = []
    for problem in error.errors(include_url=False):
        path = ".".join(str(part) for part in problem["loc"]) or "(event)"
        message = problem["msg"]
        if problem["type"] == "missing":
            message = "is required"
        elif problem["type"] == "extra_forbidden":
            message = "is not a field of this contract"
        got = problem.get("input")
        shown = (
            "" if problem["type"] in {"missing"} or isinstance(got, dict) else f" (got {got!r:.60})"
        )
        lines.append(f"{path}: {message}{shown}")
    return lines


def event_amount(properties: dict[str, Any]) -> float | None:
    """The first numeric value among `AMOUNT_KEYS` in an event's properties."""
    for key in AMOUNT_KEYS:
        value = properties.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                continue
            if math.isfinite(number):
                return number
    return None

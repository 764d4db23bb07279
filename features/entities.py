"""The Feast entity every view is keyed by: the customer."""

from __future__ import annotations

from feast import Entity, ValueType

from features.schema import ENTITY_KEY

__all__ = ["customer"]


def customer() -> Entity:
    """The customer entity, joined on `customer_id` (the events contract's string id)."""
    return Entity(
        name="customer",
        join_keys=[ENTITY_KEY],
        value_type=ValueType.STRING,
        description="A customer of the shop, as identified in the event stream.",
    )

"""The customer API: look a customer up, page through a segment, erase a customer.

- ``GET /v1/customers/{id}``: the profile (without the consent flags), the consent flags, the
  segments, the latest score of each model the engine decided with (value, model version, when)
  and the newest events first (``?events=`` how many, default 50);
- ``GET /v1/segments/{name}``: the members in customer-id order, ``?limit=`` at a time, with
  ``next`` the cursor for ``?after=`` (stable while members are added: keyset, not offset);
- ``DELETE /v1/customers/{id}``: erasure (engine.runtime.erasure), then the customer is 404.

Every route needs the API key (``X-API-Key``), like the rest of the engine's ``/v1``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query

from engine.events import CONSENT_KEYS
from engine.limits import text_problem
from engine.store import EngineDB
from engine.store.customer_view import (
    customer_exists,
    customer_segments,
    latest_scores,
    recent_events,
    segment_page,
)
from engine.store.customers import load_profiles
from engine.store.identity import links_of
from nudge.security import api_key_dependency

__all__ = ["customer_view", "customers_router"]

MAX_EVENTS = 1000
MAX_PAGE = 1000


def _plain(value: str, name: str) -> str:
    problem = text_problem(value, controls=True)
    if problem or not value.strip():
        raise HTTPException(422, [f"{name}: must be plain text: {problem or 'empty'}"])
    return value


def customer_view(store: EngineDB, customer_id: str, events: int = 50) -> dict[str, Any] | None:
    """What the engine knows of a customer (the body of ``GET /v1/customers/{id}``), or None."""
    with store.connect() as conn:
        if not customer_exists(conn, customer_id):
            return None
        profile = load_profiles(conn, [customer_id]).get(customer_id, {"customer_id": customer_id})
        segments = customer_segments(conn, customer_id)
        scores = latest_scores(conn, customer_id)
        rows = recent_events(conn, customer_id, events)
        linked = [link.anonymous_id for link in links_of(conn, customer_id)]
    consent = {key.removeprefix("consent_"): bool(profile.get(key, False)) for key in CONSENT_KEYS}
    attributes = {k: v for k, v in profile.items() if k not in CONSENT_KEYS and k != "customer_id"}
    return {
        "customer_id": customer_id,
        "profile": attributes,
        "consent": consent,
        "segments": segments,
        "scores": scores,
        "anonymous_ids": linked,
        "events": [_event(row) for row in rows],
    }


def _event(row: dict[str, Any]) -> dict[str, Any]:
    try:
        properties = json.loads(row["payload"]).get("properties") or {}
    except (ValueError, AttributeError):
        properties = {}
    return {
        "event_id": row["event_id"],
        "event_type": row["event_type"],
        "timestamp": datetime.fromtimestamp(row["occurred_at"], UTC).isoformat(),
        "properties": properties,
    }


def customers_router(
    store: EngineDB,
    api_key: str | None,
    *,
    erase: Callable[[str], dict[str, Any]] | None = None,
) -> APIRouter:
    """The customer routes over `store`; `erase(customer_id)` erases one (DELETE)."""
    require_key = api_key_dependency(api_key, invalid="missing or wrong X-API-Key header")
    router = APIRouter(tags=["customers"], dependencies=[Depends(require_key)])

    @router.get("/v1/customers/{customer_id}")
    def get_customer(
        customer_id: Annotated[str, Path(max_length=128)],
        events: Annotated[int, Query(ge=0, le=MAX_EVENTS, description="Newest first.")] = 50,
    ) -> dict[str, Any]:
        """A customer: profile, consent, segments, latest scores, newest events."""
        view = customer_view(store, _plain(customer_id, "customer_id"), events)
        if view is None:
            raise HTTPException(404, f"no customer {customer_id!r}")
        return view

    @router.get("/v1/segments/{name}")
    def get_segment(
        name: Annotated[str, Path(max_length=128)],
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
        after: Annotated[str | None, Query(max_length=128)] = None,
    ) -> dict[str, Any]:
        """A segment's members, `limit` at a time after the cursor `after`."""
        _plain(name, "name")
        if after is not None:
            _plain(after, "after")
        members, total = store.read(segment_page, name, after=after, limit=limit)
        more = len(members) == limit and (
            store.read(segment_page, name, after=members[-1].customer_id, limit=1)[0] != []
        )
        return {
            "segment": name,
            "total": total,
            "members": [
                {
                    "customer_id": m.customer_id,
                    "added_at": datetime.fromtimestamp(m.added_at, UTC).isoformat(),
                }
                for m in members
            ],
            "next": members[-1].customer_id if more else None,
        }

    @router.delete("/v1/customers/{customer_id}")
    def delete_customer(customer_id: Annotated[str, Path(max_length=128)]) -> dict[str, Any]:
        """Erase a customer (GDPR Art. 17); the answer says what was removed. Then it is 404."""
        _plain(customer_id, "customer_id")
        if erase is None:
            raise HTTPException(
                503, "erasure is not configured on this server (engine serve has it)"
            )
        return erase(customer_id)  # idempotent: again finishes an erasure a failure interrupted

    return router

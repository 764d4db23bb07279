"""The engine's HTTP API: event ingestion and customer profiles.

Every `/v1` route needs the API key in the ``X-API-Key`` header (compared in constant time). An
event is durable — committed to the inbox — before the answer is 202; invalid events get 422 with
one message per field, and are kept in the dead-letter table so nothing is lost.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request, status
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from engine.events import CustomerProfile, describe_validation_error
from engine.inbox import accept_events
from engine.store import EngineStore

__all__ = ["MAX_BATCH", "MAX_BODY_BYTES", "create_app"]

MAX_BATCH = 1000
MAX_BODY_BYTES = 5 * 1024 * 1024


def create_app(
    store: EngineStore, api_key: str | None, *, naive_timezone: str | None = None
) -> FastAPI:
    """The ingestion app over `store`; with no `api_key` configured, writes are refused (503)."""
    app = FastAPI(title="nudge engine", version="1", docs_url="/docs")

    def require_key(x_api_key: str | None = Header(default=None)) -> None:
        if not api_key:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, "no API key is configured (set NUDGE_API_KEY)"
            )
        if x_api_key is None or not hmac.compare_digest(x_api_key.encode(), api_key.encode()):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong X-API-Key header")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/events", dependencies=[Depends(require_key)], status_code=202)
    async def ingest(request: Request) -> JSONResponse:
        """One event, or ``{"events": [...]}`` with 1–1000 events (per-item results)."""
        body = await _json_body(request)
        if isinstance(body, dict) and "events" in body:
            items = body["events"]
            if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
                raise HTTPException(422, [f"events: expected a list of 1 to {MAX_BATCH} events"])
            results = accept_events(store, items, source="api", naive_timezone=naive_timezone)
            payload = {
                "accepted": sum(r.status == "accepted" for r in results),
                "duplicates": sum(r.status == "duplicate" for r in results),
                "invalid": sum(r.status == "invalid" for r in results),
                "results": [r.__dict__ for r in results],
            }
            code = 422 if payload["invalid"] == len(results) else 202
            return JSONResponse(payload, status_code=code)
        [result] = accept_events(store, [body], source="api", naive_timezone=naive_timezone)
        if result.status == "invalid":
            return JSONResponse({"detail": result.errors}, status_code=422)
        return JSONResponse({"event_id": result.event_id, "status": result.status}, status_code=202)

    @app.put("/v1/customers/{customer_id}", dependencies=[Depends(require_key)])
    async def put_profile(customer_id: str, request: Request) -> dict[str, Any]:
        """Create or replace a customer's profile."""
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise HTTPException(422, ["(body): expected a JSON object of profile attributes"])
        try:
            profile = CustomerProfile.model_validate({**body, "customer_id": customer_id})
        except ValidationError as exc:
            raise HTTPException(422, describe_validation_error(exc)) from None
        data = profile.model_dump(mode="json", exclude_none=True)
        store.upsert_profiles({customer_id: data}, time.time())
        return {"customer_id": customer_id, "profile": data}

    @app.get("/v1/decisions", dependencies=[Depends(require_key)])
    def list_decisions(trigger_id: str | None = None, limit: int = 100) -> dict[str, Any]:
        """The latest decisions of the execution log (optionally of one trigger)."""
        rows = store.decisions(trigger_id=trigger_id)[-max(1, min(limit, 1000)) :]
        return {"decisions": rows}

    return app


async def _json_body(request: Request) -> Any:
    length = request.headers.get("content-length")
    if length is not None and int(length) > MAX_BODY_BYTES:
        raise HTTPException(413, f"body larger than {MAX_BODY_BYTES // 1024 // 1024} MiB")
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise HTTPException(413, f"body larger than {MAX_BODY_BYTES // 1024 // 1024} MiB")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise HTTPException(422, [f"(body): not valid JSON: {exc}"]) from None

"""The engine's HTTP API: event ingestion and customer profiles.

Every `/v1` route needs the API key in the ``X-API-Key`` header (compared in constant time). An
event is durable — committed to the inbox — before the answer is 202; invalid events get 422 with
one message per field, and are kept in the dead-letter table so nothing is lost. A body that
cannot be read as events at all (not JSON, not UTF-8, too large, not an event or a batch) gets a
4xx with the reason, and its first 64 KiB are kept in the dead letters too. Input never causes a
5xx.

The app freezes the heap its imports left (`gc.freeze` in its lifespan): ~165,000 objects of
modules and classes that never become garbage, and that the cyclic collector otherwise walks at
every full collection — which request bursts trigger, each batch allocating thousands of dicts.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, ValidationError
from pydantic_core import PydanticCustomError
from starlette.requests import ClientDisconnect

from engine.events import CustomerProfile, describe_validation_error
from engine.limits import MAX_STORED_TEXT, json_problem, parse_json, storable_text, text_problem
from engine.runtime.admin_routes import admin_router
from engine.runtime.email_webhooks import email_webhook_router
from engine.runtime.inbox import accept_events
from engine.runtime.live_config import EngineConfig
from engine.runtime.metrics import EngineMetrics, metrics_router
from engine.runtime.provider_routes import provider_router
from engine.runtime.public_routes import public_router
from engine.store import EngineDB, execution_log
from engine.store.customers import upsert_profiles
from engine.store.dead_letters import add_dead_letters
from nudge.heap import frozen_heap
from nudge.security import api_key_dependency

__all__ = ["MAX_BATCH", "MAX_BODY_BYTES", "create_app"]

MAX_BATCH = 1000
MAX_BODY_BYTES = 5 * 1024 * 1024
_DIGITS = re.compile(r"[0-9]{1,20}")


class BadBody(Exception):
    """A request body refused as a whole: the status, the reason, and what was read of it."""

    def __init__(self, code: int, reason: str, raw: bytes) -> None:
        super().__init__(reason)
        self.code, self.reason, self.raw = code, reason, raw

    def http(self) -> HTTPException:
        # 422s are lists of field messages, like the contract's; other codes one sentence
        detail: Any = [self.reason] if self.code == 422 else self.reason
        return HTTPException(self.code, detail)


def create_app(
    store: EngineDB,
    api_key: str | None,
    *,
    naive_timezone: str | None = None,
    max_future: timedelta | float | str | None = None,
    clock: Callable[[], float] = time.time,
    metrics: EngineMetrics | None = None,
    erasure: Callable[[str], dict[str, Any]] | None = None,
    reload: Callable[[], EngineConfig] | None = None,
) -> FastAPI:
    """The ingestion app over `store`; with no `api_key` configured, writes are refused (503).

    Event timestamps may be at most `max_future` (default 1 day) ahead of `clock()`, the
    engine's time when the request arrives. With `metrics`, ``GET /metrics`` serves them.
    `erasure(customer_id)` erases a customer (engine.runtime.erasure.Eraser) for
    ``DELETE /v1/customers/{id}``; without it that route answers 503. `reload` (a
    `LiveConfig.reload`) serves ``POST /v1/admin/reload`` (engine.runtime.admin_routes).
    """
    app = FastAPI(title="nudge engine", version="1", docs_url="/docs", lifespan=frozen_heap)
    if metrics is not None:
        app.include_router(metrics_router(metrics))

    # The scoring service's check too (nudge.security): 503 without a key, 401 on a wrong one.
    require_key = api_key_dependency(api_key, invalid="missing or wrong X-API-Key header")

    def refuse(error: BadBody) -> HTTPException:
        """Keep a refused body in the dead letters (so nothing is lost), then answer 4xx."""
        text = error.raw[: MAX_STORED_TEXT + 4].decode("utf-8", "replace")
        letter = {"event_id": None, "payload": storable_text(text), "source": "api",
                  "reason": storable_text(error.reason, max_chars=2000)}  # fmt: skip
        store.write(add_dead_letters, [letter], time.time())
        return error.http()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/events", dependencies=[Depends(require_key)], status_code=202)
    async def ingest(request: Request) -> JSONResponse:
        """One event, or ``{"events": [...]}`` with 1–1000 events (per-item results)."""
        raw = b""
        try:
            raw = await _read_body(request)
            body = _parse(raw)
            if not isinstance(body, dict):
                raise BadBody(
                    422,
                    '(body): expected one event (a JSON object) or {"events": [...]}, '
                    f"not {_json_type(body)}",
                    raw,
                )
            if "events" in body:
                items = body["events"]
                if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
                    got = f"{len(items)} events" if isinstance(items, list) else _json_type(items)
                    raise BadBody(
                        422, f"events: expected a list of 1 to {MAX_BATCH} events (got {got})", raw
                    )
        except BadBody as error:
            raise refuse(error) from None
        now = clock()
        if "events" in body:
            results = accept_events(store, items, source="api", naive_timezone=naive_timezone,
                                    now=now, max_future=max_future)  # fmt: skip
            payload = {
                "accepted": sum(r.status == "accepted" for r in results),
                "duplicates": sum(r.status == "duplicate" for r in results),
                "invalid": sum(r.status == "invalid" for r in results),
                "results": [r.__dict__ for r in results],
            }
            code = 422 if payload["invalid"] == len(results) else 202
            return JSONResponse(payload, status_code=code)
        [result] = accept_events(store, [body], source="api", naive_timezone=naive_timezone,
                                 now=now, max_future=max_future)  # fmt: skip
        if result.status == "invalid":
            return JSONResponse({"detail": result.errors}, status_code=422)
        return JSONResponse({"event_id": result.event_id, "status": result.status}, status_code=202)

    @app.put("/v1/customers/{customer_id}", dependencies=[Depends(require_key)])
    async def put_profile(customer_id: str, request: Request) -> dict[str, Any]:
        """Create or replace a customer's profile."""
        problem = text_problem(customer_id, controls=True)
        if problem:
            raise HTTPException(422, [f"customer_id: must be plain text: {problem}"])
        try:
            body = _parse(await _read_body(request))
        except BadBody as error:
            raise error.http() from None
        if not isinstance(body, dict):
            raise HTTPException(422, ["(body): expected a JSON object of profile attributes"])
        # The HTTP side of the limits: no structure too deep or too large, nothing unstorable.
        problem = json_problem(body)
        if problem:
            raise HTTPException(422, [storable_text(problem, max_chars=2000)])
        try:
            profile = CustomerProfile.model_validate({**body, "customer_id": customer_id})
        except ValidationError as exc:
            lines = [storable_text(line, max_chars=2000) for line in describe_validation_error(exc)]
            raise HTTPException(422, lines) from None
        data = profile.model_dump(mode="json", exclude_none=True)
        store.write(upsert_profiles, {customer_id: data}, time.time())
        return {"customer_id": customer_id, "profile": data}

    @app.get("/v1/decisions", dependencies=[Depends(require_key)])
    def list_decisions(
        trigger_id: Annotated[str | None, Query(max_length=128), _PLAIN] = None,
        customer_id: Annotated[str | None, Query(max_length=128), _PLAIN] = None,
        limit: Annotated[int, Query(ge=1, le=1000, description="How many, latest last.")] = 100,
    ) -> dict[str, Any]:
        """The latest decisions of the execution log (optionally of one trigger or customer)."""
        rows = store.read(
            execution_log.list_decisions, trigger_id=trigger_id, customer_id=customer_id, last=limit
        )
        return {"decisions": [asdict(row) for row in rows]}

    from engine.runtime.customers_api import customers_router
    from engine.runtime.segment_api import segment_router  # imports this module: here, not on top

    salt = getattr(erasure, "salt", None)  # the Eraser's: erased addresses stay erased
    app.include_router(
        segment_router(store, api_key, max_future=max_future, clock=clock, salt=salt)
    )
    app.include_router(customers_router(store, api_key, erase=erasure))
    app.include_router(provider_router(store, clock=clock))  # Twilio's inbound SMS webhook
    app.include_router(email_webhook_router(store, clock=clock))  # /webhooks/{email provider}
    app.include_router(public_router(store, clock=clock))  # /u /o /c: unsubscribe, tracking
    app.include_router(admin_router(api_key, reload))  # POST /v1/admin/reload
    return app


async def _read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, read as it streams in and never more than `limit` bytes of it (else BadBody).

    Content-Length is checked first (it must be a number; one over the limit is refused after
    reading only enough to keep in the dead letters), then the bytes actually received — a body
    without Content-Length, or with a wrong one, is held to the same limit.
    """
    declared = request.headers.get("content-length")
    expected: int | None = None
    problem: tuple[int, str] | None = None
    if declared is not None:
        if _DIGITS.fullmatch(declared.strip()):
            expected = int(declared)
            if expected > limit:
                problem = (413, _too_large(limit))
        else:
            problem = (400, f"Content-Length: expected a number of bytes (got {declared[:40]!r})")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise BadBody(413, _too_large(limit), b"".join(chunks)[: MAX_STORED_TEXT + 4])
            if problem and size > MAX_STORED_TEXT:
                break  # enough to keep; the rest is not read
    except ClientDisconnect:
        raise BadBody(
            400, "(body): the client went away before sending it all", b"".join(chunks)
        ) from None
    raw = b"".join(chunks)
    if problem:
        raise BadBody(*problem, raw)
    return raw


def _plain_query(value: str | None) -> str | None:
    # A NUL in a query parameter reaches SQL as a parameter, and PostgreSQL refuses it (a 500).
    problem = text_problem(value, controls=True) if value is not None else None
    if problem:
        raise PydanticCustomError("plain_text", "must be plain text: {p}", {"p": problem})
    return value


_PLAIN = AfterValidator(_plain_query)


def _parse(raw: bytes) -> Any:
    try:
        return parse_json(raw)
    except ValueError as exc:
        raise BadBody(422, f"(body): {exc}", raw) from None


def _too_large(limit: int) -> str:
    return f"body larger than {limit // 1024 // 1024} MiB"


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")

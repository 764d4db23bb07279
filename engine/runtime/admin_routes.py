"""``POST /v1/admin/reload``: reload the triggers, templates and suppression policy of a running
engine (`engine.runtime.live_config.LiveConfig.reload`), with the API key like every write.

Request: no body. Responses:

- 200 `ReloadResponse` — ``{"triggers": {id: version}, "warnings": ["file:line: path: …"],
  "templates_dir": "…", "reloaded_at": "2026-…Z"}``: the set now deciding; the next batch runs
  on it;
- 422 ``{"detail": ["file:line: path: problem", …]}`` — the new set is invalid and refused;
  the running set keeps deciding;
- 401 / 503 as every write route (wrong or missing key / no key configured); 503 also when the
  app runs without a reloadable configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from engine.runtime.live_config import ConfigRefused, EngineConfig
from nudge.security import api_key_dependency

__all__ = ["ReloadResponse", "admin_router", "reload_response"]


class ReloadResponse(BaseModel):
    """What ``POST /v1/admin/reload`` answers when the new set is running."""

    triggers: dict[str, str] = Field(description="Enabled trigger id → its version.")
    warnings: list[str] = Field(
        description="Problems that do not refuse the set (unknown event types), file:line first."
    )
    templates_dir: str = Field(description="The templates folder the triggers were checked in.")
    reloaded_at: datetime = Field(description="When the set was loaded (UTC).")


def reload_response(config: EngineConfig) -> ReloadResponse:
    """The route's answer for a loaded `config`."""
    return ReloadResponse(
        triggers=config.versions(),
        warnings=[str(warning) for warning in config.warnings],
        templates_dir=str(config.templates_dir),
        reloaded_at=datetime.fromtimestamp(config.loaded_at, UTC),
    )


def admin_router(api_key: str | None, reload: Callable[[], EngineConfig] | None) -> APIRouter:
    """The admin routes; `reload` is `LiveConfig.reload` (None: the route answers 503)."""
    router = APIRouter()
    require_key = api_key_dependency(api_key, invalid="missing or wrong X-API-Key header")

    # A plain `def`: FastAPI runs it in its thread pool, and the reload may wait for a batch.
    @router.post(
        "/v1/admin/reload",
        dependencies=[Depends(require_key)],
        response_model=ReloadResponse,
        responses={422: {"description": "The new set is invalid; the running set stays."}},
    )
    def reload_configuration() -> ReloadResponse | JSONResponse:
        """Reload triggers, templates and the suppression policy, validated before the swap."""
        if reload is None:
            raise HTTPException(503, "this server has no reloadable configuration")
        try:
            config = reload()
        except ConfigRefused as refused:
            return JSONResponse({"detail": refused.issues}, status_code=422)
        return reload_response(config)

    return router

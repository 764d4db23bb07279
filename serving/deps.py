"""FastAPI dependencies: the app's service and settings, and the API key requirement."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader

from serving.security import key_matches
from serving.service import ScoringService
from serving.settings import ServingSettings

__all__ = ["ApiKey", "Service", "Settings", "get_service", "get_settings", "require_api_key"]


# The dependencies are `async def` because they never block: FastAPI runs a plain `def`
# dependency in its thread pool, one thread hop per dependency per request (~0.1 ms each here).


async def get_service(request: Request) -> ScoringService:
    """The app's `ScoringService` (created by `create_app`)."""
    return request.app.state.service


async def get_settings(request: Request) -> ServingSettings:
    return request.app.state.service.settings


Service = Annotated[ScoringService, Depends(get_service)]
Settings = Annotated[ServingSettings, Depends(get_settings)]

# The header name is fixed in the OpenAPI document at import time; the middleware enforces the
# configured one (the same unless NUDGE_API_KEY_HEADER changes it).
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The service key.")


async def require_api_key(
    request: Request, presented: Annotated[str | None, Depends(_api_key_header)]
) -> None:
    """401 unless the configured header carries the configured key (constant-time compare).

    `serving.security.ApiKeyMiddleware` has already refused bad keys before the body was read;
    this dependency documents the requirement in OpenAPI and guards any route mounted without
    the middleware.
    """
    settings: ServingSettings = request.app.state.service.settings
    header = request.headers.get(settings.api_key_header, presented)
    expected = settings.api_key.get_secret_value() if settings.api_key else None
    if expected is None or not key_matches(header, expected):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or invalid API key",
            headers={"WWW-Authenticate": "ApiKey"},
        )


ApiKey = Depends(require_api_key)

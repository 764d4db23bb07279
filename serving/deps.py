"""FastAPI dependencies: the app's service and settings, and the API key requirement."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from nudge.security import api_key_dependency
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

# One key check for both apps (`nudge.security`), reading this app's settings per request. The
# header name in the OpenAPI document is the default; the configured one is enforced (the same
# unless NUDGE_API_KEY_HEADER changes it). `serving.security.ApiKeyMiddleware` has already refused
# bad keys before the body was read; this dependency documents the requirement in OpenAPI and
# guards any route mounted without the middleware.
require_api_key = api_key_dependency(
    lambda request: _secret(request.app.state.service.settings),
    header=lambda request: request.app.state.service.settings.api_key_header,
)


def _secret(settings: ServingSettings) -> str | None:
    return settings.api_key.get_secret_value() if settings.api_key else None


ApiKey = Depends(require_api_key)

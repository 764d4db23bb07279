"""The API key check of both FastAPI apps: the engine's API and the scoring service.

A leaf any package may import (see `nudge.settings`): FastAPI and the standard library only.
`api_key_dependency` builds the FastAPI dependency: 503 when no key is configured (the service
cannot know who may write), 401 when the request's header is missing or carries another key. The
comparison takes the same time however much of the key matched (`key_matches`).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader

__all__ = [
    "DEFAULT_HEADER",
    "INVALID_KEY",
    "NOT_CONFIGURED",
    "api_key_dependency",
    "key_matches",
]

DEFAULT_HEADER = "X-API-Key"
NOT_CONFIGURED = "no API key is configured (set NUDGE_API_KEY)"
INVALID_KEY = "missing or invalid API key"

# What the dependency reads per request: the configured key, and the header that carries it.
KeySource = str | None | Callable[[Request], str | None]
HeaderSource = str | Callable[[Request], str]


def key_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison: the time taken does not depend on how much of the key matched."""
    if presented is None:
        return False
    return secrets.compare_digest(presented.encode(), expected.encode())


def api_key_dependency(
    key: KeySource,
    *,
    header: HeaderSource = DEFAULT_HEADER,
    invalid: str = INVALID_KEY,
) -> Callable[..., Awaitable[None]]:
    """A dependency that lets a request through only with the configured key in `header`.

    `key` and `header` are values, or functions of the request for an app whose settings are
    known only when it is built (the header documented in OpenAPI is then `DEFAULT_HEADER`).
    No key configured (None or empty): 503 `NOT_CONFIGURED`. Missing or wrong: 401 `invalid`,
    with ``WWW-Authenticate: ApiKey``.
    """
    documented = header if isinstance(header, str) else DEFAULT_HEADER
    scheme = APIKeyHeader(name=documented, auto_error=False, description="The API key.")

    # `async def`: it never blocks, and FastAPI would run a plain `def` in its thread pool. The
    # scheme is a default, not in `Annotated`: FastAPI cannot resolve a closure's name there.
    async def require_api_key(request: Request, presented: str | None = Depends(scheme)) -> None:
        expected = key(request) if callable(key) else key
        if not expected:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, NOT_CONFIGURED)
        if not isinstance(header, str):
            presented = request.headers.get(header(request))
        if not key_matches(presented, expected):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, invalid, headers={"WWW-Authenticate": "ApiKey"}
            )

    return require_api_key

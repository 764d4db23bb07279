"""Request guards: the API key on every /v1 route, and the body size limit.

Both run as pure ASGI middleware, before FastAPI reads the body, so that a request without the
key gets 401 whatever its body (never a 422 that would reveal the schema), and an oversized body
is refused before it is buffered. The key is also declared as a FastAPI security dependency
(`serving.deps.require_api_key`, built by `nudge.security`, the key check both FastAPI apps share)
so that the OpenAPI document says which routes need it; the comparison is `nudge.security`'s.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException

from nudge.security import INVALID_KEY, key_matches

__all__ = ["API_PREFIX", "ApiKeyMiddleware", "BodyLimitMiddleware"]

API_PREFIX = "/v1"


class ApiKeyMiddleware:
    """401 for any /v1 request whose key header does not carry the configured key."""

    def __init__(self, app: Any, *, key: str, header: str) -> None:
        self.app = app
        self.key = key
        self.header = header.lower().encode("latin-1")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and _under(scope["path"], API_PREFIX):
            presented = next(
                (value for name, value in scope["headers"] if name == self.header), None
            )
            text = presented.decode("latin-1") if presented is not None else None
            if not key_matches(text, self.key):
                await _reject(send, 401, INVALID_KEY, authenticate=True)
                return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """413 for a request body over `limit` bytes, by Content-Length or while it streams in."""

    def __init__(self, app: Any, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for n, v in scope["headers"] if n == b"content-length"), None)
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _reject(send, 413, f"request body over {self.limit} bytes")
            return
        received = 0

        async def receive_limited() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Raised inside the endpoint's body read, where FastAPI turns it into a
                    # response (any other exception there would become a 400).
                    raise HTTPException(413, f"request body over {self.limit} bytes")
            return message

        await self.app(scope, receive_limited, send)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


async def _reject(send: Any, status: int, detail: str, *, authenticate: bool = False) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if authenticate:
        headers.append((b"www-authenticate", b"ApiKey"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

"""The closed loop's customers open and click through the engine's public routes.

Instead of writing ``email_opened`` / ``email_clicked`` into the engine, the loop reads the
email the dispatcher wrote to the file outbox, takes its open pixel and first tracked link, and
requests them from `engine.runtime.public_routes` — the same routes (token checks, matching to
the action, machine flags) a real mailbox reaches, served in process through Starlette's ASGI
test client (no socket: the loop stays as fast as before). The routes' clock is set to each
answer's simulated time, so the events land in simulated history where the responder put them.

Rendering must give the links: the loop's `EmailSettings` use `PUBLIC_URL` (a reserved
``.invalid`` host: only the path is requested) and the visitor's secret.
"""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from engine.runtime.public_routes import public_router
from engine.store import ActionRow, EngineDB

__all__ = ["PUBLIC_URL", "PublicVisitor"]

PUBLIC_URL = "http://closed-loop.invalid"
# A mail client that is a person's (not a proxy, not a scanner: engine.channels.machine_events).
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Safari/537.36"
)
_PIXEL = re.compile(r'src="' + re.escape(PUBLIC_URL) + r'(/o/[A-Za-z0-9_.-]+)"')
_CLICK = re.compile(r'href="' + re.escape(PUBLIC_URL) + r'(/c/[A-Za-z0-9_.-]+)"')


class PublicVisitor:
    """Loads pixels and follows links of emails in `outbox_dir` through the public routes."""

    def __init__(self, store: EngineDB, outbox_dir: Path, secret: str) -> None:
        self.outbox_dir = outbox_dir
        self.now = 0.0
        app = FastAPI()
        app.include_router(
            public_router(store, secrets=[secret], scanner_seconds=0, clock=lambda: self.now)
        )
        self.client = TestClient(app, base_url=PUBLIC_URL)

    def links(self, action: ActionRow) -> tuple[str | None, str | None]:
        """The pixel's and the first tracked link's paths in the action's email (None: none)."""
        name = (action.result or "").removeprefix("file ").strip()
        path = self.outbox_dir / name
        if not name or not path.is_file():
            return None, None
        message = message_from_bytes(path.read_bytes(), policy=policy.default)
        html = message.get_body(("html",)) if isinstance(message, EmailMessage) else None
        if html is None:
            return None, None
        text = html.get_content()
        pixel, click = _PIXEL.search(text), _CLICK.search(text)
        return (pixel.group(1) if pixel else None), (click.group(1) if click else None)

    def visit(self, path: str, at: float) -> int:
        """Request `path` at simulated time `at`; the HTTP status."""
        self.now = at
        response = self.client.get(path, headers={"User-Agent": USER_AGENT}, follow_redirects=False)
        return response.status_code

    def close(self) -> None:
        """Close the client."""
        self.client.close()

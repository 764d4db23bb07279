"""The FastAPI application: `create_app(settings)` builds it, `main()` serves it with uvicorn.

Layout in the style of FastAPI's full-stack template: settings (`serving.settings`, defined in
`nudge.settings` with every other NUDGE_* variable), dependencies (`serving.deps`), routers
(`serving.routers`), and the long-lived state (`serving.service`) that the lifespan starts once
and stops at shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from nudge.heap import freeze_startup_heap
from serving.metrics import MetricsMiddleware
from serving.routers import health, models, scores
from serving.schemas import MODEL_NAME_PATTERN
from serving.security import ApiKeyMiddleware, BodyLimitMiddleware
from serving.service import ScoringService
from serving.settings import ServingSettings

__all__ = ["ConfigurationError", "create_app", "main"]

log = logging.getLogger("serving")


class ConfigurationError(ValueError):
    """Settings the service cannot run with (no API key, ...)."""


def create_app(
    settings: ServingSettings | None = None,
    *,
    service: ScoringService | None = None,
    freeze_gc: bool = False,
) -> FastAPI:
    """The scoring app. Its lifespan starts `service` (built from `settings` when not given)
    unless it was started already, and stops at shutdown only what it started.

    `freeze_gc` (for a process of its own, as `main` runs it): after start-up, move every
    object to the garbage collector's permanent generation (`nudge.heap`).
    """
    settings = service.settings if service is not None else settings or ServingSettings()
    # Checked before anything heavy is built: a service without a key must not start at all.
    if settings.api_key is None or not settings.api_key.get_secret_value():
        raise ConfigurationError("set NUDGE_API_KEY: every /v1 route requires an API key")
    # The settings leaf (nudge.settings) cannot know the definitions: the names are checked here.
    from models.definitions import load_definitions

    known = load_definitions().names
    unknown = [m for m in settings.models or () if m not in known]
    if unknown:
        raise ConfigurationError(
            f"NUDGE_MODELS: unknown model(s) {unknown}; models must be a non-empty subset of "
            f"the definitions' {list(known)}"
        )
    if service is None:
        service = ScoringService(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        owned = not service.started
        if owned:
            service.start()
        if freeze_gc:
            freeze_startup_heap()
        try:
            yield
        finally:
            if owned:
                service.close()

    app = FastAPI(
        title="nudge scoring",
        version="1",
        summary="Churn, LTV and engagement scores from Feast online features and MLflow "
        "champion models.",
        lifespan=lifespan,
    )
    app.state.service = service
    service.defined_models = known
    _document_model_names(app, known)
    app.include_router(scores.router)
    app.include_router(models.router)
    app.include_router(health.router)
    # Added last runs first: metrics see every request, the key is checked before the body
    # is read, and the body limit applies to authenticated requests only.
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(
        ApiKeyMiddleware,
        key=settings.api_key.get_secret_value(),
        header=settings.api_key_header,
    )
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)
    return app


def _document_model_names(app: FastAPI, names: tuple[str, ...]) -> None:
    """The OpenAPI schema lists the models of the definitions as the names a request may use
    (the code has no enum of them: they come from the model definitions)."""
    from typing import Any

    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            _with_enum(schema, names)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _with_enum(node: object, names: tuple[str, ...]) -> None:
    if isinstance(node, dict):
        if node.get("pattern") == MODEL_NAME_PATTERN and node.get("type") == "string":
            node["enum"] = list(names)
        for child in node.values():
            _with_enum(child, names)
    elif isinstance(node, list):
        for child in node:
            _with_enum(child, names)


def main(host: str | None = None, port: int | None = None) -> None:
    """Serve the app with uvicorn on `host`:`port` (defaults from the settings) until stopped."""
    import uvicorn

    settings = ServingSettings()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(settings, freeze_gc=True)
    uvicorn.run(
        app,
        host=host or settings.serve_host,
        port=settings.serve_port if port is None else port,
        log_level="info",
        # The engine calls with keep-alive; the access log is off because it would write
        # customer ids (in GET paths) to the logs.
        access_log=False,
    )


if __name__ == "__main__":
    main()

"""`nudge serve`: the scoring service (serving.app) under uvicorn.

Composition only. Register it with ``app.command()(serve)`` in nudge/cli.py; FastAPI, Feast,
MLflow and LightGBM are imported inside the command, so `nudge --help` stays instant.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from nudge.console import fail

__all__ = ["serve"]


def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to bind. Default: $NUDGE_SERVE_HOST or 127.0.0.1.")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=0, max=65_535, help="Port to bind. Default: $NUDGE_SERVE_PORT or 8000."),
    ] = None,
) -> None:
    """Serve churn, LTV and engagement scores over HTTP (POST /v1/scores).

    Reads features from the Feast online store under $NUDGE_HOME (Redis with
    NUDGE_FEAST_CONFIG=production) and the `champion` of each model from MLflow
    (MLFLOW_TRACKING_URI, default $NUDGE_HOME/mlflow.db); notices when an alias moves.
    Every /v1 route needs NUDGE_API_KEY in the X-API-Key header. Ctrl-C stops it cleanly.
    """
    # The service parallelises across requests; LightGBM's OpenMP threads inside each tiny
    # prediction only contend with them (measured: p50 ×3 on a busy 2-core machine).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from pydantic import ValidationError

    from nudge.engine_cli import server_settings
    from serving.app import ConfigurationError, main

    server_settings()  # one deployment, one rule: no development secret outside dev
    try:
        main(host=host, port=port)
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        fail("invalid service settings:\n  " + "\n  ".join(problems))
    except ConfigurationError as exc:
        fail(str(exc))

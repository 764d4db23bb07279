"""`GET /healthz`, `GET /readyz` and `GET /metrics`: open, for probes and Prometheus."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from fastapi.responses import JSONResponse

from serving.deps import Service
from serving.metrics import CONTENT_TYPE_LATEST
from serving.schemas import Health, Readiness

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is alive (it answers HTTP)."""
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready yet."}},
)
def readyz(service: Service) -> JSONResponse:
    """Ready when the feature store is open and every configured model has a loaded version."""
    served = service.champions.served()
    body = Readiness(
        ready=service.ready,
        feature_store=service.features is not None,
        models={
            name: served[name].version if name in served else None
            for name in service.champions.expected
        },
    )
    code = status.HTTP_200_OK if body.ready else status.HTTP_503_SERVICE_UNAVAILABLE
    return JSONResponse(body.model_dump(), status_code=code)


@router.get("/metrics", response_class=Response)
def metrics(service: Service) -> Response:
    """Prometheus text format: request counts, latency histograms, served model versions."""
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

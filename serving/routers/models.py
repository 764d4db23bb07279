"""`GET /v1/models` and `POST /v1/models/reload`."""

from __future__ import annotations

from fastapi import APIRouter

from serving.champions import ModelState
from serving.deps import ApiKey, Service
from serving.schemas import LoadFailure, ModelInfo, ModelsResponse

__all__ = ["router"]

router = APIRouter(
    prefix="/v1",
    tags=["models"],
    dependencies=[ApiKey],
    responses={401: {"description": "Missing or invalid API key."}},
)


@router.get("/models", response_model=ModelsResponse)
def list_models(service: Service) -> ModelsResponse:
    """Each served model: version, alias target, training time, holdout metrics, and the last
    version that failed to load while an older one keeps serving."""
    return ModelsResponse(
        models=[_info(state, service.champions.alias) for state in service.champions.states()]
    )


@router.post("/models/reload", response_model=ModelsResponse)
def reload_models(service: Service) -> ModelsResponse:
    """Ask the registry now (instead of at the next poll), retrying failed versions."""
    service.champions.refresh(force=True)
    return list_models(service)


def _info(state: ModelState, alias: str) -> ModelInfo:
    champion = state.champion
    failure = None
    if state.failure is not None and state.failed_at is not None:
        failure = LoadFailure(
            version=state.failed_version or "none", error=state.failure, at=state.failed_at
        )
    return ModelInfo(
        name=state.name,
        alias=alias,
        status=state.status,
        version=champion.version if champion else None,
        alias_version=state.alias_version,
        run_id=champion.run_id if champion else None,
        trained_at=champion.trained_at if champion else None,
        loaded_at=champion.loaded_at if champion else None,
        holdout_metrics=champion.holdout_metrics if champion else {},
        population_prior=champion.prior if champion else None,
        load_failure=failure,
    )

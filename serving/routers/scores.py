"""`POST /v1/scores` and `GET /v1/customers/{customer_id}/scores`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, status
from fastapi.responses import JSONResponse

from engine.dsl.score_models import is_uplift_model
from serving.deps import ApiKey, Service
from serving.schemas import CustomerId, CustomerScores, ModelName, ScoreRequest, ScoreResponse
from serving.service import FeaturesUnavailable, ModelsUnavailable, ScoringService

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["scores"], dependencies=[ApiKey])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid API key."},
    413: {"description": "Request body too large."},
    503: {"description": "A requested model is not loaded, or the feature store is down."},
}


@router.post("/scores", response_model=ScoreResponse, responses=_ERRORS)
def post_scores(body: ScoreRequest, service: Service) -> JSONResponse:
    """Scores of up to 1,000 customers for the requested models (default: every served one).

    Unknown customers get `known: false` and the model's population prior.
    """
    limit = service.settings.max_batch
    if len(body.customer_ids) > limit:
        # Shaped like pydantic's own errors, so clients parse one kind of 422.
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [
                {
                    "loc": ["body", "customer_ids"],
                    "msg": f"List should have at most {limit} items after validation, "
                    f"not {len(body.customer_ids)}",
                    "type": "too_long",
                }
            ],
        )
    models = _defined(list(body.models), "body", service) if body.models else None
    # Plain dicts straight to JSON: validating thousands of nested models per batch would
    # cost more than scoring them (the response_model documents the shape).
    return JSONResponse({"results": _score(service, body.customer_ids, models, body.explain)})


@router.get(
    "/customers/{customer_id}/scores",
    response_model=CustomerScores,
    responses={k: v for k, v in _ERRORS.items() if k != 413},
)
def get_customer_scores(
    customer_id: Annotated[CustomerId, Path(description="The customer to score.")],
    service: Service,
    models: Annotated[list[ModelName] | None, Query(description="Default: every model.")] = None,
    explain: Annotated[bool, Query(description="Add the top reason codes.")] = False,
) -> JSONResponse:
    """One customer's scores (the same answer as one item of `POST /v1/scores`)."""
    wanted = _defined(list(models), "query", service) if models else None
    return JSONResponse(_score(service, [customer_id], wanted, explain)[0])


def _score(
    service: ScoringService, ids: list[str], models: list[str] | None, explain: bool
) -> list[dict[str, Any]]:
    try:
        return service.score(ids, models, explain=explain)
    except (ModelsUnavailable, FeaturesUnavailable) as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc


def _defined(models: list[str], where: str, service: ScoringService) -> list[str]:
    """The requested models, each one a model definition's name or a trigger's uplift model
    the registry has (``uplift_<trigger>``); else a 422 naming the first unknown one (shaped
    like pydantic's own errors, so clients parse one kind of 422)."""
    known = service.defined_models
    if not known:  # a service built without create_app
        from models.definitions import load_definitions

        known = load_definitions().names
    uplift = [m for m in service.champions.models if is_uplift_model(m) and m not in known]
    known = (*known, *uplift)
    for index, name in enumerate(models):
        if name not in known:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                [
                    {
                        "loc": [where, "models", index],
                        "msg": f"Input should be one of the models {', '.join(known)}",
                        "type": "enum",
                    }
                ],
            )
    return models

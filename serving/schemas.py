"""The HTTP contract: request and response bodies of the scoring API.

`engine.runtime.scoring.ScoreClient` reads ``results[].customer_id``, ``known`` and
``scores.<model>.value`` / ``model_version`` / ``known`` / ``features_at`` (score conditions'
`max_age` is measured from it) / ``best_send_hour``, and ``GET /v1/models``' ``models[].name`` /
``version`` (what it may ask for); fields may be added here, never renamed.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from serving.settings import MAX_BATCH_LIMIT

__all__ = [
    "MODEL_NAME_PATTERN",
    "Band",
    "CustomerId",
    "CustomerScores",
    "Health",
    "LoadFailure",
    "ModelInfo",
    "ModelName",
    "ModelsResponse",
    "Readiness",
    "Reason",
    "Score",
    "ScoreRequest",
    "ScoreResponse",
]


# A model's name as the definitions spell it (`models.definitions`); which names exist is the
# registry's and the definitions' to say, so the service checks them, not an enum.
MODEL_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"
ModelName = Annotated[str, StringConstraints(pattern=MODEL_NAME_PATTERN)]


class Band(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"


# NUL and lone surrogates (U+D800–U+DFFF) are refused before the pattern: no store holds them
# (UTF-8 cannot encode a lone surrogate), and the engine never sends them (engine.limits). NUL
# is in the pattern too, for clients that generate ids from the OpenAPI schema; a lone surrogate
# cannot be (it is not a character a regex over UTF-8 can name).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable_id(value: Any) -> Any:
    match = _UNSTORABLE.search(value) if isinstance(value, str) else None
    if match is None:
        return value
    char = match.group()
    what = "NUL (U+0000)" if char == "\x00" else f"a lone surrogate U+{ord(char):04X}"
    # Raised as a ValidationError to choose its `input`: the 422 echoes the input, and a lone
    # surrogate in it would make the error response itself unencodable (a 500).
    raise ValidationError.from_exception_data(
        "CustomerId",
        [
            InitErrorDetails(
                type=PydanticCustomError(
                    "customer_id",
                    "a customer id must not contain {what} (at position {at})",
                    {"what": what, "at": match.start()},
                ),
                loc=(),
                input=value.encode("utf-8", "backslashreplace").decode("utf-8"),
            )
        ],
    )


# The same rule as the events contract (engine/events.py `_ID_PATTERN`): any id the engine
# accepted must be scoreable, or one odd id would fail the engine's whole batch with a 422.
# `\x85` is spelled out because pydantic's regex counts it as whitespace and JSON Schema's
# (ECMA) does not: clients generating ids from the OpenAPI pattern must agree with the server.
# `[^\x00\n]` is `.` without NUL.
CustomerId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=r"^[^\s\x85\x00][^\x00\n]{0,127}$"),
    BeforeValidator(_storable_id),
]


class ScoreRequest(BaseModel):
    """Scores for up to 1,000 customers; every model unless `models` says otherwise."""

    model_config = ConfigDict(extra="forbid")

    customer_ids: list[CustomerId] = Field(
        min_length=1,
        max_length=MAX_BATCH_LIMIT,
        description="Customers to score (1–1000; duplicates are answered once).",
    )
    models: list[ModelName] | None = Field(
        default=None, min_length=1, description="Models to score; default: every served model."
    )
    explain: bool = Field(default=False, description="Add the top reason codes of each score.")


class Reason(BaseModel):
    """One feature pushing the score up: its value and its contribution to the raw score
    (log-odds for churn and engagement, log of expected spend for ltv)."""

    feature: str
    value: float | None
    contribution: float
    description: str = Field(
        description='What the feature says about the customer, e.g. "42 days since the last '
        'purchase".'
    )


class Score(BaseModel):
    """One model's score of one customer."""

    value: float = Field(description="Probability (churn, engagement) or expected spend (ltv).")
    band: Band
    model_version: str
    features_at: datetime | None = Field(
        description="Snapshot the features describe; null for an unknown customer (prior)."
    )
    stale: bool = Field(description="Whether the features are older than the configured age.")
    known: bool = Field(description="False: the population prior, no features were found.")
    best_send_hour: int | None = Field(
        default=None, description="Engagement only: customer-local hour to send at (0–23)."
    )
    reasons: list[Reason] | None = Field(default=None, description="Only with explain.")


class CustomerScores(BaseModel):
    customer_id: str
    known: bool = Field(description="Whether the feature store knows the customer.")
    scores: dict[str, Score]


class ScoreResponse(BaseModel):
    results: list[CustomerScores]


class LoadFailure(BaseModel):
    """The last version that could not be loaded, while an older one keeps serving."""

    version: str
    error: str
    at: datetime


class ModelInfo(BaseModel):
    name: str
    alias: str
    status: Literal["serving", "serving_previous", "not_loaded"] = Field(
        description="serving_previous: the alias points to a version that failed to load."
    )
    version: str | None = Field(description="The version being served.")
    alias_version: str | None = Field(description="The version the alias points to now.")
    run_id: str | None = None
    trained_at: datetime | None = None
    loaded_at: datetime | None = None
    holdout_metrics: dict[str, float] = Field(default_factory=dict)
    population_prior: float | None = Field(
        default=None, description="The score an unknown customer gets."
    )
    load_failure: LoadFailure | None = None


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    feature_store: bool
    models: dict[str, str | None] = Field(description="Served version per model (null: none).")

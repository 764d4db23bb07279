"""The scoring service's configuration: environment variables (prefix ``NUDGE_``) or defaults.

Import-light (pydantic only), so the CLI can read it without paying for Feast or MLflow.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_BANDS", "MAX_BATCH_LIMIT", "Bands", "ServingSettings"]

# The hard ceiling of a batch: the API contract says 1–1000 customers per request.
MAX_BATCH_LIMIT = 1_000

# (low/medium boundary, medium/high boundary) per model, in the model's own units: churn and
# engagement are probabilities, ltv is expected spend over its horizon.
Bands = tuple[float, float]
DEFAULT_BANDS: dict[str, Bands] = {
    "churn": (0.3, 0.6),
    "ltv": (50.0, 200.0),
    "engagement": (0.1, 0.3),
}


class ServingSettings(BaseSettings):
    """What `nudge serve` and `serving.app.create_app` need; `ServingSettings()` reads the env."""

    model_config = SettingsConfigDict(env_prefix="NUDGE_", extra="ignore")

    home: Path = Field(
        default=Path(".nudge"),
        description="Root of local state; the Feast store and MLflow's SQLite file live here.",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="Key every /v1 route requires in the API key header; the service refuses "
        "to start without one.",
    )
    api_key_header: str = Field(default="X-API-Key", description="Header carrying the API key.")
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking + registry URI; MLFLOW_TRACKING_URI wins, default sqlite "
        "under NUDGE_HOME.",
    )
    model_alias: str = Field(default="champion", description="Registry alias the service serves.")
    models: tuple[str, ...] = Field(
        default=("churn", "ltv", "engagement"), description="Registered models to serve."
    )
    model_poll_seconds: Annotated[float, Field(gt=0)] = Field(
        default=30.0, description="How often the registry is asked whether an alias moved."
    )
    model_retry_seconds: Annotated[float, Field(ge=0)] = Field(
        default=300.0,
        description="How long before a version that failed to load is tried again.",
    )
    feast_production: bool | None = Field(
        default=None,
        description="Use the production Feast config (Redis); default: NUDGE_FEAST_CONFIG.",
    )
    feast_project: str | None = Field(
        default=None, description="Override the Feast project name of the selected config."
    )
    score_bands: dict[str, Bands] = Field(
        default_factory=lambda: dict(DEFAULT_BANDS),
        description='Band thresholds per model as JSON, e.g. {"churn": [0.3, 0.6]}: below the '
        "first is low, from the second on is high.",
    )
    stale_after: timedelta = Field(
        default=timedelta(days=2),
        description="Features older than this are flagged stale (seconds or ISO 8601, P2D).",
    )
    max_batch: Annotated[int, Field(ge=1, le=MAX_BATCH_LIMIT)] = Field(
        default=MAX_BATCH_LIMIT, description="Most customers one request may ask for."
    )
    max_body_bytes: Annotated[int, Field(ge=1_024)] = Field(
        default=256 * 1_024, description="Largest request body accepted (413 above)."
    )
    explain_top: Annotated[int, Field(ge=1, le=20)] = Field(
        default=3, description="Reason codes returned per score with explain."
    )
    serve_host: str = Field(default="127.0.0.1", description="Address `nudge serve` binds.")
    serve_port: Annotated[int, Field(ge=0, le=65_535)] = Field(
        default=8000, description="Port `nudge serve` binds."
    )

    @field_validator("score_bands")
    @classmethod
    def _ordered_bands(cls, bands: dict[str, Bands]) -> dict[str, Bands]:
        for model, (low, high) in bands.items():
            if low > high:
                raise ValueError(f"{model}: the low/medium boundary {low} exceeds {high}")
        # A partial override keeps the defaults of the models it does not name.
        return {**DEFAULT_BANDS, **bands}

    @model_validator(mode="after")
    def _known_models(self) -> ServingSettings:
        from features.schema import MODEL_NAMES

        unknown = [m for m in self.models if m not in MODEL_NAMES]
        if unknown or not self.models:
            raise ValueError(f"models must be a non-empty subset of {list(MODEL_NAMES)}")
        return self

    @property
    def home_dir(self) -> Path:
        """NUDGE_HOME as an absolute path."""
        return self.home.expanduser().resolve()

    @property
    def tracking_uri(self) -> str:
        """MLFLOW_TRACKING_URI, else NUDGE_MLFLOW_TRACKING_URI, else the SQLite file under home."""
        explicit = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
        if explicit:
            return explicit
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        # Four slashes: sqlite:/// + an absolute path.
        return f"sqlite:///{(self.home_dir / 'mlflow.db').as_posix()}"

    def bands_for(self, model: str) -> Bands:
        """The (low/medium, medium/high) boundaries of a model's scores."""
        return self.score_bands.get(model, DEFAULT_BANDS[model])

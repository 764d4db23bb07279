"""Settings: every knob comes from the environment (prefix ``NUDGE_``) or its default."""

from __future__ import annotations

import os
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# Public, so that anyone could forge tokens made with it: only for NUDGE_ENV=dev.
DEV_SIGNING_SECRET = "change-me"
MIN_SECRET_BYTES = 32


def _duration(value: Any) -> timedelta:
    # Environment values are text: "3600" is seconds, "6h" / "1d" a duration.
    from engine.dsl.durations import parse_duration

    if isinstance(value, str) and value.strip().replace(".", "", 1).isdigit():
        value = float(value)
    return parse_duration(value)


class Settings(BaseSettings):
    """Runtime configuration; `Settings()` reads ``NUDGE_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="NUDGE_", extra="ignore")

    home: Path = Field(
        default=Path(".nudge"),
        description="Root of all local state: event lake, stores, simulations.",
    )
    engine_db: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the engine's state; default sqlite under NUDGE_HOME.",
    )
    api_key: SecretStr | None = Field(
        default=None, description="Key that write endpoints require in the X-API-Key header."
    )
    scoring_url: str | None = Field(
        default=None, description="Base URL of the scoring service; unset: score conditions miss."
    )
    triggers_dir: Path | None = Field(
        default=None, description="Folder of trigger YAML files; default: the bundled examples."
    )
    templates_dir: Path | None = Field(
        default=None, description="Folder of email templates; default: the bundled ones."
    )
    smtp_host: str | None = Field(
        default=None, description="SMTP relay for email; unset: emails go to the file outbox."
    )
    smtp_port: int = Field(default=25, description="Port of the SMTP relay.")
    email_sender: str = Field(
        default="nudge <hello@nudge.example>", description="From address of emails."
    )
    unsubscribe_url: str = Field(
        default="https://nudge.example/unsubscribe", description="Base of unsubscribe links."
    )
    signing_secret: SecretStr = Field(
        default=SecretStr(DEV_SIGNING_SECRET),
        description="Secret for webhook signatures and unsubscribe tokens: at least 32 random "
        "bytes; the servers refuse to start without one unless NUDGE_ENV=dev.",
    )
    env: str = Field(
        default="production",
        description="`dev` lets the servers start with the built-in development secret; any "
        "other value (the default) requires real secrets.",
    )
    webhook_allow: str = Field(
        default="",
        description="Comma-separated hosts or CIDR ranges webhooks may reach though private.",
    )
    default_timezone: str = Field(
        default="UTC", description="Zone of customers whose profile names neither zone nor country."
    )
    max_future: Annotated[timedelta, BeforeValidator(_duration)] = Field(
        default=timedelta(days=1),
        description="How far ahead of the engine's clock an event's timestamp may be: seconds "
        "or a duration such as 6h or 1d. Later events are dead-lettered with the reason.",
    )
    sim_start: str = Field(
        default="2025-01-01",
        description="First day of simulated data when `nudge simulate --start` is not given.",
    )

    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking + registry URI; MLFLOW_TRACKING_URI wins, default sqlite "
        "under NUDGE_HOME.",
    )
    dask_address: str | None = Field(
        default=None,
        description="Dask scheduler (tcp://host:8786): `train` fits its models there when set.",
    )
    features_cron: str = Field(
        default="0 2 * * *", description="Schedule of the build-features deployment (daily)."
    )
    train_cron: str = Field(
        default="0 3 * * 1", description="Schedule of the train deployment (weekly, Mondays)."
    )
    schedule_timezone: str = Field(default="UTC", description="Time zone of the schedules.")
    snapshot_step_days: int = Field(
        default=30, ge=1, description="Days between feature snapshots (training dates)."
    )
    snapshot_count: int = Field(
        default=12, ge=2, description="How many feature snapshots `build-features` computes."
    )
    train_snapshots: int = Field(
        default=6, ge=1, description="Training snapshots per model (the holdout comes on top)."
    )

    def secret_problem(self) -> str | None:
        """Why the signing secret is unfit for a server outside dev, or None."""
        if self.env.strip().lower() == "dev":
            return None
        secret = self.signing_secret.get_secret_value()
        how = (
            "set NUDGE_SIGNING_SECRET to at least 32 random bytes, e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'` "
            "(or NUDGE_ENV=dev on a development machine)"
        )
        if secret == DEV_SIGNING_SECRET:
            return f"NUDGE_SIGNING_SECRET is the built-in development secret, which anyone can use to forge unsubscribe tokens and webhook signatures: {how}"
        if len(secret.encode()) < MIN_SECRET_BYTES:
            return f"NUDGE_SIGNING_SECRET is {len(secret.encode())} bytes long, shorter than {MIN_SECRET_BYTES}: {how}"
        return None

    @cached_property
    def lake_dir(self) -> Path:
        """The event lake (Parquet, partitioned by UTC date)."""
        return self.home.resolve() / "lake"

    @cached_property
    def simulation_dir(self) -> Path:
        """Where `nudge simulate` writes its data set and planted truth by default."""
        return self.home.resolve() / "simulation"

    @cached_property
    def rejects_dir(self) -> Path:
        """Where `nudge import` writes rows it could not accept, with the reason."""
        return self.home.resolve() / "rejects"

    @property
    def engine_url(self) -> str:
        """The engine database URL (SQLite under NUDGE_HOME unless NUDGE_ENGINE_DB is set)."""
        return self.engine_db or f"sqlite:///{self.home.resolve() / 'engine.db'}"

    @property
    def tracking_uri(self) -> str:
        """MLflow's store: MLFLOW_TRACKING_URI, else NUDGE_MLFLOW_TRACKING_URI, else
        ``sqlite:////<abs NUDGE_HOME>/mlflow.db``."""
        explicit = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
        if explicit:
            return explicit
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.home.resolve() / 'mlflow.db').as_posix()}"

    @property
    def trigger_folder(self) -> Path:
        """Where trigger definitions are read from."""
        return self.triggers_dir or Path(__file__).resolve().parents[1] / "engine" / "examples"

    @property
    def template_folder(self) -> Path:
        """Where email templates are read from."""
        return self.templates_dir or Path(__file__).resolve().parents[1] / "engine" / "templates"

    @property
    def outbox_dir(self) -> Path:
        """Where emails go when no SMTP relay is configured."""
        return self.home.resolve() / "outbox"

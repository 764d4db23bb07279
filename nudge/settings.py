"""Settings: every knob comes from the environment (prefix ``NUDGE_``) or its default."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Runtime configuration; `Settings()` reads ``NUDGE_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="NUDGE_", extra="ignore")

    home: Path = Field(
        default=Path(".nudge"),
        description="Root of all local state: event lake, stores, simulations.",
    )
    sim_start: str = Field(
        default="2025-01-01",
        description="First day of simulated data when `nudge simulate --start` is not given.",
    )

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

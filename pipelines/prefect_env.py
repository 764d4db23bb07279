"""Prefect's environment, set before Prefect is imported: its home under $NUDGE_HOME, a start-up
timeout the ephemeral API server can meet on a small machine, no analytics.

Values already in the environment win, so an operator's PREFECT_API_URL (a real server) or
PREFECT_HOME stays in force. Import-light: the standard library and the settings leaf
(`nudge.settings`).
"""

from __future__ import annotations

import os
from pathlib import Path

from nudge.settings import home_dir

__all__ = ["configure_prefect"]


def configure_prefect(home: Path | str | None = None) -> dict[str, str]:
    """Set the Prefect defaults nudge needs (if unset); returns what is now in force."""
    defaults = {
        "PREFECT_HOME": str(home_dir(home) / "prefect"),
        # The ephemeral server needs ~15–20 s on a fresh PREFECT_HOME here; the default is 20 s.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        # Analytics write to the same SQLite file and log "database is locked" otherwise.
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    for name, value in defaults.items():
        os.environ.setdefault(name, value)
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    return {name: os.environ[name] for name in defaults}

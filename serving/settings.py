"""The scoring service's configuration, defined with every other ``NUDGE_*`` variable in
`nudge.settings` (the one settings module); re-exported here for the service's modules.

Import-light (pydantic only), so the CLI can read it without paying for Feast or MLflow.
"""

from __future__ import annotations

from nudge.settings import DEFAULT_BANDS, MAX_BATCH_LIMIT, Bands, ServingSettings

__all__ = ["DEFAULT_BANDS", "MAX_BATCH_LIMIT", "Bands", "ServingSettings"]

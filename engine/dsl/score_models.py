"""The names score conditions may give a model besides the model definitions': a trigger's
uplift model, ``uplift_<trigger>``, which `nudge uplift train <trigger>` registers and the
scoring service serves (no definition declares it: its features are the ones it was trained on).
"""

from __future__ import annotations

from typing import Final

__all__ = ["UPLIFT_MODEL_PREFIX", "is_uplift_model", "uplift_model_name", "uplift_trigger"]

UPLIFT_MODEL_PREFIX: Final = "uplift_"


def uplift_model_name(trigger_id: str) -> str:
    """The registered model of a trigger's uplift: ``uplift_<trigger>``."""
    return f"{UPLIFT_MODEL_PREFIX}{trigger_id}"


def is_uplift_model(name: str) -> bool:
    """Whether a model's name is a trigger's uplift model's."""
    return name.startswith(UPLIFT_MODEL_PREFIX) and len(name) > len(UPLIFT_MODEL_PREFIX)


def uplift_trigger(name: str) -> str | None:
    """The trigger an uplift model's name belongs to, or None when it is not one."""
    return name[len(UPLIFT_MODEL_PREFIX) :] if is_uplift_model(name) else None

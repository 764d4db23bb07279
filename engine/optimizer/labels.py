"""The names the optimizer gives to arms and pooled rows: one definition each.

``HOLDOUT`` is the arm of customers held out of an experiment: ``assign_variant`` returns it, the
decisions record it as their variant, and the analyses compare every variant against it. ``ALL``
labels what is pooled: the funnel row of every variant together, and the one segment of
exposures that carry no segment. ``ALL_SENDS`` pools every non-holdout variant in
``holdout_incrementality``. The parentheses keep the pooled labels apart from real variant and
segment names (a profile attribute may well hold the text ``all``).
"""

from __future__ import annotations

from typing import Final

__all__ = ["ALL", "ALL_SENDS", "HOLDOUT"]

HOLDOUT: Final = "holdout"
"""The variant of customers held out of an experiment (never sent)."""
ALL: Final = "(all)"
"""The variant label of pooled funnel rows, and the segment of frames without a segment column."""
ALL_SENDS: Final = "(all sends)"
"""The arm pooling every non-holdout variant in ``holdout_incrementality``."""

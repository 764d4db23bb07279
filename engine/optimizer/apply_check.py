"""Whether an experiment's guarded recommendation backs ending it with a given variant.

``nudge experiment apply`` writes a trigger version that gives one variant to everyone; it
refuses unless the recommendation (``recommend``: minimum sample, sample ratio, corrected
significance) names that variant in every segment, or the person forces it with a reason.
Pure: recommendations in, the reasons to refuse out.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.optimizer.recommendation import Recommendation

__all__ = ["apply_refusals"]


def apply_refusals(
    trigger_id: str, recommendations: Sequence[Recommendation], variant: str
) -> list[str]:
    """Why the recommendations of `trigger_id` do not back `variant`, one sentence each (empty:
    they do). A failed guardrail is named with its detail; a recommendation of another variant
    names that variant; no recommendation at all (no experiment in the log) is one reason."""
    mine = [r for r in recommendations if r.trigger_id == trigger_id]
    if not mine:
        return [f"no experiment decisions of trigger {trigger_id!r} in the execution log"]
    reasons: list[str] = []
    for rec in mine:
        where = f"segment {rec.segment}: " if len(mine) > 1 else ""
        failed = [check for check in rec.checks if not check.passed]
        if failed:
            reasons.extend(
                f"{where}guardrail {check.name} failed: {check.detail}" for check in failed
            )
        elif rec.variant != variant:
            reasons.append(
                f"{where}the recommendation is {rec.variant}, not {variant}: {rec.detail}"
            )
    return reasons

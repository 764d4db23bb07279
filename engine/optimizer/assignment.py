"""Deterministic assignment of customers to experiment variants and holdouts.

Every decision is a pure function of its inputs: a customer's position is
u = H(parts) ∈ [0, 1), the first 53 bits of SHA-256 over the length-prefixed UTF-8 parts,
divided by 2⁵³. SHA-256 gives the same u in every process, on every machine and Python version
(the built-in ``hash()`` is salted per process, so it cannot be used). Three independent hash
streams keep the decisions independent of each other:

* global holdout:      H(salt, customer)                  < share
* experiment holdout:  H("holdout", experiment, customer) < holdout
* variant:             H("variant", experiment, customer) falls in the variant's slice of [0, 1)

Because the streams are separate, growing a holdout only moves customers into it (nobody else
changes variant), and two experiments assign independently of each other.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Final

from engine.optimizer.labels import HOLDOUT

__all__ = [
    "HOLDOUT",
    "assign_variant",
    "in_global_holdout",
    "normalize_weights",
    "unit_hash",
]

_MANTISSA_BITS: Final = 53


def assign_variant(
    experiment_id: str,
    customer_id: str,
    weights: Mapping[str, float],
    holdout: float = 0.0,
) -> str:
    """The variant of ``customer_id`` in ``experiment_id``, or ``HOLDOUT``.

    The customer is held out when H("holdout", experiment, customer) < ``holdout``; otherwise,
    with variants sorted by name and wᵢ their normalised weights, the variant is the first i
    with H("variant", experiment, customer) < w₁ + … + wᵢ. Variants are sorted by name so that
    reordering a config file cannot reshuffle a running experiment. The global holdout is not
    consulted here: check ``in_global_holdout`` first.
    """
    shares = normalize_weights(weights)
    if not (math.isfinite(holdout) and 0.0 <= holdout < 1.0):
        raise ValueError(f"holdout must be a share in [0, 1) (got {holdout})")
    experiment = _require_id("experiment_id", experiment_id)
    customer = _require_id("customer_id", customer_id)
    if unit_hash(HOLDOUT, experiment, customer) < holdout:
        return HOLDOUT
    position = unit_hash("variant", experiment, customer)
    cumulative = 0.0
    for name in sorted(shares):
        cumulative += shares[name]
        if position < cumulative:
            return name
    # Rounding can leave the last boundary a hair below 1.0.
    return max(shares)


def in_global_holdout(customer_id: str, share: float, salt: str = "global") -> bool:
    """Whether the customer belongs to the persistent holdout: H(salt, customer) < ``share``.

    The answer depends only on (salt, customer), so it is the same for every experiment and
    every day; raising ``share`` only adds customers, and a new ``salt`` draws a new holdout.
    """
    if not (math.isfinite(share) and 0.0 <= share <= 1.0):
        raise ValueError(f"share must lie in [0, 1] (got {share})")
    return unit_hash(_require_id("salt", salt), _require_id("customer_id", customer_id)) < share


def normalize_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Validate variant weights and scale them to shares: sᵢ = wᵢ / Σw.

    Raises ValueError when there are no variants, a name is empty, not a string or is the
    reserved ``HOLDOUT``, or a weight is not a positive finite number.
    """
    if not isinstance(weights, Mapping):
        raise ValueError(
            "weights must map variant names to positive numbers, "
            f"e.g. {{'control': 1, 'treatment': 1}} (got {type(weights).__name__})"
        )
    if not weights:
        raise ValueError("weights is empty: give at least one variant, e.g. {'control': 1}")
    for name, weight in weights.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"variant names must be non-empty strings (got {name!r})")
        if name == HOLDOUT:
            raise ValueError(f"{HOLDOUT!r} is reserved for held-out customers; rename the variant")
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not math.isfinite(weight)
            or weight <= 0
        ):
            raise ValueError(
                f"weight of variant {name!r} must be a positive finite number (got {weight!r})"
            )
    total = math.fsum(weights.values())
    return {name: weight / total for name, weight in weights.items()}


def unit_hash(*parts: str) -> float:
    """u = ⌊SHA-256(len(p₁)‖p₁‖len(p₂)‖p₂‖…) / 2²⁰³⌋ / 2⁵³ ∈ [0, 1).

    Each part is UTF-8 encoded and prefixed with its byte length (4 bytes, big-endian) so that
    ("ab", "c") and ("a", "bc") hash differently. The top 53 bits fit a float exactly, so u never
    rounds up to 1.0.
    """
    digest = hashlib.sha256()
    for part in parts:
        encoded = part.encode("utf-8")
        digest.update(len(encoded).to_bytes(4, "big"))
        digest.update(encoded)
    top_bits = int.from_bytes(digest.digest()[:8], "big") >> (64 - _MANTISSA_BITS)
    return top_bits / float(1 << _MANTISSA_BITS)


def _require_id(name: str, value: object) -> str:
    # Ids are strings everywhere in nudge; silently str()-ing 7 or 7.0 would split one customer
    # into several buckets.
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string (got {value!r})")
    return value

"""engine.optimizer.assignment: deterministic, weighted, independent, with holdouts."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from engine.optimizer.assignment import (
    HOLDOUT,
    assign_variant,
    in_global_holdout,
    normalize_weights,
    unit_hash,
)

CUSTOMERS = [f"cust-{i}" for i in range(100_000)]
WEIGHTS = {"control": 0.5, "subject_b": 0.3, "subject_c": 0.2}


def test_unit_hash_is_pinned_to_sha256_of_length_prefixed_parts() -> None:
    # Pinned values: a change here reshuffles every running experiment.
    assert unit_hash("a", "b") == 0.08653825171296925
    assert unit_hash("ab", "") == 0.25829622250507234
    payload = b"\x00\x00\x00\x01a\x00\x00\x00\x01b"
    top_53_bits = int.from_bytes(hashlib.sha256(payload).digest()[:8], "big") >> 11
    assert unit_hash("a", "b") == top_53_bits / 2**53


def test_assignment_is_pinned_and_deterministic_across_calls() -> None:
    weights = {"control": 1, "b": 1, "c": 2}
    expected = ["c", "control", "c", "b", "b", "control"]
    for _ in range(3):
        assert [
            assign_variant("welcome-series", f"cust-{i}", weights, holdout=0.1) for i in range(6)
        ] == expected


def test_assignment_is_the_same_in_a_fresh_process_with_another_hash_seed() -> None:
    script = (
        "from engine.optimizer.assignment import assign_variant, in_global_holdout\n"
        "print([assign_variant('exp', f'c{i}', {'a': 1, 'b': 3}, 0.2) for i in range(50)])\n"
        "print([in_global_holdout(f'c{i}', 0.3) for i in range(50)])\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
        cwd=Path(__file__).resolve().parents[3],
    )
    here = (
        f"{[assign_variant('exp', f'c{i}', {'a': 1, 'b': 3}, 0.2) for i in range(50)]}\n"
        f"{[in_global_holdout(f'c{i}', 0.3) for i in range(50)]}\n"
    )
    assert child.stdout == here


def test_allocation_matches_the_weights() -> None:
    counts = Counter(assign_variant("subject-line", customer, WEIGHTS) for customer in CUSTOMERS)
    observed = [counts[name] for name in WEIGHTS]
    expected = [len(CUSTOMERS) * share for share in WEIGHTS.values()]
    assert sum(observed) == len(CUSTOMERS)
    assert stats.chisquare(observed, expected).pvalue > 0.001


def test_experiment_holdout_share_and_allocation_of_the_rest() -> None:
    counts = Counter(
        assign_variant("winback", customer, {"control": 1, "treatment": 1}, holdout=0.1)
        for customer in CUSTOMERS
    )
    observed = [counts[HOLDOUT], counts["control"], counts["treatment"]]
    expected = [10_000, 45_000, 45_000]
    assert stats.chisquare(observed, expected).pvalue > 0.001


def test_growing_the_holdout_only_moves_customers_into_it() -> None:
    weights = {"control": 1, "treatment": 1}
    small = [assign_variant("winback", c, weights, holdout=0.05) for c in CUSTOMERS[:20_000]]
    large = [assign_variant("winback", c, weights, holdout=0.15) for c in CUSTOMERS[:20_000]]
    moved = [(before, after) for before, after in zip(small, large, strict=True) if before != after]
    assert moved and all(after == HOLDOUT for _, after in moved)
    assert all(
        after == HOLDOUT for before, after in zip(small, large, strict=True) if before == HOLDOUT
    )


def test_global_holdout_share_is_persistent_and_salted() -> None:
    held = np.array([in_global_holdout(customer, 0.05) for customer in CUSTOMERS])
    share = held.mean()
    assert abs(share - 0.05) < 4 * math.sqrt(0.05 * 0.95 / len(CUSTOMERS))
    assert [in_global_holdout(c, 0.05) for c in CUSTOMERS[:1_000]] == held[:1_000].tolist()
    # a larger share keeps everyone already held out
    assert all(
        in_global_holdout(c, 0.10) for c, h in zip(CUSTOMERS[:5_000], held, strict=False) if h
    )
    resalted = np.array([in_global_holdout(c, 0.05, salt="2027") for c in CUSTOMERS[:20_000]])
    overlap = (resalted & held[:20_000]).mean()
    assert overlap == pytest.approx(0.05 * 0.05, abs=0.002)


def test_different_experiments_assign_independently() -> None:
    first = [assign_variant("exp-a", c, {"x": 1, "y": 1}) for c in CUSTOMERS]
    second = [assign_variant("exp-b", c, {"x": 1, "y": 1}) for c in CUSTOMERS]
    table = Counter(zip(first, second, strict=True))
    contingency = [[table["x", "x"], table["x", "y"]], [table["y", "x"], table["y", "y"]]]
    assert stats.chi2_contingency(contingency).pvalue > 0.001
    # and the variant stream is independent of the global holdout
    held = [in_global_holdout(c, 0.5) for c in CUSTOMERS]
    table = Counter(zip(first, held, strict=True))
    contingency = [[table["x", True], table["x", False]], [table["y", True], table["y", False]]]
    assert stats.chi2_contingency(contingency).pvalue > 0.001


def test_variant_order_in_the_mapping_does_not_matter() -> None:
    reordered = dict(reversed(list(WEIGHTS.items())))
    assert [assign_variant("e", c, WEIGHTS) for c in CUSTOMERS[:2_000]] == [
        assign_variant("e", c, reordered) for c in CUSTOMERS[:2_000]
    ]


def test_normalize_weights_scales_to_shares() -> None:
    assert normalize_weights({"a": 1, "b": 3}) == {"a": 0.25, "b": 0.75}


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({}, "weights is empty"),
        ({"a": 1, "b": 0}, "weight of variant 'b' must be a positive finite number"),
        ({"a": -1}, "weight of variant 'a' must be a positive finite number"),
        ({"a": math.nan}, "weight of variant 'a'"),
        ({"a": True}, "weight of variant 'a'"),
        ({"a": "1"}, "weight of variant 'a'"),
        ({"": 1}, "variant names must be non-empty strings"),
        ({1: 1}, "variant names must be non-empty strings"),
        ({"holdout": 1}, "'holdout' is reserved"),
        ([("a", 1)], "weights must map variant names"),
    ],
)
def test_invalid_weights_are_refused_with_a_clear_message(weights, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        assign_variant("e", "c", weights)


@pytest.mark.parametrize("holdout", [-0.1, 1.0, math.nan])
def test_invalid_holdout_is_refused(holdout: float) -> None:
    with pytest.raises(ValueError, match="holdout must be a share"):
        assign_variant("e", "c", {"a": 1}, holdout=holdout)


def test_ids_must_be_non_empty_strings() -> None:
    with pytest.raises(ValueError, match="customer_id"):
        assign_variant("e", 42, {"a": 1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="experiment_id"):
        assign_variant("", "c", {"a": 1})
    with pytest.raises(ValueError, match="share must lie in"):
        in_global_holdout("c", 1.5)

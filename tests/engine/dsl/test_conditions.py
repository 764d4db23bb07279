"""Conditions: every kind and operator, three-valued logic, traces with the values seen."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from engine.decisions.state import CustomerState, StateLimits
from engine.dsl.conditions import (
    ConditionError,
    EvaluationContext,
    Outcome,
    ScoreValue,
    compile_condition,
)
from engine.dsl.operators import OPERATORS, compile_predicate

NOW = datetime(2026, 3, 4, 15, 30, tzinfo=UTC).timestamp()  # a Wednesday
H, D = 3600.0, 86400.0


def compiled(raw):
    errors: list[ConditionError] = []
    condition = compile_condition(raw, ("if",), errors)
    assert not errors, errors
    return condition


def context(
    *, history=(), scores=None, profile=None, event=None, zone="UTC", event_type="cart_abandoned"
):
    state = CustomerState.from_events(
        "c1", [(t, NOW + offset, a) for t, offset, a in history], StateLimits()
    )
    return EvaluationContext(
        event_type=event_type,
        event=event
        or {"properties": {"cart_value": 42.0, "items": ["a", "b"], "coupon": "SPRING10"}},
        profile=profile or {"country": "DE", "consent_email": True, "first_name": "Ada"},
        state=state,
        scores=scores or {},
        now=NOW,
        zone=ZoneInfo(zone),
    )


@pytest.mark.parametrize(
    ("test", "value", "expected"),
    [
        ({"equals": 3}, 3.0, True), ({"not_equals": "a"}, "b", True), ({"gt": 2}, 3, True),
        ({"gte": 3}, 3, True), ({"lt": 3}, 3, False), ({"lte": 3}, "3", True),
        ({"between": [1, 5]}, 5, True), ({"between": [1, 5]}, 6, False), ({"in": ["US", "CA"]}, "CA", True),
        ({"not_in": ["US"]}, "DE", True), ({"contains": "b"}, ["a", "b"], True), ({"contains": "SPR"}, "SPRING10", True),
        ({"not_contains": "x"}, "abc", True), ({"starts_with": "SPR"}, "SPRING", True), ({"ends_with": "10"}, "SPRING10", True),
        ({"matches": "^S.*0$"}, "SPRING10", True), ({"exists": True}, None, False), ({"not_exists": True}, None, True),
        ({"gte": 3}, None, False), ({"gt": 1}, "abc", False),
    ],
)  # fmt: skip
def test_every_operator(test, value, expected):
    assert compile_predicate(test).holds(value) is expected


def test_operator_list_is_the_documented_one():
    assert set(OPERATORS) == {
        "equals", "not_equals", "gt", "gte", "lt", "lte", "between", "in", "not_in", "contains",
        "not_contains", "starts_with", "ends_with", "matches", "exists", "not_exists",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"gtee": 1}, "unknown operator 'gtee'"),
        ({"between": 3}, "between: expected [low, high]"),
        ({"in": "US"}, "in: expected a list"),
        ({"matches": "("}, "invalid regular expression"),
        ({"exists": "yes"}, "exists: expected true or false"),
    ],
)
def test_operator_mistakes_are_errors_at_load_time(raw, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        compile_predicate(raw)


def test_event_and_attribute_paths():
    ctx = context()
    assert (
        compiled(
            {
                "event": {
                    "where": {
                        "properties.cart_value": {"gte": 20},
                        "properties.coupon": {"starts_with": "SPR"},
                    }
                }
            }
        ).check(ctx)
        is Outcome.PASSED
    )
    assert compiled({"event": {"type": "page_view"}}).check(ctx) is Outcome.FAILED
    assert (
        compiled({"attribute": {"country": {"in": ["DE", "AT"]}, "consent_email": True}}).check(ctx)
        is Outcome.PASSED
    )
    assert compiled({"attribute": {"traits.tier": {"exists": True}}}).check(ctx) is Outcome.FAILED


def test_behavior_counts_and_sums_in_windows():
    ctx = context(
        history=[
            ("purchase_completed", -2 * D, 50.0),
            ("purchase_completed", -10 * D, 20.0),
            ("purchase_completed", -40 * D, 5.0),
        ]
    )
    assert (
        compiled(
            {"behavior": {"event": "purchase_completed", "within": "30d", "count": {"equals": 2}}}
        ).check(ctx)
        is Outcome.PASSED
    )
    assert (
        compiled(
            {"behavior": {"event": "purchase_completed", "within": "30d", "sum": {"gte": 70}}}
        ).check(ctx)
        is Outcome.PASSED
    )
    assert (
        compiled(
            {
                "behavior": {
                    "event": "purchase_completed",
                    "between": ["60d", "30d"],
                    "count": {"equals": 1},
                }
            }
        ).check(ctx)
        is Outcome.PASSED
    )
    assert (
        compiled({"behavior": {"event": "purchase_completed", "within": "1d"}}).check(ctx)
        is Outcome.FAILED
    )


def test_named_patterns_are_behaviors():
    views = [("product_view", -m * 60.0, None) for m in range(1, 7)]
    assert (
        compiled({"behavior": {"pattern": "browsing_intensity"}}).check(context(history=views))
        is Outcome.PASSED
    )
    assert (
        compiled({"behavior": {"pattern": "browsing_intensity", "count": {"gte": 10}}}).check(
            context(history=views)
        )
        is Outcome.FAILED
    )
    declining = [("email_opened", -45 * D, None), ("email_opened", -50 * D, None)]
    assert (
        compiled({"behavior": {"pattern": "engagement_decline"}}).check(context(history=declining))
        is Outcome.PASSED
    )
    still_opening = [*declining, ("email_opened", -3 * D, None)]
    assert (
        compiled({"behavior": {"pattern": "engagement_decline"}}).check(
            context(history=still_opening)
        )
        is Outcome.FAILED
    )


def test_time_conditions_use_the_customer_zone():
    ctx = context(
        history=[("email_sent", -4 * D, None)], zone="Asia/Tokyo"
    )  # 15:30 UTC = 00:30 Thursday in Tokyo
    assert (
        compiled({"time": {"since_last": "email_sent", "gte": "3d"}}).check(ctx) is Outcome.PASSED
    )
    assert (
        compiled({"time": {"since_last": "purchase_completed", "gte": "3d"}}).check(ctx)
        is Outcome.PASSED
    ), "never = long ago"
    assert compiled({"time": {"hour": {"lt": 1}}}).check(ctx) is Outcome.PASSED
    assert compiled({"time": {"day_of_week": {"in": ["thu"]}}}).check(ctx) is Outcome.PASSED
    assert compiled({"time": {"day_of_week": {"in": ["thu"]}}}).check(context()) is Outcome.FAILED


def test_sequence_in_order_within_window_and_the_absence_step():
    order = [("product_view", -3 * H, None), ("cart_add", -2 * H, None)]
    wrong_order = [("cart_add", -3 * H, None), ("product_view", -2 * H, None)]
    seq = {"sequence": {"steps": ["product_view", "cart_add"], "within": "24h"}}
    assert compiled(seq).check(context(history=order)) is Outcome.PASSED
    assert compiled(seq).check(context(history=wrong_order)) is Outcome.FAILED
    absent = {
        "sequence": {
            "steps": ["cart_add"],
            "within": "24h",
            "then_absent": {"event": "purchase_completed", "within": "1h"},
        }
    }
    assert compiled(absent).check(context(history=order)) is Outcome.PASSED
    bought = [*order, ("purchase_completed", -1.5 * H, 10.0)]
    assert compiled(absent).check(context(history=bought)) is Outcome.FAILED
    bought_later = [*order, ("purchase_completed", -0.5 * H, 10.0)]
    assert compiled(absent).check(context(history=bought_later)) is Outcome.PASSED
    # The window is still open: not known yet (the purchase may still come), never passed early.
    just_added = [("cart_add", -0.5 * H, None)]
    assert compiled(absent).check(context(history=just_added)) is Outcome.MISSING
    explained = compiled(absent).explain(context(history=just_added))
    assert explained["outcome"] == "missing"
    spoiled = [*just_added, ("purchase_completed", -0.25 * H, 5.0)]
    assert compiled(absent).check(context(history=spoiled)) is Outcome.FAILED


def test_score_conditions_follow_on_missing_and_max_age():
    fresh = {"churn": ScoreValue(0.8, "v3", NOW - 60)}
    stale = {"churn": ScoreValue(0.8, "v3", NOW - 8 * D)}
    rule = {"score": {"model": "churn", "gte": 0.5, "max_age": "7d", "on_missing": "skip"}}
    assert compiled(rule).check(context(scores=fresh)) is Outcome.PASSED
    assert compiled(rule).check(context(scores=stale)) is Outcome.MISSING
    assert compiled(rule).check(context()) is Outcome.MISSING
    for on_missing, outcome in (("pass", Outcome.PASSED), ("fail", Outcome.FAILED)):
        rule["score"]["on_missing"] = on_missing
        assert compiled(rule).check(context()) is outcome
    unknown = {"churn": ScoreValue(0.8, "v3", NOW, known=False)}
    assert (
        compiled({"score": {"model": "churn", "gte": 0.5, "on_missing": "fail"}}).check(
            context(scores=unknown)
        )
        is Outcome.FAILED
    )


def test_max_age_is_measured_from_the_features_snapshot_when_the_service_gives_it():
    rule = {"score": {"model": "churn", "gte": 0.5, "max_age": "7d", "on_missing": "skip"}}
    old_features = {"churn": ScoreValue(0.8, "v3", NOW, features_at=NOW - 460 * D)}
    recent = {"churn": ScoreValue(0.8, "v3", NOW - 10 * D, features_at=NOW - 6 * D)}
    assert compiled(rule).check(context(scores=old_features)) is Outcome.MISSING
    assert compiled(rule).check(context(scores=recent)) is Outcome.PASSED
    trace = compiled(rule).explain(context(scores=old_features))
    assert (trace["age"], trace["age_from"], trace["max_age"]) == (460 * D, "features", 7 * D)
    assert trace["missing"] is True and trace["actual"] is None and trace["known"] is True
    # An older service that does not say: from the fetch, as before.
    fetched = compiled(rule).explain(context(scores={"churn": ScoreValue(0.8, "v3", NOW - 60)}))
    assert (fetched["age"], fetched["age_from"], fetched["outcome"]) == (60, "fetched", "passed")


def test_the_prior_of_an_unknown_customer_is_missing_with_no_age():
    rule = {"score": {"model": "churn", "gte": 0.5, "max_age": "7d", "on_missing": "fail"}}
    prior = {"churn": ScoreValue(0.8, "v3", NOW, known=False, features_at=None)}
    trace = compiled(rule).explain(context(scores=prior))
    assert trace["outcome"] == "failed" and trace["missing"] is True
    assert (trace["known"], trace["age"]) == (False, None)


def test_three_valued_logic():
    missing = {"score": {"model": "churn", "gte": 0.5}}
    passed, failed = {"event": "cart_abandoned"}, {"event": "page_view"}
    ctx = context()
    assert compiled({"all": [passed, missing]}).check(ctx) is Outcome.MISSING
    assert compiled({"all": [failed, missing]}).check(ctx) is Outcome.FAILED
    assert compiled({"any": [passed, missing]}).check(ctx) is Outcome.PASSED
    assert compiled({"any": [failed, missing]}).check(ctx) is Outcome.MISSING
    assert compiled({"not": missing}).check(ctx) is Outcome.MISSING
    assert compiled({"not": failed}).check(ctx) is Outcome.PASSED


def test_trace_shows_every_leaf_with_what_it_saw():
    rule = {"all": [
        {"event": {"where": {"properties.cart_value": {"gte": 50}}}},
        {"score": {"model": "churn", "gte": 0.3, "on_missing": "pass"}},
        {"not": {"behavior": {"event": "purchase_completed", "within": "1h"}}},
    ]}  # fmt: skip
    trace = compiled(rule).explain(context(scores={"churn": ScoreValue(0.42, "v7", NOW)}))
    assert trace["outcome"] == "failed"
    event_leaf, score_leaf, not_node = trace["children"]
    assert event_leaf["fields"][0] == {
        "field": "properties.cart_value",
        "test": {"gte": 50},
        "actual": 42.0,
        "outcome": "failed",
    }
    assert (score_leaf["actual"], score_leaf["model_version"], score_leaf["outcome"]) == (
        0.42,
        "v7",
        "passed",
    )
    assert not_node["children"][0]["actual"] == 0 and not_node["outcome"] == "passed"


def test_compile_collects_every_error_with_its_path():
    errors: list[ConditionError] = []
    compile_condition(
        {"all": [{"score": {"model": "churn", "gtee": 1}}, {"behavior": {"event": "x"}}, {"colour": 1}, {"not": {"time": {"minute": 3}}}]},
        ("if",), errors,
    )  # fmt: skip
    paths = [e.path for e in errors]
    assert paths == [
        ("if", "all", 0, "score"),
        ("if", "all", 1, "behavior"),
        ("if", "all", 2, "colour"),
        ("if", "all", 3, "not", "time"),
    ]


def test_state_stays_bounded():
    state = CustomerState("c1")
    limits = StateLimits(retention=10 * D, max_events=5)
    for i in range(50):
        state.record_event("page_view", NOW + i * D, None, limits)
    assert len(state.events["page_view"]) == 5
    old = CustomerState("c2")
    for i in range(8):
        old.record_event("page_view", NOW + i * 3 * D, None, limits)
    assert all(t >= NOW + 21 * D - 10 * D for t in old.events["page_view"].times)
    assert CustomerState.from_json("c2", old.to_json()).events == old.events


def test_late_events_keep_the_history_in_time_order():
    state = CustomerState("c1")
    for offset in (5, 1, 3, 2):
        state.record_event("purchase_completed", NOW + offset, float(offset), StateLimits())
    history = state.events["purchase_completed"]
    assert history.times == [NOW + 1, NOW + 2, NOW + 3, NOW + 5] and history.amounts == [
        1.0,
        2.0,
        3.0,
        5.0,
    ]
    assert (
        state.count("purchase_completed", NOW + 1, NOW + 3) == 2
        and state.total("purchase_completed", NOW, NOW + 5) == 11.0
    )


# Leaves that pass, fail or are missing on `context()` below, to nest in every combinator.
_LEAVES = [
    {"event": {"where": {"properties.cart_value": {"gte": 40}}}},  # passed
    {
        "event": {"type": "cart_abandoned", "where": {"properties.cart_value": {"gte": 50}}}
    },  # failed
    {"attribute": {"country": {"in": ["DE"]}, "first_name": {"exists": True}}},  # passed
    {"behavior": {"event": "product_view", "within": "1d", "count": {"gte": 2}}},  # passed
    {"behavior": {"event": "product_view", "within": "1d", "count": {"gte": 3}}},  # failed
    {"score": {"model": "churn", "gt": 0.5, "on_missing": "skip"}},  # missing
    {"score": {"model": "churn", "gt": 0.5, "on_missing": "pass"}},  # passed
]


def _nested(seed: int) -> dict:
    import random

    rnd = random.Random(seed)

    def node(depth: int) -> dict:
        if depth == 0 or rnd.random() < 0.3:
            return rnd.choice(_LEAVES)
        kind = rnd.choice(["all", "any", "not"])
        if kind == "not":
            return {"not": node(depth - 1)}
        return {kind: [node(depth - 1) for _ in range(rnd.randint(1, 3))]}

    return node(3)


@pytest.mark.parametrize("seed", range(200))
def test_a_trace_gives_the_outcome_check_gives_at_every_node(seed):
    # Combinators take their outcome from their children's traces instead of checking again.
    ctx = context(history=[("product_view", -H, None), ("product_view", -2 * H, None)])
    condition = compiled(_nested(seed))

    def agree(node, trace):
        assert trace["outcome"] == node.check(ctx).label, (node, trace)
        for child, child_trace in zip(
            getattr(node, "children", ()) or ([node.child] if hasattr(node, "child") else []),
            trace.get("children", []),
            strict=True,
        ):
            agree(child, child_trace)

    agree(condition, condition.explain(ctx))

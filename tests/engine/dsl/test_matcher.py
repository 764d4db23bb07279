"""The generated matcher gives exactly what the conditions' own `check` gives."""

import random
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from engine.decisions.state import CustomerState, StateLimits
from engine.dsl.conditions import EvaluationContext, Outcome, ScoreValue
from engine.dsl.triggers import TriggerIndex, load_trigger_text

NOW = datetime(2026, 5, 6, 12, tzinfo=UTC).timestamp()
TYPES = ["page_view", "cart_add", "purchase_completed", "email_opened"]


def random_condition(rnd: random.Random, depth: int = 0) -> str:
    kinds = ["behavior", "sum", "event", "attribute", "score", "time"] + (
        ["all", "any", "not"] if depth < 2 else []
    )
    kind = rnd.choice(kinds)
    if kind == "behavior":
        op = rnd.choice(["gte", "lt", "equals", "between"])
        test = f"{{{op}: [1, 3]}}" if op == "between" else f"{{{op}: {rnd.randint(0, 4)}}}"
        return f"{{behavior: {{event: {rnd.choice(TYPES)}, within: {rnd.choice(['1h', '1d', '7d'])}, count: {test}}}}}"
    if kind == "sum":
        return f"{{behavior: {{event: purchase_completed, between: [30d, 1d], sum: {{gte: {rnd.randint(0, 80)}}}}}}}"
    if kind == "event":
        return rnd.choice([
            f"{{event: {{where: {{properties.value: {{gt: {rnd.randint(0, 50)}}}}}}}}}",
            "{event: {where: {properties.label: {starts_with: a}}}}",
            "{event: {type: cart_abandoned, where: {properties.nested.deep: {exists: true}}}}",
        ])  # fmt: skip
    if kind == "attribute":
        return rnd.choice(
            [
                "{attribute: {country: {in: [US, DE]}}}",
                f"{{attribute: {{traits.age: {{gte: {rnd.randint(18, 60)}}}}}}}",
            ]
        )
    if kind == "score":
        return f"{{score: {{model: churn, gte: 0.5, on_missing: {rnd.choice(['skip', 'pass', 'fail'])}}}}}"
    if kind == "time":
        return "{time: {hour: {between: [9, 17]}}}"
    if kind == "not":
        return f"{{not: {random_condition(rnd, depth + 1)}}}"
    children = ", ".join(random_condition(rnd, depth + 1) for _ in range(rnd.randint(1, 3)))
    return f"{{{kind}: [{children}]}}"


def random_triggers(rnd: random.Random, n: int) -> TriggerIndex:
    docs = []
    for i in range(n):
        where = rnd.choice(
            ["", ", where: {properties.value: {gte: 10}}", ", where: {properties.value: {lt: 30}}"]
        )
        docs.append(
            f"- id: t{i}\n  when: {{event: cart_abandoned{where}}}\n  if: {random_condition(rnd)}\n  actions: [{{add_to_segment: {{segment: s}}}}]"
        )
    result = load_trigger_text("\n".join(docs))
    assert not result.issues, [str(i) for i in result.issues[:3]]
    return TriggerIndex(result.triggers)


def random_context(rnd: random.Random) -> EvaluationContext:
    state = CustomerState("c")
    for _ in range(rnd.randint(0, 30)):
        state.record_event(
            rnd.choice(TYPES),
            NOW - rnd.random() * 10 * 86400,
            rnd.choice([None, 5.0, 25.0]),
            StateLimits(),
        )
    value = rnd.choice([None, 5, 12.5, 40, "35", "abc", True])
    props = {
        "value": value,
        "label": rnd.choice(["apple", "berry", None]),
        "nested": rnd.choice([{"deep": 1}, {}]),
    }
    profile = {
        "country": rnd.choice(["US", "FR", None]),
        "traits": {"age": rnd.choice([20, 45, "70", None])},
    }
    scores = rnd.choice([{}, {"churn": ScoreValue(rnd.random(), "v1", NOW)}])
    return EvaluationContext(
        "cart_abandoned",
        {"properties": props},
        profile,
        state,
        scores,
        NOW,
        ZoneInfo("Europe/Paris"),
    )


def interpreted(index: TriggerIndex, ctx: EvaluationContext) -> list[tuple[str, Outcome]]:
    out = []
    for trigger in index.for_event("cart_abandoned"):
        if trigger.where is not None and trigger.where.check(ctx) is not Outcome.PASSED:
            continue
        outcome = trigger.condition.check(ctx) if trigger.condition else Outcome.PASSED
        if outcome is not Outcome.FAILED:
            out.append((trigger.id, outcome))
    return out


def test_generated_matcher_agrees_with_the_conditions_on_random_triggers():
    rnd = random.Random(20261128)
    for _ in range(20):
        index = random_triggers(rnd, 40)
        match = index.matcher("cart_abandoned")
        for _ in range(50):
            ctx = random_context(rnd)
            compiled = [(t.id, o) for t, o in match(ctx)]  # must not raise: no silent fallback
            assert compiled == interpreted(index, ctx), match.source

"""The suppression policy file and a trigger's policy: override: loading, every mistake at its line,
and how an override merges over the global policy."""

from dataclasses import replace
from datetime import time
from pathlib import Path

import pytest

from engine.decisions.suppression import ChannelCap, SuppressionPolicy
from engine.dsl.policy import (
    CHANNELS,
    PolicyError,
    load_policy_file,
    load_policy_text,
    policy_from_file,
)
from engine.dsl.triggers import ACTION_CHANNELS, load_trigger_text

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "policy.yaml"

BROKEN = """\
caps:
  emial: {per_local_day: 1}
  email: {per_local_day: 0, rolling: [{window: 0d, max: 3}, {window: 7d}]}
consent: {sms: "bad name"}
quiet_hours: {start: 21:00, end: "25:00"}
engagement_floor: 2
unengaged_sends: many
global_holdout: 0.7
bogus: 1
"""


def test_no_file_and_an_empty_file_are_exactly_the_defaults(tmp_path):
    assert policy_from_file(None) == SuppressionPolicy()
    empty = tmp_path / "policy.yaml"
    empty.write_text("# nothing said\n")
    assert policy_from_file(empty) == SuppressionPolicy()


def test_the_shipped_example_spells_out_the_defaults_with_a_holdout():
    loaded = load_policy_file(DEPLOY)
    assert loaded.issues == []
    assert loaded.policy.global_holdout == 0.05
    assert replace(loaded.policy, global_holdout=0.0) == SuppressionPolicy()


def test_every_mistake_is_reported_with_file_path_and_line(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(BROKEN)
    issues = [str(i) for i in load_policy_file(path).issues]
    f = str(path)
    assert issues == [
        f"{f}:2: caps.emial: not a valid name here: Input should be 'email', 'sms', 'push' or 'webhook'",
        f"{f}:3: caps.email.per_local_day: Input should be greater than or equal to 1",
        f"{f}:3: caps.email.rolling[0].window: expected a duration longer than 0, such as 7d",
        f"{f}:3: caps.email.rolling[1].max: is required",
        f"{f}:4: consent.sms: expected the name of a profile attribute such as consent_email (got 'bad name')",
        f'{f}:5: quiet_hours.start: write the time in quotes, e.g. "21:00" (YAML read 1260)',
        f"{f}:5: quiet_hours.end: expected a local time \"HH:MM\" (got '25:00')",
        f"{f}:6: engagement_floor: Input should be less than or equal to 1",
        f"{f}:7: unengaged_sends: Input should be a valid integer",
        f"{f}:8: global_holdout: Input should be less than or equal to 0.5",
        f"{f}:9: bogus: unknown key",
    ]
    with pytest.raises(PolicyError) as raised:
        policy_from_file(path)
    assert len(raised.value.issues) == len(issues) and issues[0] in str(raised.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("caps: [1, 2\n", "<p>:2: (top): not valid YAML: "),
        (
            "- a list\n",
            "<p>:1: (top): expected a policy (a mapping of caps, consent, quiet_hours, …)",
        ),
        ("a: &x [*x]\n", "<p>:1: (top): an alias refers to the collection that holds it"),
    ],
)
def test_a_file_that_is_not_a_policy_is_one_issue(text, expected):
    [issue] = load_policy_text(text, "<p>").issues
    assert str(issue).startswith(expected)


def test_an_unreadable_file_is_one_issue(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("a: 1\n" * 60_000)
    [issue] = load_policy_file(big).issues
    assert "file too large" in str(issue)
    [issue] = load_policy_file(tmp_path / "absent.yaml").issues
    assert "cannot be read" in str(issue)


def test_what_the_file_says_is_written_over_the_defaults():
    loaded = load_policy_text(
        """
caps:
  email: {per_local_day: null, rolling: [{window: 1d, max: 2}, {window: 30d, max: 8}]}
  sms: null
  webhook: {per_local_day: 5}
consent: {push: null, email: newsletter_optin}
quiet_hours: {start: "22:30"}
engagement_model: engagement_v2
engagement_floor: 0.1
unengaged_sends: 4
global_holdout: 0.1
"""
    )
    assert loaded.issues == []
    policy = loaded.policy
    assert policy.caps == {
        "email": ChannelCap(per_local_day=None, rolling=((86400.0, 2), (30 * 86400.0, 8))),
        "push": ChannelCap(),
        "webhook": ChannelCap(per_local_day=5, rolling=()),  # a new cap starts from none
    }
    assert policy.consent_fields == {"email": "newsletter_optin", "sms": "consent_sms"}
    assert (policy.quiet_start, policy.quiet_end) == (time(22, 30), time(8, 0))
    assert (policy.engagement_model, policy.engagement_floor, policy.unengaged_sends) == (
        "engagement_v2", 0.1, 4,
    )  # fmt: skip
    assert policy.global_holdout == 0.1
    off = load_policy_text("quiet_hours: null\n").policy
    assert off.quiet_start == off.quiet_end, "no quiet hours: a window that holds no time"


def trigger(policy_yaml: str):
    text = f"""id: t
when: {{event: cart_abandoned}}
actions: [{{send_email: {{template: r}}}}]
policy:
{policy_yaml}"""
    return load_trigger_text(text, "t.yaml")


def test_a_trigger_override_merges_over_the_global_policy_for_that_trigger_only():
    result = trigger('  caps: {email: {per_local_day: 2}}\n  quiet_hours: {end: "09:30"}\n')
    assert result.issues == []
    [t] = result.triggers
    base = load_policy_text("caps: {email: {rolling: [{window: 7d, max: 5}]}}\n").policy
    mine = t.policy_for(base)
    assert mine.caps["email"] == ChannelCap(per_local_day=2, rolling=((7 * 86400.0, 5),))
    assert mine.caps["sms"] == base.caps["sms"]
    assert (mine.quiet_start, mine.quiet_end) == (time(21, 0), time(9, 30))
    assert t.policy_for(base) is mine, "merged once per global policy"
    assert base.caps["email"].per_local_day == 1, "the global policy is left as it was"
    [plain] = load_trigger_text(
        "id: u\nwhen: {event: x}\nactions: [{webhook: {url: h}}]\n"
    ).triggers
    assert plain.policy_for(base) is base


def test_mistakes_in_a_trigger_override_have_their_line_and_the_holdout_is_global():
    result = trigger(
        "  caps:\n    email: {per_local_day: -1}\n  global_holdout: 0.1\n  colour: red\n"
    )
    assert [str(i) for i in result.issues] == [
        "t.yaml:6: policy.caps.email.per_local_day: Input should be greater than or equal to 1",
        "t.yaml:7: policy.global_holdout: the global holdout is one for every trigger: set it in the policy file",
        "t.yaml:8: policy.colour: unknown key",
    ]


def test_the_policy_knows_the_channels_of_trigger_actions():
    assert set(CHANNELS) == set(ACTION_CHANNELS.values())

"""send_sms and send_push in trigger files: their channel, the template they need, and the check
that their template (<name>.sms.j2 / <name>.push.j2) exists and compiles."""

from pathlib import Path

import pytest

from engine.dsl.triggers import check_templates, load_trigger_text


def one(action: str):
    result = load_trigger_text(f"id: t1\nwhen: {{event: cart_abandoned}}\nactions: [{action}]\n")
    return result


@pytest.mark.parametrize(("kind", "channel"), [("send_sms", "sms"), ("send_push", "push")])
def test_the_actions_use_their_channel(kind, channel):
    result = one(f"{{{kind}: {{template: cart}}}}")
    assert not result.issues
    [trigger] = result.triggers
    assert trigger.channels == frozenset({channel})
    [step] = trigger.plan
    assert (step.kind, step.params, step.channel) == (kind, {"template": "cart"}, channel)


@pytest.mark.parametrize("kind", ["send_sms", "send_push"])
def test_a_template_is_required_and_must_be_a_plain_name(kind):
    [issue] = one(f"{{{kind}: {{}}}}").issues
    assert f"{kind} needs 'template'" in issue.message
    [issue] = one(f"{{{kind}: {{template: ../etc/passwd}}}}").issues
    assert "plain template name" in issue.message and f"{kind}" in issue.path


def test_the_channel_templates_are_checked_where_the_file_names_them(tmp_path: Path):
    (tmp_path / "cart.sms.j2").write_text("Hi {{ customer.name }}")
    (tmp_path / "cart.push.j2").write_text("title: {% if %}\n---\nx")  # a syntax error
    text = """
id: t1
when: {event: cart_abandoned}
actions:
  - send_sms: {template: cart}
  - send_push: {template: cart}
  - send_sms: {template: nope}
"""
    triggers = load_trigger_text(text).triggers
    issues = check_templates(triggers, tmp_path)
    assert [(i.path, i.line) for i in issues] == [
        ("actions[1].send_push.template", 6),
        ("actions[2].send_sms.template", 7),
    ]
    assert "cart.push" in issues[0].message
    assert "'nope.sms' not found" in issues[1].message


def test_an_sms_template_is_not_an_email_template(tmp_path: Path):
    (tmp_path / "cart.j2").write_text("subject: x\n---\nbody")  # only the email exists
    triggers = one("{send_sms: {template: cart}}").triggers
    [issue] = check_templates(triggers, tmp_path)
    assert "'cart.sms' not found" in issue.message

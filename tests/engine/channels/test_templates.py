"""Email templates: the sandbox, every failure a TemplateError, number filters, header values."""

import time
from decimal import Decimal
from pathlib import Path

import pytest

from engine.channels.email import (
    EmailSettings,
    RenderedEmail,
    TemplateError,
    load_template,
    money_filter,
    number_filter,
    render_email,
)
from engine.store.customers import upsert_profiles
from engine.store.outbox import list_actions

SHIPPED = Path(__file__).resolve().parents[3] / "engine" / "templates"
PROFILE = {"customer_id": "c1", "email": "ada@example.com", "first_name": "Ada"}


def render(templates: Path, name: str, *, profile=None, **properties):
    return render_email(
        EmailSettings(templates_dir=templates),
        name,
        idempotency_key="k1",
        profile=profile or PROFILE,
        event={"event_type": "x", "properties": properties},
        scores={},
        trigger_id="t",
        marketing=True,
    )


def write(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / f"{name}.j2").write_text(text)
    return tmp_path


# -- 1. the sandbox ------------------------------------------------------------------------------


def test_a_template_cannot_run_commands(tmp_path):
    marker = tmp_path / "pwned"
    payload = f"{{{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() }}}}"
    templates = write(tmp_path, "evil", f"subject: hi\n---\n{payload}\n")
    with pytest.raises(TemplateError, match=r"template 'evil', line 3: not allowed in a template"):
        render(templates, "evil")
    assert not marker.exists(), "the shell command ran"


@pytest.mark.parametrize(
    "expression",
    [
        "cycler.__init__",  # alone it would render empty: refused at once instead
        "''.__class__.__mro__",
        "properties.__class__",
        "9 ** 999999",  # not folded at compile time (that would hang), refused at render
        "'x' * 1000000000",
        "range(1000000000) | list",
        "properties.update({'total': 0})",  # the event is shared with the batch's other actions
        "event.properties.pop('total')",
    ],
)
def test_unsafe_or_huge_expressions_are_template_errors(tmp_path, expression):
    templates = write(tmp_path, "t", f"subject: hi\n---\n{{{{ {expression} }}}}\n")
    started = time.perf_counter()
    with pytest.raises(TemplateError, match=r"template 't', line 3: "):
        render(templates, "t")
    assert time.perf_counter() - started < 1.0


# -- 2. every failure is a TemplateError with the name and line ----------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("subject: hi\n---\n\n{{ foo(\n", r"template 'bad', line 4: unexpected 'end of template'"),
        ("subject: hi\n---\n{% if %}x{% endif %}\n", r"template 'bad', line 3: Expected an expr"),
        ("subject: hi\n---\n{{ x | no_such_filter }}\n", r"line 3: No filter named"),
        ("subject: hi\n---\n{{ nothing() }}\n", r"template 'bad', line 3: 'nothing' is undefined"),
        (
            'subject: hi\n---\nok\n{{ "%.2f"|format("35.00") }}\n',
            r"template 'bad', line 4: TypeError: must be real number, not str",
        ),
        ("subject: hi\n---\n{{ 1 / 0 }}\n", r"line 3: ZeroDivisionError"),
        ("subject: hi\n---\n{{ properties.total | number(-1) }}\n", r"line 3: ValueError: places"),
        (
            "{% macro f() %}{{ f() }}{% endmacro %}subject: hi\n---\n{{ f() }}\n",
            r"template 'bad'.*RecursionError",
        ),
        ("{% include 'missing' %}", r"template 'missing' not found"),
        ("no subject line here\n", r"template 'bad': expected 'subject: ...'"),
    ],
)
def test_every_failure_is_a_template_error(tmp_path, text, message):
    with pytest.raises(TemplateError, match=message) as caught:
        render(write(tmp_path, "bad", text), "bad")
    assert "\n" not in str(caught.value), "one line"


def test_a_missing_template_or_a_name_outside_the_folder(tmp_path):
    with pytest.raises(TemplateError, match=r"template 'nope' not found in"):
        render(tmp_path, "nope")
    (tmp_path.parent / "outside.j2").write_text("subject: x\n---\nsecret\n")
    for name in ["../outside", "/etc/hostname", "a/../../outside", "x.j2", ""]:
        with pytest.raises(TemplateError, match=r"template name: expected a plain template name"):
            load_template(tmp_path, name)


def test_an_unreadable_template_is_a_template_error(tmp_path):
    (tmp_path / "latin.j2").write_bytes(b"subject: caf\xe9\n---\nx\n")
    with pytest.raises(TemplateError, match=r"template 'latin': UnicodeDecodeError"):
        render(tmp_path, "latin")


def test_a_broken_template_fails_the_action_at_once(engine_store, tmp_path):
    from engine.channels.webhooks import WebhookSender
    from engine.dsl.triggers import TriggerIndex, load_trigger_text
    from engine.runtime.dispatcher import Dispatcher
    from engine.runtime.inbox import accept_events
    from engine.runtime.processor import Processor

    templates = write(tmp_path, "broken", "subject: hi\n---\n{{ foo(\n")
    index = TriggerIndex(
        load_trigger_text(
            "id: t\nquiet_hours: ignore\nwhen: {event: signup}\n"
            "actions: [{send_email: {template: broken}}]\n"
        ).triggers
    )
    engine_store.write(upsert_profiles, {"c1": {**PROFILE, "consent_email": True}}, 0.0)
    event = {"event_id": "e1", "customer_id": "c1", "event_type": "signup",
             "timestamp": "2026-03-04T10:00:00+00:00", "properties": {}}  # fmt: skip
    accept_events(engine_store, [event], source="t")
    Processor(engine_store, index).run_until_empty()
    email = EmailSettings(templates_dir=templates, outbox_dir=tmp_path / "outbox")
    dispatcher = Dispatcher(engine_store, index, email=email, webhooks=WebhookSender("s"))
    assert dispatcher.run_due(2e9).outcomes == {"failed": 1}
    [action] = engine_store.read(list_actions)
    assert action.attempts == 0 and action.result.startswith("template 'broken', line 3:")


# -- 3. number and money filters -----------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [35, 35.0, "35", "35.00", " 35 ", Decimal("35"), Decimal("35.001")]
)
def test_money_accepts_numbers_and_numeric_text(value):
    assert money_filter(value) == "35.00"
    assert money_filter(value, "EUR") == "35.00 EUR"


@pytest.mark.parametrize(
    ("value", "places", "expected"),
    [
        ("12.5", 2, "12.50"),
        (2.675, 2, "2.68"),  # half-up on the decimal text, not the float's binary value
        ("-0.001", 2, "0.00"),  # never "-0.00"
        (1234567.891, 1, "1234567.9"),
        ("7", 0, "7"),
        (10**20, 2, ""),  # not an amount: an integer renders empty, not 21 digits
        ("1e400", 2, "1e400"),  # text that is not a reasonable number stays as it was
    ],
)
def test_number_fixed_decimals(value, places, expected):
    assert number_filter(value, places) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("abc", "abc"), ("", ""), ("nan", "nan"), ("inf", "inf"), (None, ""), (True, ""), ([1], "")],
)
def test_non_numbers_render_a_fallback_not_an_error(value, expected):
    assert money_filter(value) == expected and money_filter(value, "EUR") == expected


def test_undefined_renders_empty(tmp_path):
    templates = write(tmp_path, "t", "subject: hi\n---\n[{{ properties.total | money }}]\n")
    assert render(templates, "t").body.startswith("[]\n")


@pytest.mark.parametrize(
    ("template", "properties", "shown"),
    [
        ("cross_sell", {"total": "35.00", "order_id": "o1"}, "35.00"),
        ("cross_sell", {"total": 35}, "35.00"),
        ("browse_reminder", {"product_id": "p1", "price": "12.5"}, "(p1, 12.50)"),
        ("cart_reminder", {"cart_value": "99"}, "worth 99.00 in your cart"),
        ("cart_reminder", {"cart_value": "abc"}, "worth abc in your cart"),
        ("cart_reminder", {}, "worth 0.00 in your cart"),
    ],
)
def test_shipped_templates_take_numeric_text(template, properties, shown):
    assert shown in render(SHIPPED, template, **properties).body


def test_no_shipped_template_formats_numbers_with_percent_format():
    for path in SHIPPED.glob("*.j2"):
        assert "|format" not in path.read_text().replace(" ", ""), path.name


# -- 4. header values ----------------------------------------------------------------------------


def test_a_line_break_in_the_subject_is_a_template_error(tmp_path):
    templates = write(tmp_path, "hi", "subject: Hi {{ customer.name }}\n---\nbody\n")
    evil = {**PROFILE, "first_name": "Eve\r\nBcc: x@evil.example"}
    with pytest.raises(TemplateError, match=r"template 'hi': the subject contains a line break"):
        render(templates, "hi", profile=evil)
    for name, problem in [("Eve\u2028x", "line break"), ("Eve\x00", "control character")]:
        with pytest.raises(TemplateError, match=problem):
            render(templates, "hi", profile={**PROFILE, "first_name": name})


@pytest.mark.parametrize(
    ("email", "problem"),
    [
        ("ada@example.com\nBcc: x@evil.example", "contains a line break"),
        ("ada@example.com\r", "contains a line break"),
        ("ada@example.com\x07", "contains a control character"),
        ("ada@example.com, x@evil.example", "is not a single plain address"),
        ("Ada <ada@example.com>", "is not a single plain address"),
        ("not-an-address", "is not a single plain address"),
    ],
)
def test_a_bad_to_address_is_a_template_error(email, problem):
    with pytest.raises(TemplateError, match=f"the customer's email address {problem}"):
        render(SHIPPED, "welcome", profile={**PROFILE, "email": email})


def test_to_message_never_raises_a_bare_value_error():
    for bad in [
        RenderedEmail("a@b.example", "x\nBcc: y@z.example", "body\n", "<m@nudge>", {}),
        RenderedEmail("a@b.example\r\n", "x", "body\n", "<m@nudge>", {}),
        RenderedEmail("a@b.example", "x", "body\n", "<m@nudge>", {"X-Y": "a\nb"}),
    ]:
        with pytest.raises(TemplateError, match="cannot be built"):
            bad.to_message("nudge <hello@nudge.example>")
    surrogate = RenderedEmail("a@b.example", "x\ud800", "body\n", "<m@nudge>", {})
    with pytest.raises(TemplateError, match="cannot be built"):
        surrogate.to_bytes("nudge <hello@nudge.example>")


def test_a_lone_surrogate_in_the_body_is_a_template_error(tmp_path):
    templates = write(tmp_path, "t", "subject: hi\n---\n{{ properties.note }}\n")
    with pytest.raises(TemplateError, match="not valid Unicode"):
        render(templates, "t", note="bad \ud800 text")

"""HTML email: autoescaping, the layout and partials, the preheader, CSS inlined, the text part
derived from the HTML with its links, errors naming the template (and partial) and line."""

from pathlib import Path

import pytest

from engine.channels.channel_templates import render_channel_template
from engine.channels.email import EmailSettings, TemplateError, load_template, render_email
from engine.channels.email_html import html_to_text, inline_css

SHIPPED = Path(__file__).resolve().parents[3] / "engine" / "templates"
PROFILE = {"customer_id": "c1", "email": "ada@example.com", "first_name": "Ada"}


def render(templates: Path, name: str, *, profile=None, marketing=True, **properties):
    return render_email(
        EmailSettings(templates_dir=templates),
        name,
        idempotency_key="k1",
        profile=profile or PROFILE,
        event={"event_type": "x", "properties": properties},
        scores={"churn": {"value": 0.8, "model_version": "3"}},
        trigger_id="t",
        marketing=marketing,
    )


def with_layout(tmp_path: Path) -> Path:
    """A templates folder with the shipped layout and partials."""
    for sub in ("layouts", "partials"):
        (tmp_path / sub).mkdir(exist_ok=True)
        for path in (SHIPPED / sub).glob("*.j2"):
            (tmp_path / sub / path.name).write_text(path.read_text())
    return tmp_path


def write(folder: Path, filename: str, text: str) -> Path:
    (folder / filename).write_text(text)
    return folder


# -- escaping ------------------------------------------------------------------------------------


def test_html_is_autoescaped_and_text_is_not():
    evil = {**PROFILE, "first_name": "<b>Eve</b>"}
    email = render(SHIPPED, "cart_reminder", profile=evil, cart_value="1")
    assert email.html is not None
    assert "Hi &lt;b&gt;Eve&lt;/b&gt;," in email.html and "<b>Eve</b>" not in email.html
    assert "Hi <b>Eve</b>," in email.body  # the text part is text: nothing to escape
    assert email.subject == "<b>Eve</b>, your cart is waiting"  # a header, not HTML


def test_a_property_cannot_inject_markup_or_break_an_attribute(tmp_path):
    folder = with_layout(tmp_path)
    write(folder, "link.html.j2", '{% extends "layouts/base.html.j2" %}{% block subject %}Hi'
          '{% endblock %}{% block content %}<a href="{{ properties.url }}">go</a>{% endblock %}')  # fmt: skip
    email = render(folder, "link", url='x" onclick="alert(1)')
    assert 'href="x&#34; onclick=&#34;alert(1)"' in email.html or "&quot;" in email.html
    assert 'onclick="alert(1)"' not in email.html


def test_sms_and_text_templates_are_not_escaped(tmp_path):
    from engine.channels.base import Delivery

    write(tmp_path, "n.sms.j2", "Hi {{ customer.name }} & co")
    delivery = Delivery(1, "k", "c1", "t", "e1", None, {}, {**PROFILE, "first_name": "<Eve>"},
                        {"properties": {}}, {}, True, lambda ref: None)  # fmt: skip
    assert render_channel_template(tmp_path, "n", "sms", delivery) == "Hi <Eve> & co"


# -- layout, partials, preheader, CSS ------------------------------------------------------------


def test_every_shipped_template_has_html_and_text_parts():
    names = sorted(p.name.removesuffix(".html.j2") for p in SHIPPED.glob("*.html.j2"))
    texts = sorted(
        p.name.removesuffix(".j2") for p in SHIPPED.glob("*.j2") if ".html" not in p.name
    )
    assert names == texts and len(names) >= 9
    for name in names:
        compiled = load_template(SHIPPED, name)
        assert compiled.text is not None and compiled.html is not None
        email = render(SHIPPED, name, order_id="A1", total="35", cart_value="9", product_id="p1")
        assert email.html.lstrip().lower().startswith("<!doctype html>")
        assert "<style" not in email.html.split("</head>")[0] or "@media" in email.html
        assert 'style="' in email.html  # CSS inlined
        assert "Unsubscribe" in email.html and "unsubscribe?c=c1" in email.html


def test_the_preheader_is_hidden_preview_text(tmp_path):
    email = render(SHIPPED, "winback_offer")
    body = email.html.split("<body", 1)[1]
    first = body[body.index(">") + 1 :].lstrip()
    assert first.startswith('<div style="display:none')
    assert "15% off this week: MISSYOU15" in first.split("</div>")[0]
    assert "MISSYOU15" in email.body  # the written text part is its own
    folder = with_layout(tmp_path)
    write(folder, "h.html.j2", '{% extends "layouts/base.html.j2" %}{% block subject %}S'
          '{% endblock %}{% block preheader %}Peek here{% endblock %}'
          '{% block content %}<p>Body</p>{% endblock %}')  # fmt: skip
    derived = render(folder, "h")
    assert "Peek here" in derived.html and "Peek here" not in derived.body
    write(folder, "n.html.j2", '{% extends "layouts/base.html.j2" %}{% block subject %}S'
          '{% endblock %}{% block content %}<p>Body</p>{% endblock %}')  # fmt: skip
    assert "display:none" not in render(folder, "n").html, "no preheader: no hidden block"


def test_css_is_inlined_and_media_queries_kept():
    html = (
        "<html><head><style>.b { color: #ff0000; } p { margin: 0 } "
        "@media (max-width: 600px) { .b { color: blue } }</style></head>"
        '<body><p class="b">x</p></body></html>'
    )
    out = inline_css(html)
    assert '<p class="b" style="margin: 0;color: #ff0000;">' in out  # by specificity
    assert "@media (max-width: 600px)" in out
    linked = inline_css('<html><head><link rel="stylesheet" href="http://127.0.0.1:9/x.css">'
                        "</head><body>y</body></html>")  # fmt: skip
    assert "y" in linked  # never fetched: no network when rendering


# -- text derived from the HTML ------------------------------------------------------------------


def test_derived_text_keeps_links_lists_and_skips_hidden_parts():
    html = """<html><head><title>T</title><style>p{color:red}</style></head><body>
    <div style="display: none">preview</div>
    <h1>Hello&nbsp;Ada</h1>
    <p>Your   cart is <strong>waiting</strong>.<br>Second line.</p>
    <p><a href="https://shop.example/cart?a=1&amp;b=2">Back to your cart</a></p>
    <p><a href="https://shop.example/x">https://shop.example/x</a> <a href="#top">top</a>
       <a href="mailto:help@shop.example">help@shop.example</a></p>
    <ul><li>One</li><li>Two <img src="x.png" alt="(star)"></li></ul>
    <script>alert(1)</script><span hidden>secret</span>
    </body></html>"""
    text = html_to_text(html)
    assert text == (
        "Hello Ada\n\nYour cart is waiting.\nSecond line.\n\n"
        "Back to your cart (https://shop.example/cart?a=1&b=2)\n\n"
        "https://shop.example/x top help@shop.example\n\n- One\n\n- Two (star)\n"
    )


def test_an_html_only_template_gets_a_derived_text_part(tmp_path):
    folder = with_layout(tmp_path)
    write(folder, "only.html.j2", '{% extends "layouts/base.html.j2" %}'
          "{% block subject %}Hi {{ customer.name }} & friends{% endblock %}"
          '{% block content %}<p>See <a href="https://shop.example/new">what is new</a>.</p>'
          "{% endblock %}")  # fmt: skip
    email = render(folder, "only", profile={**PROFILE, "first_name": "<Eve>"})
    assert email.subject == "Hi <Eve> & friends"
    assert "<title>Hi &lt;Eve&gt; &amp; friends</title>" in email.html
    assert "See what is new (https://shop.example/new)." in email.body
    # The layout's footer already links the unsubscribe URL: it is not added twice.
    assert email.body.count("unsubscribe?c=c1") == 1
    assert "Unsubscribe (https://nudge.example/unsubscribe?c=c1&t=" in email.body


def test_marketing_html_without_the_layout_still_gets_an_unsubscribe_link(tmp_path):
    write(tmp_path, "bare.j2", "subject: Hi\n---\nBody\n")
    write(tmp_path, "bare.html.j2", "<html><body><p>Body</p></body></html>")
    email = render(tmp_path, "bare")
    assert email.html.count("unsubscribe?c=c1&amp;t=") == 1
    assert email.html.index("Unsubscribe") < email.html.index("</body>")
    transactional = render(tmp_path, "bare", marketing=False)
    assert "nsubscribe" not in transactional.html and "nsubscribe" not in transactional.body


# -- errors: always a TemplateError naming the template (and partial) and line -------------------


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"e.html.j2": "<p>{{ foo( }}</p>"}, r"template 'e.html', line 1: unexpected"),
        (
            {"e.j2": "subject: x\n---\nok\n", "e.html.j2": "<p>\n{{ 1 / 0 }}</p>"},
            r"template 'e.html', line 2: ZeroDivisionError",
        ),
        (
            {"e.html.j2": "<p>no subject</p>"},
            r"the HTML must give the subject in \{% block subject",
        ),
        (
            {"e.j2": "subject: x\n---\nok\n", "e.html.j2": '{% extends "layouts/nope.html.j2" %}'},
            r"template 'layouts/nope.html' not found",
        ),
        (
            {
                "e.j2": "subject: x\n---\nok\n",
                "partials/bad.html.j2": "a\n{{ customer.name.__class__ }}",
                "e.html.j2": 'x{% include "partials/bad.html.j2" %}',
            },
            r"template 'e.html' \(partials/bad.html.j2\), line 2: not allowed in a template",
        ),
        (
            {
                "e.j2": "subject: x\n---\nok\n",
                "e.html.j2": "{{ 'x' * 99999 }}{{ 'y' * 99999 }}" * 6,
            },
            r"template 'e.html': renders over 1,000,000 characters",
        ),
        (
            {"e.html.j2": "{% block subject %}{% endblock %}<p>x</p>"},
            r"template 'e.html': the subject block renders empty",
        ),
    ],
)
def test_every_html_failure_is_a_template_error(tmp_path, files, message):
    (tmp_path / "partials").mkdir()
    for name, text in files.items():
        write(tmp_path, name, text)
    with pytest.raises(TemplateError, match=message) as caught:
        render(tmp_path, "e")
    assert "\n" not in str(caught.value)


def test_the_trigger_loader_checks_the_html_part_too(tmp_path):
    from engine.dsl.triggers import check_templates, load_trigger_text

    write(tmp_path, "c.j2", "subject: x\n---\nok\n")
    write(tmp_path, "c.html.j2", "{% if %}")
    text = "id: t\nwhen: {event: signup}\nactions: [{send_email: {template: c}}]\n"
    issues = check_templates(load_trigger_text(text).triggers, tmp_path)
    assert [i for i in issues if "template 'c.html', line 1" in str(i)], issues

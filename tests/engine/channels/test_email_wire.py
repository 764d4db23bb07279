"""Email on the wire: the raw bytes of headers (never an encoded-word in List-*), Message-ID,
List-Id, X-Nudge-Message, senders, multipart structure, DKIM signatures that verify."""

import base64
import re
from email import message_from_bytes, policy
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from engine.channels.dkim import DkimConfigError, DkimSigner, load_dkim_signer
from engine.channels.email import EmailSettings, RenderedEmail, TemplateError, render_email
from engine.channels.email_wire import fold_plain

SHIPPED = Path(__file__).resolve().parents[3] / "engine" / "templates"
PROFILE = {"customer_id": "c1", "email": "ada@example.com", "first_name": "Ada"}


def rendered(settings=None, *, template="cart_reminder", profile=None, marketing=True, **kw):
    return render_email(
        settings or EmailSettings(templates_dir=SHIPPED),
        template,
        idempotency_key="cart_recovery:c1:e1:0",
        profile=profile or PROFILE,
        event={"event_type": "cart_abandoned", "properties": {"cart_value": "42.5"}},
        scores={},
        trigger_id="cart_recovery",
        marketing=marketing,
        **kw,
    )


def raw_headers(raw: bytes) -> list[bytes]:
    """The header block's physical lines, as bytes (no decoding parser)."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    return head.split(b"\r\n")


def header_field(raw: bytes, name: str) -> bytes:
    """One header's raw text, its folded lines joined back with their CRLFs."""
    lines = raw_headers(raw)
    for i, line in enumerate(lines):
        if line.lower().startswith(name.lower().encode() + b":"):
            field = [line]
            for more in lines[i + 1 :]:
                if more[:1] not in (b" ", b"\t"):
                    break
                field.append(more)
            return b"\r\n".join(field)
    raise AssertionError(f"no {name} header in {raw[:400]!r}")


# -- List-Unsubscribe and friends: plain ASCII, folded only at spaces ----------------------------


@pytest.mark.parametrize(
    "customer_id",
    ["c1", "x" * 120, "kunde-müller-ß-€", "顧客" * 40, "a b&c=d?e/f#g"],
)
def test_list_unsubscribe_is_plain_ascii_on_the_wire(customer_id):
    base = "https://unsubscribe.shop.example/" + "very-long-path/" * 12 + "u"
    settings = EmailSettings(templates_dir=SHIPPED, unsubscribe_base_url=base)
    raw = rendered(settings, profile={**PROFILE, "customer_id": customer_id}).to_bytes()
    field = header_field(raw, "List-Unsubscribe")
    assert b"=?" not in field, "never an RFC 2047 encoded-word"
    assert field.isascii()
    [line] = field.split(b"\r\n")  # one URL without whitespace: left whole on its line
    assert len(line) > 78 and len(line) <= 998
    assert re.fullmatch(rb"List-Unsubscribe: <https://[\x21-\x7e]+>", line)
    url = line.split(b"<", 1)[1].rstrip(b">").decode()
    assert url.startswith(base + "?c=") and " " not in url
    assert header_field(raw, "List-Unsubscribe-Post") == (
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click"
    )
    # And a mail client sees the same URL the customer's link carries.
    parsed = message_from_bytes(raw, policy=policy.default)
    assert parsed["List-Unsubscribe"] == f"<{url}>"
    text = next(p for p in parsed.walk() if p.get_content_type() == "text/plain").get_content()
    assert url in text


def test_the_encoded_word_of_the_old_code_is_gone():
    """What Python's email package emits for such a header, and what we emit instead."""
    from email.message import EmailMessage

    url = "https://nudge.example/unsubscribe?c=" + "%C3%A9" * 30 + "&t=" + "0" * 32
    legacy = EmailMessage()
    legacy["List-Unsubscribe"] = f"<{url}>"
    assert b"=?utf-8?q?" in legacy.as_bytes(policy=policy.default)  # the bug this fixes
    ours = fold_plain("List-Unsubscribe", f"<{url}>")
    assert ours == f"List-Unsubscribe: <{url}>\r\n"


def test_a_url_longer_than_a_header_line_is_refused_not_encoded():
    settings = EmailSettings(
        templates_dir=SHIPPED, unsubscribe_base_url="https://x.example/" + "u" * 990
    )
    email = rendered(settings)
    with pytest.raises(TemplateError, match="at most 998 characters"):
        email.to_bytes()


def test_plain_folding_happens_at_spaces_only():
    value = " ".join(f"word{i}" for i in range(40))
    folded = fold_plain("X-Long", value)
    lines = folded.removesuffix("\r\n").split("\r\n")
    assert len(lines) > 1 and all(len(line) <= 78 for line in lines)
    assert all(line.startswith(" ") for line in lines[1:])  # continuation lines start with WSP
    assert "".join(lines) == f"X-Long: {value}"  # unfolding gives the value back
    with pytest.raises(ValueError, match="plain ASCII"):
        fold_plain("List-Id", "<é.example>")


def test_a_non_ascii_subject_and_display_name_are_rfc2047_encoded():
    settings = EmailSettings(templates_dir=SHIPPED, sender="Boutique Élodie <hello@shop.example>")
    raw = rendered(settings, profile={**PROFILE, "first_name": "Zoë"}).to_bytes()
    assert raw.isascii()
    assert b"=?utf-8?" in header_field(raw, "Subject")
    assert b"=?utf-8?" in header_field(raw, "From") and b"<hello@shop.example>" in raw
    parsed = message_from_bytes(raw, policy=policy.default)
    assert parsed["Subject"] == "Zoë, your cart is waiting"
    assert parsed["From"].addresses[0].display_name == "Boutique Élodie"


# -- Message-ID, List-Id, X-Nudge-Message, Date, MIME-Version ------------------------------------


def test_message_id_list_id_and_the_action_id():
    raw = rendered(action_id=4711).to_bytes()
    assert re.fullmatch(
        rb"Message-ID: <[0-9a-f]{32}@nudge\.example>", header_field(raw, "Message-ID")
    )
    assert header_field(raw, "List-Id") == b"List-Id: <cart_recovery.nudge.example>"
    assert header_field(raw, "X-Nudge-Message") == b"X-Nudge-Message: 4711"
    assert header_field(raw, "X-PM-Metadata-nudge_action") == b"X-PM-Metadata-nudge_action: 4711"
    assert (
        header_field(raw, "X-Mailgun-Variables") == b'X-Mailgun-Variables: {"nudge_action": "4711"}'
    )
    assert header_field(raw, "X-Nudge-Trigger") == b"X-Nudge-Trigger: cart_recovery"
    assert header_field(raw, "MIME-Version") == b"MIME-Version: 1.0"
    assert re.fullmatch(
        rb"Date: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", header_field(raw, "Date")
    )
    assert raw.count(b"MIME-Version") == 1, "once, at the top"


def test_the_message_id_domain_is_configurable_and_defaults_to_the_senders():
    own = EmailSettings(templates_dir=SHIPPED, message_id_domain="mail.shop.example")
    assert rendered(own).message_id.endswith("@mail.shop.example>")
    by_sender = EmailSettings(templates_dir=SHIPPED, sender="Shop <news@shop.example>")
    email = rendered(by_sender)
    assert email.message_id.endswith("@shop.example>")
    assert email.headers["List-Id"] == "<cart_recovery.shop.example>"
    unusable = EmailSettings(templates_dir=SHIPPED, sender="Shop <news@localhost>")
    assert rendered(unusable).message_id.endswith("@nudge.invalid>")


def test_without_an_action_id_there_is_no_x_nudge_message():
    assert b"X-Nudge-Message" not in rendered().to_bytes()


# -- marketing and transactional senders ---------------------------------------------------------


def test_transactional_mail_has_its_own_sender_and_no_list_headers():
    settings = EmailSettings(
        templates_dir=SHIPPED, sender="Shop News <news@shop.example>",
        transactional_sender="Shop <orders@shop.example>",
    )  # fmt: skip
    marketing = rendered(settings)
    transactional = rendered(settings, template="payment_failed", marketing=False)
    assert marketing.envelope_from == "news@shop.example"
    assert transactional.envelope_from == "orders@shop.example"
    raw = transactional.to_bytes("ignored <other@example.com>")  # the email's own sender wins
    assert header_field(raw, "From") == b"From: Shop <orders@shop.example>"
    assert b"List-Unsubscribe" not in raw and b"List-Id" not in raw
    assert b"unsubscribe" not in raw.lower()
    default = EmailSettings(templates_dir=SHIPPED, sender="Shop <news@shop.example>")
    assert rendered(default, marketing=False).envelope_from == "news@shop.example"


def test_an_email_built_without_a_sender_takes_the_one_given():
    email = RenderedEmail("a@b.example", "hi", "body\n", "<m@b.example>", {})
    assert header_field(email.to_bytes("X <x@b.example>"), "From") == b"From: X <x@b.example>"
    with pytest.raises(TemplateError, match="no sender"):
        email.to_bytes()


# -- MIME structure ------------------------------------------------------------------------------


def test_multipart_alternative_text_then_html_and_stable_bytes():
    email = rendered(now=1_700_000_000.0)
    raw = email.to_bytes()
    assert raw == email.to_bytes(), "the same email makes the same bytes"
    assert b"\n" not in raw.replace(b"\r\n", b""), "CRLF line ends only"
    parsed = message_from_bytes(raw, policy=policy.default)
    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    boundary = parsed.get_boundary()
    assert boundary.startswith("=_")  # quoted-printable never produces "=_": no content ends a part
    assert all(p["Content-Transfer-Encoding"] == "quoted-printable" for p in parsed.iter_parts())
    text, html = (p.get_content() for p in parsed.iter_parts())
    assert "42.50" in text and "42.50" in html
    lf = email.to_bytes(linesep="\n")
    assert b"\r" not in lf and lf.replace(b"\n", b"\r\n") == raw


def test_a_text_only_template_is_a_single_text_part(tmp_path):
    (tmp_path / "plain.j2").write_text("subject: Hi\n---\nJust text.\n")
    email = rendered(EmailSettings(templates_dir=tmp_path), template="plain")
    parsed = message_from_bytes(email.to_bytes(), policy=policy.default)
    assert parsed.get_content_type() == "text/plain" and email.html is None
    assert parsed.get_content().startswith("Just text.")


# -- DKIM ----------------------------------------------------------------------------------------


def rsa_key(tmp_path: Path) -> tuple[Path, bytes]:
    """A fresh 2048-bit key in a file, and the DNS TXT record of its public half."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    path = tmp_path / "dkim.pem"
    path.write_bytes(pem)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return path, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def test_dkim_signature_verifies_and_covers_the_headers(tmp_path):
    path, record = rsa_key(tmp_path)
    signer = load_dkim_signer("shop.example", "s1", path)
    assert isinstance(signer, DkimSigner)
    settings = EmailSettings(templates_dir=SHIPPED, sender="Shop <news@shop.example>", dkim=signer)
    raw = rendered(settings, action_id=9).to_bytes()
    assert raw.startswith(b"DKIM-Signature: ")
    asked = []

    def dns(name, timeout=5):
        asked.append(name)
        return record if name == b"s1._domainkey.shop.example." else None

    assert dkim.verify(raw, dnsfunc=dns)
    assert asked == [b"s1._domainkey.shop.example."]
    signature = header_field(raw, "DKIM-Signature").replace(b"\r\n", b"").replace(b" ", b"")
    assert b"c=relaxed/relaxed" in signature and b"d=shop.example" in signature
    signed = re.search(rb"h=([^;]+)", signature).group(1).lower().split(b":")
    for name in [b"from", b"to", b"subject", b"date", b"message-id", b"list-unsubscribe",
                 b"list-unsubscribe-post"]:  # fmt: skip
        assert name in signed
    # Changing a signed header breaks it; so does the body.
    assert not dkim.verify(raw.replace(b"Subject: Ada", b"Subject: Eve"), dnsfunc=dns)
    assert not dkim.verify(raw.replace(b"42.50", b"0.01"), dnsfunc=dns)
    # A relay re-folding the header block (relaxed canonicalisation) does not.
    assert dkim.verify(
        raw.replace(b"List-Unsubscribe-Post: ", b"List-Unsubscribe-Post:   "), dnsfunc=dns
    )


def test_dkim_settings_are_checked_at_start(tmp_path):
    assert load_dkim_signer(None, None, None) is None
    with pytest.raises(DkimConfigError, match="missing: NUDGE_DKIM_SELECTOR"):
        load_dkim_signer("shop.example", None, tmp_path / "k.pem")
    with pytest.raises(DkimConfigError, match=r"NUDGE_DKIM_KEY_FILE: cannot read .*nope\.pem"):
        load_dkim_signer("shop.example", "s1", tmp_path / "nope.pem")
    (tmp_path / "bad.pem").write_text("-----BEGIN RSA PRIVATE KEY-----\nnot a key\n")
    with pytest.raises(DkimConfigError, match="is not an RSA private key in PEM"):
        load_dkim_signer("shop.example", "s1", tmp_path / "bad.pem")
    with pytest.raises(DkimConfigError, match="NUDGE_DKIM_DOMAIN: expected a domain"):
        load_dkim_signer("not a domain", "s1", tmp_path / "bad.pem")


# -- the MIME writer against the email package ----------------------------------------------------


def package_bytes(headers, text, html, message_id):
    """The same message as the email package writes it (what email_wire did before)."""
    from email.message import EmailMessage

    msg = EmailMessage(policy=policy.SMTP)
    for name, value in headers:
        msg[name] = value
    if html is None:
        msg.set_content(text, charset="utf-8")
    else:
        msg.set_content(text, charset="utf-8", cte="quoted-printable")
        msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    return msg.as_bytes(policy=policy.SMTP)


BODIES = [
    "Hello Ada\n",
    "Café, naïve — 日本語 ✓\nsecond line\n",
    "x" * 300 + "\n" + "word " * 60 + "\n",
    "trailing spaces   \ntab\t\n.\n..leading dots\nFrom the start\n",
    "= signs = and =3D and =?utf-8?q?x?=\n--=_nudge_fake boundary\n",
    "windows\r\nline ends\rold mac\n\nblank above\n",
    "",
]
HTMLS = [
    None,
    "<p>Hi &amp; welcome</p>\n",
    '<html><body><a href="https://shop.example/x?a=1&amp;b=2">Café</a>'
    + "<td>cell</td>" * 40
    + "</body></html>\n",
]


@pytest.mark.parametrize("html", HTMLS)
@pytest.mark.parametrize("text", BODIES)
def test_the_mime_writer_reads_back_as_the_email_package_writes_it(text, html):
    from engine.channels.email_wire import message_bytes

    headers = [("From", "shop <billing@shop.example>"), ("To", "ada@example.com"),
               ("Subject", "Your order"), ("Message-ID", "<abc@shop.example>")]  # fmt: skip
    ours = message_bytes(headers, text, html, message_id="<abc@shop.example>")
    theirs = package_bytes(headers, text, html, "<abc@shop.example>")
    assert max(len(line) for line in ours.split(b"\r\n")) <= 78
    assert b"\n" not in ours.replace(b"\r\n", b"")  # CRLF only, no bare LF or CR
    a = message_from_bytes(ours, policy=policy.default)
    b = message_from_bytes(theirs, policy=policy.default)
    assert a.get_content_type() == b.get_content_type() and not a.defects
    parts_a = list(a.iter_parts()) if a.is_multipart() else [a]
    parts_b = list(b.iter_parts()) if b.is_multipart() else [b]
    assert [p.get_content_type() for p in parts_a] == [p.get_content_type() for p in parts_b]
    for ours_part, their_part in zip(parts_a, parts_b, strict=True):
        assert ours_part.get_content() == their_part.get_content()
        assert ours_part.get_content_charset() == "utf-8" and not ours_part.defects
        assert ours_part["Content-Transfer-Encoding"] in ("7bit", "quoted-printable")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Subject", "Your order"),
        ("Subject", "Ünïcode subject for Ada ✓"),
        ("Subject", "looks like =?utf-8?q?an_encoded?= word"),
        ("Subject", "two  spaces and\ta tab"),
        ("Subject", "a long subject " * 8),
        ("Subject", "run " + "y" * 950),
        ("To", "ada@example.com"),
        ("To", "o'brien+tag@sub.example.co.uk"),
        ("From", "shop <billing@shop.example>"),
        ("From", '"Shop, Inc." <billing@shop.example>'),
        ("From", "Café Ünï <billing@shop.example>"),
        ("From", "billing@shop.example"),
    ],
)
def test_encoded_headers_read_back_as_the_email_package_writes_them(name, value):
    from engine.channels.email_wire import message_bytes

    headers = [(name, value)]
    ours = message_bytes(headers, "hi\n", None, message_id="<m@x>")
    theirs = package_bytes(headers, "hi\n", None, "<m@x>")
    parsed = message_from_bytes(ours, policy=policy.default)
    assert str(parsed[name]) == str(message_from_bytes(theirs, policy=policy.default)[name])
    assert all(len(line) <= 998 for line in raw_headers(ours))
    assert header_field(ours, name).isascii()

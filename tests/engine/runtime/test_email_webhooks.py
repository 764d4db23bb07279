"""Email providers' webhooks on a real server (uvicorn on loopback), SQLite and PostgreSQL.

An email is really sent (the dispatcher through a loopback SMTP sink), so its Message-ID is the
one the dispatcher recorded; then each provider's events are posted over HTTP signed as that
provider signs them — SendGrid's ECDSA (checked against SendGrid's own EventWebhook helper),
Postmark's basic auth, Mailgun's HMAC, SES through SNS with a signing certificate served over
https by a local server with a test CA. Valid → a normalised event matched to the action; a bad
signature → 401/403 and nothing stored; a replay → one event; a malformed body → dead letter.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from fastapi import FastAPI
from sendgrid.helpers.eventwebhook import EventWebhook

from engine.channels.feedback import ses as ses_feedback
from engine.runtime.deliverability import GuardSettings
from engine.runtime.email_webhooks import WebhookConfig, email_webhook_router
from engine.runtime.erasure import address_hash
from engine.runtime.inbox import accept_events
from engine.runtime.processor import Processor
from engine.store.customers import load_profiles
from engine.store.dead_letters import list_dead_letters
from engine.store.inbox import customer_events
from engine.store.outbox import list_actions
from engine.store.suppressions import list_suppressions
from tests.engine.channels.smtp_relay import make_pki
from tests.engine.runtime.test_dispatcher import at, dispatcher, ev, setup
from tests.support import LocalServer, SmtpSink

SALT = b"test-salt"
ADA = "ada@example.com"


@pytest.fixture
def sent(engine_store) -> tuple[Any, str, Any]:
    """The store, the Message-ID of one email really sent to Ada, and its action."""
    index = setup(engine_store)
    accept_events(engine_store, [ev("e1", "c1", "cart_abandoned", 0, cart_value=9.5)], source="t")
    Processor(engine_store, index).run_until_empty()
    with SmtpSink() as smtp:
        assert dispatcher(engine_store, index, smtp_port=smtp.port).run_due(at(61)).outcomes == {
            "sent": 1
        }
        [message] = smtp.messages
    [action] = engine_store.read(list_actions)
    return engine_store, message["Message-ID"], action


def serve(store, config: WebhookConfig, tls: ssl.SSLContext | None = None) -> LocalServer:
    app = FastAPI()
    app.include_router(email_webhook_router(store, config, tls=tls))
    return LocalServer(app)


def feedback(store, customer: str = "c1") -> list[tuple[str, dict[str, Any]]]:
    return [
        (e.event_type, json.loads(e.payload)["properties"])
        for e in store.read(customer_events, customer, 0, 10**10)
        if e.event_type != "cart_abandoned"
    ]


# -- SendGrid ------------------------------------------------------------------------------------


@pytest.fixture
def sendgrid_key() -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, base64.b64encode(der).decode()  # as SendGrid's console shows it


def sendgrid_post(url: str, key: ec.EllipticCurvePrivateKey, public: str, body: bytes,
                  timestamp: str = "1767225600") -> httpx.Response:  # fmt: skip
    signature = base64.b64encode(key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256())))
    # The signing is SendGrid's: its own helper verifies it.
    assert EventWebhook(public).verify_signature(body.decode(), signature.decode(), timestamp)
    headers = {"X-Twilio-Email-Event-Webhook-Signature": signature.decode(),
               "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
               "Content-Type": "application/json"}  # fmt: skip
    return httpx.post(url + "/webhooks/sendgrid", content=body, headers=headers)


def test_sendgrid_events_are_matched_to_the_action_by_smtp_id(sent, sendgrid_key):
    store, message_id, action = sent
    key, public = sendgrid_key
    events = [
        {"email": ADA, "timestamp": 1767225600, "smtp-id": message_id, "event": "processed",
         "sg_event_id": "sg-0", "sg_message_id": "m.1"},
        {"email": ADA, "timestamp": 1767225601, "smtp-id": message_id, "event": "delivered",
         "sg_event_id": "sg-1", "sg_message_id": "m.1", "response": "250 OK"},
        {"email": ADA, "timestamp": 1767225660, "smtp-id": message_id, "event": "open",
         "sg_event_id": "sg-2", "useragent": "Mozilla/5.0"},
        {"email": ADA, "timestamp": 1767225700, "smtp-id": message_id, "event": "click",
         "sg_event_id": "sg-3", "url": "https://shop.example.com/cart"},
    ]  # fmt: skip
    body = json.dumps(events).encode()
    with serve(store, WebhookConfig(SALT, sendgrid_public_key=public)) as server:
        response = sendgrid_post(server.url, key, public, body)
        assert response.status_code == 200, response.text
        assert response.json() == {"received": 3, "accepted": 3, "duplicates": 0, "unmatched": 0}
        again = sendgrid_post(server.url, key, public, body)  # SendGrid retries: same ids
        assert again.json()["duplicates"] == 3
    got = feedback(store)
    assert [t for t, _ in got] == ["email_delivered", "email_opened", "email_clicked"]
    for _, props in got:
        assert props["message_id"] == action.idempotency_key, "the funnel's key: the action's"
        assert props["trigger"] == "cart_recovery" and props["action_id"] == action.id
        assert props["provider"] == "sendgrid" and props["email_message_id"] == message_id
    assert got[2][1]["url"] == "https://shop.example.com/cart"


def test_sendgrid_bad_signature_is_403_and_nothing_is_stored(sent, sendgrid_key):
    store, message_id, _ = sent
    key, public = sendgrid_key
    body = json.dumps([{"email": ADA, "timestamp": 1767225600, "smtp-id": message_id,
                        "event": "bounce", "type": "bounce", "sg_event_id": "sg-9"}]).encode()  # fmt: skip
    signature = base64.b64encode(key.sign(b"1767225600" + body, ec.ECDSA(hashes.SHA256())))
    with serve(store, WebhookConfig(SALT, sendgrid_public_key=public)) as server:
        url = server.url + "/webhooks/sendgrid"
        tampered = body.replace(b"bounce", b"bounce ", 1)
        for content, headers in [
            (tampered, {"X-Twilio-Email-Event-Webhook-Signature": signature.decode(),
                        "X-Twilio-Email-Event-Webhook-Timestamp": "1767225600"}),
            (body, {"X-Twilio-Email-Event-Webhook-Signature": signature.decode(),
                    "X-Twilio-Email-Event-Webhook-Timestamp": "1767225601"}),
            (body, {}),
            (body, {"X-Twilio-Email-Event-Webhook-Signature": "not base64!",
                    "X-Twilio-Email-Event-Webhook-Timestamp": "1767225600"}),
        ]:  # fmt: skip
            assert httpx.post(url, content=content, headers=headers).status_code == 403
    assert feedback(store) == [] and store.read(list_suppressions) == []
    assert store.read(list_dead_letters) == []


def test_sendgrid_hard_bounce_suppresses_the_address_and_malformed_is_a_dead_letter(
    sent, sendgrid_key
):
    store, message_id, _ = sent
    key, public = sendgrid_key
    bounce = [{"email": ADA, "timestamp": 1767225600, "smtp-id": message_id, "event": "bounce",
               "type": "bounce", "status": "5.1.1", "reason": "550 5.1.1 no such user",
               "sg_event_id": "sg-b1"}]  # fmt: skip
    with serve(store, WebhookConfig(SALT, sendgrid_public_key=public)) as server:
        assert (
            sendgrid_post(server.url, key, public, json.dumps(bounce).encode()).status_code == 200
        )
        malformed = json.dumps([{"email": ADA, "event": "delivered", "timestamp": 1}]).encode()
        response = sendgrid_post(server.url, key, public, malformed)
        assert response.status_code == 400 and "sg_event_id: required" in response.json()["detail"]
        not_json = sendgrid_post(server.url, key, public, b"{oops")
        assert not_json.status_code == 400
    [(kind, props)] = feedback(store)
    assert kind == "email_bounced" and props["bounce"] == "hard" and props["code"] == "5.1.1"
    [entry] = store.read(list_suppressions)
    assert (entry.address, entry.reason) == (ADA, "bounced")
    assert entry.address_hash == address_hash(ADA, SALT)
    letters = store.read(list_dead_letters)
    assert len(letters) == 2 and all(d.source == "webhook:sendgrid" for d in letters)
    assert any("[0].sg_event_id: required" in d.reason for d in letters)


# -- Postmark ------------------------------------------------------------------------------------


def test_postmark_basic_auth_bounce_complaint_and_subscription_change(sent):
    store, message_id, action = sent
    config = WebhookConfig(SALT, postmark_user="pm", postmark_password="pm-secret")
    headers = [{"Name": "Message-ID", "Value": message_id}]
    soft = {"RecordType": "Bounce", "ID": 4323372036854775807, "Type": "SoftBounce",
            "TypeCode": 4096, "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
            "Description": "The server was unable to deliver your message", "Email": ADA,
            "BouncedAt": "2026-01-01T10:00:00Z", "Headers": headers}  # fmt: skip
    complaint = {"RecordType": "SpamComplaint", "ID": 42, "Type": "SpamComplaint",
                 "TypeCode": 512, "MessageID": "883953f4", "Email": ADA,
                 "BouncedAt": "2026-01-01T11:00:00Z",
                 "Metadata": {"nudge_action": str(action.id)}}  # fmt: skip
    with serve(store, config) as server:
        url = server.url + "/webhooks/postmark"
        assert httpx.post(url, json=soft).status_code == 401
        wrong = httpx.post(url, json=soft, auth=("pm", "nope"))
        assert wrong.status_code == 401 and "Basic" in wrong.headers["www-authenticate"]
        assert feedback(store) == []
        assert httpx.post(url, json=soft, auth=("pm", "pm-secret")).json()["accepted"] == 1
        assert httpx.post(url, json=soft, auth=("pm", "pm-secret")).json()["duplicates"] == 1
        assert httpx.post(url, json=complaint, auth=("pm", "pm-secret")).status_code == 200
        bad = httpx.post(url, json={"RecordType": "Bounce", "Type": "HardBounce"},
                         auth=("pm", "pm-secret"))  # fmt: skip
        assert bad.status_code == 400 and "ID: required" in bad.json()["detail"]
    got = feedback(store)
    assert [t for t, _ in got] == ["email_bounced", "email_complained", "subscription_changed"]
    assert got[0][1]["bounce"] == "soft" and got[0][1]["message_id"] == action.idempotency_key
    assert got[1][1]["message_id"] == action.idempotency_key, "matched by Metadata"
    [entry] = store.read(list_suppressions)
    assert entry.reason == "complained", "the complaint outranks the soft bounce"
    Processor(store, setup(store)).run_until_empty()
    assert store.read(load_profiles, ["c1"])["c1"]["consent_email"] is False


# -- Mailgun -------------------------------------------------------------------------------------


def mailgun_body(key: str, event: dict[str, Any], token: str = "a" * 50) -> dict[str, Any]:
    timestamp = "1767225600"
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {"signature": {"timestamp": timestamp, "token": token, "signature": signature},
            "event-data": event}  # fmt: skip


def test_mailgun_signed_events_soft_bounces_in_a_row_suspend(sent):
    store, message_id, action = sent
    config = WebhookConfig(SALT, mailgun_signing_key="mg-key", soft_bounce_limit=2,
                           soft_bounce_suspend=3600.0)  # fmt: skip

    def failed(n: int) -> dict[str, Any]:
        return {"id": f"mg-{n}", "event": "failed", "severity": "temporary", "recipient": ADA,
                "timestamp": 1767225600.5 + n, "reason": "generic",
                "delivery-status": {"code": 452, "message": "mailbox full"},
                "message": {"headers": {"message-id": message_id.strip("<>")}}}  # fmt: skip

    with serve(store, config) as server:
        url = server.url + "/webhooks/mailgun"
        forged = mailgun_body("another-key", failed(1))
        assert httpx.post(url, json=forged).status_code == 403
        assert httpx.post(url, json={"event-data": failed(1)}).status_code == 403
        assert store.read(list_suppressions) == []
        assert httpx.post(url, json=mailgun_body("mg-key", failed(1))).json()["accepted"] == 1
        assert httpx.post(url, json=mailgun_body("mg-key", failed(1))).json()["duplicates"] == 1
        [entry] = store.read(list_suppressions)
        assert (entry.reason, entry.soft_bounces, entry.until) == ("soft", 1, None), "once"
        httpx.post(url, json=mailgun_body("mg-key", failed(2)))
        bad = httpx.post(url, json=mailgun_body("mg-key", {"event": "delivered"}))
        assert bad.status_code == 400 and bad.json()["detail"].startswith("event-data.")
    [entry] = store.read(list_suppressions)
    assert entry.reason == "soft" and entry.until is not None and entry.active(entry.until - 1)
    assert not entry.active(entry.until + 1), "a suspension ends"
    got = feedback(store)
    assert [p["code"] for _, p in got] == ["452", "452"]
    assert all(p["message_id"] == action.idempotency_key for _, p in got)


def test_an_event_for_an_unknown_message_goes_to_the_customer_by_address_else_dead_letter(sent):
    store, _, _ = sent
    config = WebhookConfig(SALT, mailgun_signing_key="k")
    other = {"id": "mg-x", "event": "unsubscribed", "recipient": "ADA@example.com",
             "timestamp": 1767225600, "message": {"headers": {"message-id": "x@elsewhere"}}}  # fmt: skip
    nobody = {**other, "id": "mg-y", "recipient": "nobody@example.com", "event": "failed",
              "severity": "permanent"}  # fmt: skip
    with serve(store, config) as server:
        url = server.url + "/webhooks/mailgun"
        assert httpx.post(url, json=mailgun_body("k", other)).json()["accepted"] == 1
        assert httpx.post(url, json=mailgun_body("k", nobody)).json()["unmatched"] == 1
    [(kind, props)] = feedback(store)
    assert kind == "unsubscribed" and "message_id" not in props and props["list"] == "marketing"
    [letter] = store.read(list_dead_letters)
    assert "matches no sent message" in letter.reason
    [entry] = store.read(list_suppressions)
    assert (entry.address, entry.reason) == ("nobody@example.com", "bounced"), "still suppressed"


# -- Amazon SES through SNS ----------------------------------------------------------------------


class _Https:
    """A loopback https server (test CA) serving the SNS signing certificate and a SubscribeURL."""

    def __init__(self, directory: Path, cert_pem: bytes) -> None:
        pki = make_pki(directory / "pki")
        self.client_tls = ssl.create_default_context(cafile=str(pki.ca_file))
        self.hits: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits.append(self.path)
                body = cert_pem if self.path.endswith(".pem") else b"<ConfirmSubscriptionResponse/>"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = pki.server_context().wrap_socket(self.server.socket, server_side=True)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sns(tmp_path) -> Iterator[tuple[rsa.RSAPrivateKey, _Https]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    server = _Https(tmp_path, cert.public_bytes(serialization.Encoding.PEM))
    yield key, server
    server.close()


def sns_message(key: rsa.RSAPrivateKey, host: str, kind: str, message: str, *, version: str = "1",
                message_id: str = "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324") -> dict[str, str]:  # fmt: skip
    data = {"Type": kind, "MessageId": message_id, "Message": message,
            "TopicArn": "arn:aws:sns:us-west-2:123456789012:ses-events",
            "Timestamp": "2026-01-01T10:00:00.000Z", "SignatureVersion": version,
            "SigningCertURL": f"https://{host}/SimpleNotificationService-abc.pem"}  # fmt: skip
    if kind == "SubscriptionConfirmation":
        data["Token"] = "2336412f37f"
        data["SubscribeURL"] = f"https://{host}/?Action=ConfirmSubscription&Token=2336412f37f"
    else:
        data["Subject"] = "Amazon SES Email Event Notification"
    names = (ses_feedback.NOTIFICATION_FIELDS if kind == "Notification"
             else ses_feedback.SUBSCRIPTION_FIELDS)  # fmt: skip
    # The canonical string as AWS documents it, written out here independently of the module.
    text = "".join(f"{n}\n{data[n]}\n" for n in names if n in data).encode()
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()
    data["Signature"] = base64.b64encode(key.sign(text, padding.PKCS1v15(), digest)).decode()
    return data


def ses_event(message_id: str, kind: str, **detail: Any) -> str:
    mail = {"timestamp": "2026-01-01T09:59:00.000Z", "messageId": "0101018e-ses-id",
            "destination": [ADA], "commonHeaders": {"messageId": message_id}}  # fmt: skip
    return json.dumps({"eventType": kind, "mail": mail, **detail})


@pytest.mark.parametrize("version", ["1", "2"])
def test_ses_through_sns_signature_checked_with_the_fetched_certificate(sent, sns, version):
    store, message_id, action = sent
    key, https = sns
    config = WebhookConfig(SALT, sns_cert_hosts=(https.host,))
    bounce = ses_event(message_id, "Bounce", bounce={
        "bounceType": "Permanent", "bounceSubType": "General", "timestamp": "2026-01-01T10:00:00Z",
        "bouncedRecipients": [{"emailAddress": ADA, "status": "5.1.1",
                               "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]})  # fmt: skip
    delivery = ses_event(message_id, "Delivery", delivery={
        "timestamp": "2026-01-01T10:00:00Z", "recipients": [ADA], "smtpResponse": "250 ok"})  # fmt: skip
    with serve(store, config, tls=https.client_tls) as server:
        url = server.url + "/webhooks/ses"
        confirm = sns_message(
            key, https.host, "SubscriptionConfirmation", "confirm", version=version
        )
        response = httpx.post(url, content=json.dumps(confirm))
        assert response.status_code == 200 and response.json()["confirmed"].endswith("ses-events")
        assert any("ConfirmSubscription" in hit for hit in https.hits)
        first = sns_message(key, https.host, "Notification", delivery, version=version,
                            message_id="m-delivery")  # fmt: skip
        assert httpx.post(url, content=json.dumps(first)).json()["accepted"] == 1
        signed = sns_message(key, https.host, "Notification", bounce, version=version)
        assert httpx.post(url, content=json.dumps(signed)).json()["accepted"] == 1
        assert httpx.post(url, content=json.dumps(signed)).json()["duplicates"] == 1
        forged = {**signed, "Message": bounce.replace("Permanent", "Transient")}
        assert httpx.post(url, content=json.dumps(forged)).status_code == 403
        elsewhere = {**signed, "SigningCertURL": "https://evil.example.com/cert.pem"}
        assert httpx.post(url, content=json.dumps(elsewhere)).status_code == 403
        plain = {**signed, "SigningCertURL": signed["SigningCertURL"].replace("https", "http")}
        assert httpx.post(url, content=json.dumps(plain)).status_code == 403
        broken = sns_message(key, https.host, "Notification", "{not json", message_id="m-2")
        answer = httpx.post(url, content=json.dumps(broken))
        assert answer.status_code == 400 and answer.json()["detail"].startswith("Message:")
    assert sum(hit.endswith(".pem") for hit in https.hits) == 1, "the certificate is cached"
    got = feedback(store)
    assert [t for t, _ in got] == ["email_delivered", "email_bounced"]
    assert got[1][1]["bounce"] == "hard" and got[1][1]["message_id"] == action.idempotency_key
    assert [e.reason for e in store.read(list_suppressions)] == ["bounced"]
    [letter] = store.read(list_dead_letters)
    assert letter.source == "webhook:ses"


def test_sns_hosts_are_amazons_unless_allowed():
    allowed = ses_feedback.host_allowed
    assert allowed("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem")
    assert allowed("https://sns.cn-north-1.amazonaws.com.cn/x.pem")
    for url in ["http://sns.us-east-1.amazonaws.com/x.pem", "https://sns.evil.com/x.pem",
                "https://sns.us-east-1.amazonaws.com.evil.com/x.pem",
                "https://user@sns.us-east-1.amazonaws.com/x.pem", "https://127.0.0.1:8443/x",
                "not a url"]:  # fmt: skip
        assert not allowed(url), url
    assert allowed("https://127.0.0.1:8443/x", ["127.0.0.1:8443"])


def test_unknown_and_unconfigured_providers(engine_store):
    with serve(engine_store, WebhookConfig(SALT)) as server:
        assert httpx.post(server.url + "/webhooks/other", content=b"{}").status_code == 404
        for provider in ("sendgrid", "postmark", "mailgun"):
            response = httpx.post(server.url + f"/webhooks/{provider}", content=b"[]")
            assert response.status_code == 503 and "NUDGE_" in response.json()["detail"]
    assert engine_store.read(list_dead_letters) == []


def test_a_complaint_rate_over_the_threshold_pauses_marketing(sent):
    from engine.runtime.deliverability import marketing_pause

    store, message_id, _ = sent
    config = WebhookConfig(SALT, mailgun_signing_key="k",
                           guard=GuardSettings(warn_rate=0.001, pause_rate=0.003, min_delivered=2))  # fmt: skip
    now = dt.datetime.now(dt.UTC).timestamp()

    def event(n: int, kind: str) -> dict[str, Any]:
        return {"id": f"g-{n}", "event": kind, "recipient": ADA, "timestamp": now,
                "message": {"headers": {"message-id": message_id}}}  # fmt: skip

    with serve(store, config) as server:
        url = server.url + "/webhooks/mailgun"
        for n in range(3):
            httpx.post(url, json=mailgun_body("k", event(n, "delivered")))
        assert store.read(marketing_pause) is None
        httpx.post(url, json=mailgun_body("k", event(9, "complained")))
    pause = store.read(marketing_pause)
    assert pause is not None and pause["complained"] == 1 and pause["delivered"] == 3


@pytest.mark.parametrize(
    "event",
    [
        {"id": "n\x00ul", "event": "failed", "severity": "permanent", "recipient": "a\x00@x.io",
         "timestamp": 1767225600, "reason": "\ud800 lone surrogate \x00"},
        {"id": "big", "event": "delivered", "recipient": "a@" + "x" * 5000, "timestamp": 1e300},
        {"id": "t", "event": "clicked", "recipient": ADA, "timestamp": "yesterday"},
        {"id": "h", "event": "opened", "recipient": ADA, "timestamp": 1767225600,
         "user-variables": {"nudge_action": "99999999999"}, "message": {"headers": []}},
        {"id": ["not", "text"], "event": "delivered", "recipient": ADA, "timestamp": 1},
        {"id": "x" * 5000, "event": "complained", "recipient": "b@example.com",
         "timestamp": 1767225600},
    ],
)  # fmt: skip
def test_hostile_provider_input_is_stored_or_dead_lettered_never_a_500(sent, event):
    store, _, _ = sent
    with serve(store, WebhookConfig(SALT, mailgun_signing_key="k")) as server:
        url = server.url + "/webhooks/mailgun"
        # json.dumps escapes a lone surrogate (\ud800): the server's JSON decodes it again.
        response = httpx.post(url, content=json.dumps(mailgun_body("k", event)))
        assert response.status_code in (200, 400), response.text
        deep = json.dumps(mailgun_body("k", {})).replace("{}", "[" * 100_000 + "]" * 100_000)
        assert httpx.post(url, content=deep).status_code in (400, 403)
    stored = len(feedback(store)) + len(store.read(list_dead_letters))
    assert stored >= 1 or response.json().get("received") == 0, "nothing is lost"


def test_a_batch_that_fails_is_applied_one_by_one_and_nothing_is_lost(sent, monkeypatch):
    from engine.runtime import email_webhooks

    store, message_id, _ = sent
    real = email_webhooks._update_lists
    calls = []

    def fails_once(*args: Any) -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("injected")
        return real(*args)

    monkeypatch.setattr(email_webhooks, "_update_lists", fails_once)
    failed = {"id": "f1", "event": "failed", "severity": "permanent", "recipient": ADA,
              "timestamp": 1767225600, "message": {"headers": {"message-id": message_id}}}  # fmt: skip
    with serve(store, WebhookConfig(SALT, mailgun_signing_key="k")) as server:
        response = httpx.post(server.url + "/webhooks/mailgun", json=mailgun_body("k", failed))
    assert response.status_code == 200 and response.json()["duplicates"] == 1, "stored once"
    assert [t for t, _ in feedback(store)] == ["email_bounced"]
    assert [e.reason for e in store.read(list_suppressions)] == ["bounced"]


def test_engine_serve_app_reads_the_secrets_from_the_settings(sent, monkeypatch):
    from engine.runtime.api import create_app

    store, message_id, action = sent
    monkeypatch.setenv("NUDGE_MAILGUN_WEBHOOK_SIGNING_KEY", "from-env")
    monkeypatch.delenv("NUDGE_SENDGRID_WEBHOOK_PUBLIC_KEY", raising=False)
    delivered = {"id": "env-1", "event": "delivered", "recipient": ADA, "timestamp": 1767225600,
                 "message": {"headers": {"message-id": message_id}}}  # fmt: skip
    with LocalServer(create_app(store, "api-key")) as server:
        ok = httpx.post(server.url + "/webhooks/mailgun", json=mailgun_body("from-env", delivered))
        assert ok.status_code == 200 and ok.json()["accepted"] == 1, "no API key needed"
        off = httpx.post(server.url + "/webhooks/sendgrid", content=b"[]")
        assert off.status_code == 503 and "NUDGE_SENDGRID_WEBHOOK_PUBLIC_KEY" in off.text
    [(kind, props)] = feedback(store)
    assert kind == "email_delivered" and props["message_id"] == action.idempotency_key


def test_sns_messages_of_another_topic_are_refused_when_topics_are_set(sent, sns):
    store, message_id, _ = sent
    key, https = sns
    config = WebhookConfig(SALT, sns_cert_hosts=(https.host,),
                           sns_topic_arns=("arn:aws:sns:us-west-2:123456789012:other",))  # fmt: skip
    delivery = ses_event(message_id, "Delivery", delivery={
        "timestamp": "2026-01-01T10:00:00Z", "recipients": [ADA]})  # fmt: skip
    with serve(store, config, tls=https.client_tls) as server:
        signed = sns_message(key, https.host, "Notification", delivery, version="2")
        response = httpx.post(server.url + "/webhooks/ses", content=json.dumps(signed))
    assert response.status_code == 403 and "TopicArn" in response.json()["detail"]
    assert feedback(store) == []


def test_a_body_that_cannot_be_checked_is_400_and_not_stored(engine_store):
    config = WebhookConfig(SALT, mailgun_signing_key="k", sns_cert_hosts=("127.0.0.1:1",))
    with serve(engine_store, config) as server:
        for provider, body in [("mailgun", b"{not json"), ("ses", b"\xff\xfe"),
                               ("ses", json.dumps({"Type": "Notification"}).encode())]:  # fmt: skip
            response = httpx.post(server.url + f"/webhooks/{provider}", content=body)
            assert response.status_code == 400, (provider, response.text)
    assert engine_store.read(list_dead_letters) == [], "unsigned junk fills nothing"

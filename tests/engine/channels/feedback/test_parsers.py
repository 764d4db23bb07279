"""The providers' event JSON as each documents it → FeedbackEvents (pure): every record type
nudge uses, the ones it skips, and the field a malformed body names."""

from __future__ import annotations

import json

import pytest

from engine.channels.feedback import FeedbackError, mailgun, postmark, sendgrid, ses

MID = "<3f1c9a@shop.example.com>"


def one(events):
    [event] = events
    return event


def test_postmark_record_types():
    base = {"MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "Recipient": "ada@example.com",
            "Metadata": {"nudge_action": "17"}, "MessageStream": "outbound"}  # fmt: skip
    delivery = one(postmark.parse(json.dumps({**base, "RecordType": "Delivery",
                   "DeliveredAt": "2026-01-01T10:00:00Z", "Details": "Test delivery"}).encode()))  # fmt: skip
    assert (delivery.kind, delivery.action_id, delivery.recipient) == (
        "delivered",
        17,
        "ada@example.com",
    )
    opened = one(postmark.parse(json.dumps({**base, "RecordType": "Open", "FirstOpen": True,
                 "ReceivedAt": "2026-01-01T10:05:00Z", "UserAgent": "Mozilla/5.0"}).encode()))  # fmt: skip
    clicked = one(postmark.parse(json.dumps({**base, "RecordType": "Click",
                  "ReceivedAt": "2026-01-01T10:06:00Z", "OriginalLink": "https://shop.example/x",
                  "ClickLocation": "HTML"}).encode()))  # fmt: skip
    assert (opened.kind, clicked.kind, clicked.url) == (
        "opened",
        "clicked",
        "https://shop.example/x",
    )
    assert opened.event_id != clicked.event_id
    change = {**base, "RecordType": "SubscriptionChange", "ChangedAt": "2026-01-01T11:00:00Z",
              "SuppressSending": True, "SuppressionReason": "ManualSuppression",
              "Origin": "Recipient"}  # fmt: skip
    assert one(postmark.parse(json.dumps(change).encode())).kind == "unsubscribed"
    for other in ({"SuppressSending": False}, {"SuppressionReason": "HardBounce"}):
        assert postmark.parse(json.dumps({**change, **other}).encode()) == []
    auto = {"RecordType": "Bounce", "ID": 1, "Type": "AutoResponder", "Email": "a@b.c",
            "BouncedAt": "2026-01-01T10:00:00Z"}  # fmt: skip
    assert postmark.parse(json.dumps(auto).encode()) == [], "an auto-reply is not a bounce"
    hard = one(postmark.parse(json.dumps({**auto, "Type": "HardBounce", "TypeCode": 1}).encode()))
    assert (hard.bounce, hard.code) == ("hard", "1")
    with pytest.raises(FeedbackError, match="DeliveredAt: required"):
        postmark.parse(json.dumps({**base, "RecordType": "Delivery"}).encode())


def test_ses_event_types_and_notifications():
    mail = {"messageId": "0101-ses", "destination": ["ada@example.com"],
            "commonHeaders": {"messageId": MID},
            "headers": [{"name": "X-Nudge-Message", "value": "42"}]}  # fmt: skip
    complaint = ses.parse_message("sns-1", json.dumps({"notificationType": "Complaint", "mail": mail,
        "complaint": {"timestamp": "2026-01-01T10:00:00.000Z", "complaintFeedbackType": "abuse",
                      "complainedRecipients": [{"emailAddress": "ada@example.com"}]}}))  # fmt: skip
    event = one(complaint)
    assert (event.kind, event.message_id, event.action_id) == ("complained", MID, 42)
    opened = one(ses.parse_message("sns-2", json.dumps({"eventType": "Open", "mail": mail,
        "open": {"timestamp": "2026-01-01T10:00:00Z", "userAgent": "Mozilla/5.0",
                 "ipAddress": "192.0.2.1"}})))  # fmt: skip
    assert (opened.kind, opened.recipient) == ("opened", "ada@example.com")
    two = ses.parse_message("sns-3", json.dumps({"eventType": "Bounce", "mail": mail, "bounce": {
        "bounceType": "Transient", "bounceSubType": "MailboxFull", "timestamp": "2026-01-01T10:00:00Z",
        "bouncedRecipients": [{"emailAddress": "a@x.io"}, {"emailAddress": "b@x.io"}]}}))  # fmt: skip
    assert [(e.event_id, e.bounce, e.code) for e in two] == [
        ("sns-3:0", "soft", "MailboxFull"), ("sns-3:1", "soft", "MailboxFull")]  # fmt: skip
    assert ses.parse_message("sns-4", json.dumps({"eventType": "Send", "mail": mail})) == []
    with pytest.raises(FeedbackError, match=r"Message\.bounce\.bounceType: required"):
        ses.parse_message("sns-5", json.dumps({"eventType": "Bounce", "mail": mail, "bounce": {}}))
    with pytest.raises(FeedbackError, match=r"complaint\.complainedRecipients\[0\]\.emailAddress"):
        ses.parse_message("sns-6", json.dumps({"eventType": "Complaint", "mail": mail, "complaint": {
            "timestamp": "2026-01-01T10:00:00Z", "complainedRecipients": [{}]}}))  # fmt: skip
    with pytest.raises(FeedbackError, match="Type: expected one of"):
        ses.parse_envelope(json.dumps({"Type": "Other"}).encode())


def test_sendgrid_kinds_and_mailgun_failures():
    events = sendgrid.parse(json.dumps([
        {"event": e, "email": "a@x.io", "timestamp": 1, "sg_event_id": e, "smtp-id": MID,
         "type": "blocked" if e == "bounce" else None, "nudge_action": "7"}
        for e in ("processed", "deferred", "dropped", "bounce", "spamreport", "unsubscribe",
                  "group_unsubscribe", "group_resubscribe")
    ]).encode())  # fmt: skip
    assert [(e.kind, e.bounce) for e in events] == [
        ("bounced", "soft"), ("complained", None), ("unsubscribed", None), ("unsubscribed", None)]  # fmt: skip
    assert {e.action_id for e in events} == {7}
    permanent = one(mailgun.parse({"event-data": {"id": "m1", "event": "failed",
        "severity": "permanent", "recipient": "a@x.io", "timestamp": 1.5,
        "delivery-status": {"code": 550, "description": "", "message": "No such user"}}}))  # fmt: skip
    assert (permanent.bounce, permanent.code, permanent.reason) == ("hard", "550", "No such user")
    assert mailgun.parse({"event-data": {"id": "m2", "event": "accepted", "timestamp": 1}}) == []
    assert not mailgun.verify("k", {"signature": {"timestamp": 1, "token": "t"}})
    assert mailgun.verify("k", {"signature": {"timestamp": 1767225600, "token": "t",
                                              "signature": mailgun.signature_of("k", "1767225600", "t")}})  # fmt: skip

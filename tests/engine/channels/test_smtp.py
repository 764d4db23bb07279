"""SMTP to a relay that behaves like the real ones: aiosmtpd on loopback with ``require_starttls``
(or implicit TLS), ``auth_required`` and a certificate from a CA generated here; through
`SmtpSender` alone and through the dispatcher on SQLite and PostgreSQL."""

from __future__ import annotations

import smtplib
from email import message_from_bytes
from pathlib import Path

import pytest

import tests.engine.runtime.test_dispatcher as td
from engine.channels.base import DeliveryError
from engine.channels.email import EmailSettings, RenderedEmail
from engine.channels.smtp import SmtpSecurity, SmtpSender, is_loopback
from engine.channels.webhooks import WebhookSender
from engine.dsl.triggers import TriggerIndex, load_trigger_text
from engine.errors import UserError
from engine.runtime.dispatcher import Dispatcher
from engine.runtime.inbox import accept_events
from engine.runtime.processor import Processor
from engine.store.customers import upsert_profiles
from engine.store.outbox import list_actions
from nudge.local_server import free_port
from tests.engine.channels.smtp_relay import Pki, Relay, make_pki

USERS = {"apikey": "s3cret-key"}


@pytest.fixture(params=[True, False], ids=["pipelining", "lockstep"])
def pipelining(request: pytest.FixtureRequest) -> bool:
    """Whether the relay offers PIPELINING: the envelope in one round trip, or one per command."""
    return bool(request.param)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def sender(port: int, *, mode="starttls", user="apikey", password="s3cret-key", ca: Path | None,
           templates: Path = td.TEMPLATES) -> SmtpSender:  # fmt: skip
    security = SmtpSecurity(mode=mode, username=user, password=password if user else None,
                            ca_file=ca)  # fmt: skip
    return SmtpSender(EmailSettings(templates_dir=templates, smtp_host="127.0.0.1",
                                    smtp_port=port, smtp_timeout=5.0, smtp_security=security))  # fmt: skip


def email(n: int, to: str = "ada@example.com") -> RenderedEmail:
    return RenderedEmail(to, f"Message {n}", f"Body {n}\n.leading dot\n", f"<m{n}@nudge.test>", {})


def ids(relay: Relay) -> list[str]:
    return [message_from_bytes(m)["Message-ID"] for m in relay.messages]


class Marks:
    """A before_commit that records what the server had when it was called."""

    def __init__(self, relay: Relay) -> None:
        self.relay, self.seen = relay, []

    def __call__(self) -> None:
        self.seen.append(self.relay.count)


# -- the connection ------------------------------------------------------------------------------


def test_starttls_auth_many_messages_on_one_connection_until_close(pki, pipelining):
    with Relay(pki, users=USERS, pipelining=pipelining) as relay:
        smtp = sender(relay.port, ca=pki.ca_file)
        marks = Marks(relay)
        results = [smtp.send(email(n), marks) for n in range(25)]
        assert relay.connections == 1 and smtp.connections == 1
        assert relay.auth_attempts == 1, "one AUTH per connection, not per message"
        assert marks.seen == list(range(25)), "marked sending before the server had each message"
        assert results[3] == "smtp 250 <m3@nudge.test>"
        assert ids(relay) == [f"<m{n}@nudge.test>" for n in range(25)]
        assert b"\r\n.leading dot\r\n" in relay.messages[0], "dot-stuffing undone by the server"
        smtp.close()
        smtp.close()  # idempotent
        smtp.send(email(99), marks)  # the next batch opens a new connection
        smtp.close()
        assert relay.connections == 2 and relay.count == 26


def test_implicit_tls(pki, pipelining):
    with Relay(pki, mode="tls", users=USERS, pipelining=pipelining) as relay:
        smtp = sender(relay.port, mode="tls", ca=pki.ca_file)
        for n in range(5):
            smtp.send(email(n), lambda: None)
        smtp.close()
        assert relay.connections == 1 and relay.count == 5


@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_certificate_from_an_unknown_ca_is_refused_and_nothing_is_sent(pki, mode):
    with Relay(pki, mode=mode, users=USERS) as relay:
        smtp = sender(relay.port, mode=mode, ca=None)  # the system store only
        with pytest.raises(DeliveryError) as caught:
            smtp.send(email(1), pytest.fail)
        assert caught.value.retryable, "the configuration can be fixed: try again later"
        assert "TLS certificate not trusted" in caught.value.reason
        assert "NUDGE_SMTP_CA_FILE" in caught.value.reason
        assert relay.count == 0 and relay.auth_attempts == 0, "credentials never left"


def test_certificate_for_another_host_is_refused(pki, tmp_path):
    other = make_pki(tmp_path / "other", hosts=("mail.other.test",))
    with Relay(other, users=USERS) as relay:
        smtp = sender(relay.port, ca=other.ca_file)  # trusted CA, wrong name
        with pytest.raises(DeliveryError, match=r"not trusted.*(?i:hostname|mismatch|IP address)"):
            smtp.send(email(1), pytest.fail)
        assert relay.count == 0 and relay.auth_attempts == 0


def test_a_server_without_starttls_is_never_sent_plaintext(pki):
    with Relay(None, mode="none") as relay:
        smtp = sender(relay.port, ca=pki.ca_file)
        with pytest.raises(DeliveryError, match="does not offer STARTTLS: refusing") as caught:
            smtp.send(email(1), pytest.fail)
        assert caught.value.retryable and relay.count == 0


def test_wrong_credentials_are_a_retryable_failure_with_the_servers_answer(pki):
    with Relay(pki, users=USERS) as relay:
        smtp = sender(relay.port, password="wrong", ca=pki.ca_file)
        with pytest.raises(DeliveryError) as caught:
            smtp.send(email(1), pytest.fail)
        assert caught.value.retryable
        assert "refused the credentials of 'apikey': 535" in caught.value.reason
        assert "wrong" not in caught.value.reason, "the password is never in a reason"
        assert "s3cret" not in repr(smtp.security) and "wrong" not in repr(smtp.security)
        assert relay.count == 0


def test_plaintext_credentials_only_to_loopback():
    remote = SmtpSecurity(mode="none", username="u", password="p")
    assert "in plaintext" in (remote.problem("smtp.sendgrid.net") or "")
    assert remote.problem("127.0.0.1") is None and remote.problem("localhost") is None
    assert remote.problem("::1") is None
    assert SmtpSecurity(username="u", password="p").effective_mode == "starttls"
    assert SmtpSecurity().effective_mode == "none"
    assert "without NUDGE_SMTP_PASSWORD" in (SmtpSecurity(username="u").problem("h") or "")
    assert "without NUDGE_SMTP_USERNAME" in (SmtpSecurity(password="p").problem("h") or "")
    assert is_loopback("127.8.0.1") and not is_loopback("10.0.0.1") and not is_loopback("mail")
    settings = EmailSettings(templates_dir=td.TEMPLATES, smtp_host="smtp.example.com",
                             smtp_security=remote)  # fmt: skip
    with pytest.raises(UserError, match="NUDGE_SMTP_SECURITY=none would send"):
        SmtpSender(settings)


def test_plaintext_auth_to_a_loopback_relay_works():
    with Relay(None, mode="none", users=USERS) as relay:
        smtp = sender(relay.port, mode="none", ca=None)
        smtp.send(email(1), lambda: None)
        smtp.close()
        assert relay.count == 1 and relay.auth_attempts == 1


def test_unreadable_ca_file_is_a_user_error(tmp_path):
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(UserError, match=r"NUDGE_SMTP_CA_FILE: .*ca.pem: expected"):
        sender(25, ca=bad)
    with pytest.raises(UserError, match=r"NUDGE_SMTP_CA_FILE: .*missing.pem"):
        sender(25, ca=tmp_path / "missing.pem")


# -- refusals and lost connections ----------------------------------------------------------------


def test_refused_recipients_5xx_final_4xx_retryable_and_the_connection_carries_on(pki, pipelining):
    with Relay(pki, users=USERS, pipelining=pipelining) as relay:
        relay.faults.refuse_rcpt = {"gone@example.com": "550 5.1.1 no such user",
                                    "full@example.com": "452 4.2.2 mailbox full"}  # fmt: skip
        smtp = sender(relay.port, ca=pki.ca_file)
        smtp.send(email(1), lambda: None)
        with pytest.raises(DeliveryError) as gone:
            smtp.send(email(2, "gone@example.com"), pytest.fail)
        assert not gone.value.retryable
        assert gone.value.reason == "SMTP RCPT TO refused: 550 5.1.1 no such user"
        with pytest.raises(DeliveryError) as full:
            smtp.send(email(3, "full@example.com"), pytest.fail)
        assert full.value.retryable and "452 4.2.2 mailbox full" in full.value.reason
        smtp.send(email(4), lambda: None)  # RSET made the connection usable again
        smtp.close()
        assert ids(relay) == ["<m1@nudge.test>", "<m4@nudge.test>"]
        assert relay.connections == 1


def test_connection_dropped_between_messages_reconnects_and_nothing_goes_twice(pki, pipelining):
    with Relay(pki, users=USERS, pipelining=pipelining) as relay:
        relay.faults.close_after = {3, 5}  # idle timeout, restart: the server hangs up
        smtp = sender(relay.port, ca=pki.ca_file)
        marks = Marks(relay)
        for n in range(8):
            smtp.send(email(n), marks)
        smtp.close()
        assert ids(relay) == [f"<m{n}@nudge.test>" for n in range(8)], "each once, in order"
        assert marks.seen == list(range(8)), "each marked sending once"
        assert relay.connections == 3 and relay.auth_attempts == 3


def test_421_before_the_data_opens_a_new_connection(pki, pipelining):
    with Relay(pki, users=USERS, pipelining=pipelining) as relay:
        relay.faults.busy_mail = {3}
        smtp = sender(relay.port, ca=pki.ca_file)
        for n in range(5):
            smtp.send(email(n), lambda: None)
        smtp.close()
        assert relay.count == 5 and relay.connections == 2


def test_reconnects_only_once_then_reports_the_loss_as_retryable(pki, pipelining):
    with Relay(pki, users=USERS, pipelining=pipelining) as relay:
        relay.faults.busy_mail = {1, 2}
        smtp = sender(relay.port, ca=pki.ca_file)
        with pytest.raises(DeliveryError, match="connection lost before the message was sent"):
            smtp.send(email(1), pytest.fail)
        assert relay.count == 0 and relay.connections == 2
        smtp.send(email(2), lambda: None)
        assert relay.count == 1


def test_connection_lost_after_the_data_is_not_a_delivery_error_and_is_not_resent(pki, pipelining):
    with Relay(pki, users=USERS, pipelining=pipelining) as relay:
        relay.faults.lose_reply = {2}
        smtp = sender(relay.port, ca=pki.ca_file)
        marks = Marks(relay)
        smtp.send(email(1), marks)
        with pytest.raises(smtplib.SMTPServerDisconnected):  # the dispatcher: unconfirmed
            smtp.send(email(2), marks)
        smtp.send(email(3), marks)  # a new connection; message 2 was not sent again
        smtp.close()
        assert ids(relay) == ["<m1@nudge.test>", "<m2@nudge.test>", "<m3@nudge.test>"]
        assert marks.seen == [0, 1, 2] and relay.connections == 2


def test_an_address_that_would_end_the_command_fails_before_connecting():
    from engine.channels.email import TemplateError

    smtp = sender(
        free_port(), ca=None
    )  # nothing listens there: connecting would be a DeliveryError
    bad = RenderedEmail("eve@example.com\r\nRCPT TO:<x@evil.example>", "s", "b", "<m@n>", {})
    with pytest.raises(TemplateError, match="line break"):
        smtp.send(bad, pytest.fail)
    assert smtp.connections == 0


def test_unreachable_relay_is_retryable():
    with pytest.raises(DeliveryError, match=r"unreachable .*Connection") as caught:
        sender(free_port(), ca=None).send(email(1), pytest.fail)
    assert caught.value.retryable


# -- a committed group: the next envelope with the final dot (PIPELINING) ------------------------


def send_group(smtp: SmtpSender, emails: list[RenderedEmail], marks) -> list[str | Exception]:
    """Send `emails` as the dispatcher sends a committed group: each told the next; the result
    or the exception of each."""
    outcomes: list[str | Exception] = []
    for i, message in enumerate(emails):
        then = emails[i + 1] if i + 1 < len(emails) else None
        try:
            outcomes.append(
                smtp.send_data(message, smtp.encode(message), marks, marked=True, then=then)
            )
        except (DeliveryError, smtplib.SMTPServerDisconnected, OSError) as exc:
            outcomes.append(exc)
    return outcomes


class Writes:
    """The client's writes on its connections (to see what went in one write)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[bytes] = []
        send = smtplib.SMTP.send

        def spy(smtp: smtplib.SMTP, data: bytes | str) -> None:
            self.seen.append(data if isinstance(data, bytes) else data.encode())
            send(smtp, data)

        monkeypatch.setattr(smtplib.SMTP, "send", spy)


def test_a_group_costs_one_write_an_email_with_the_next_envelope_after_the_dot(
    pki, pipelining, monkeypatch
):
    writes = Writes(monkeypatch)
    with Relay(pki, users=USERS, pipelining=pipelining) as relay:
        smtp = sender(relay.port, ca=pki.ca_file)
        marks = Marks(relay)
        outcomes = send_group(smtp, [email(n) for n in range(6)], marks)
        assert outcomes == [f"smtp 250 <m{n}@nudge.test>" for n in range(6)]
        assert marks.seen == list(range(6)), "each marked before the server had it"
        session = [n for n, w in enumerate(writes.seen) if w.startswith(b"AUTH ")]
        group = writes.seen[session[-1] + 1 :]  # after EHLO, STARTTLS, EHLO, AUTH
        riding = [w for w in group if b"\r\n.\r\nMAIL FROM:" in w]
        if pipelining:  # the envelope of the first, then one write for each email
            assert len(riding) == 5 and len(group) == 1 + 6
        else:  # lockstep: MAIL, RCPT, DATA each, then data and dot in one write
            assert riding == [] and len(group) == 6 * 4
        smtp.close()
        assert ids(relay) == [f"<m{n}@nudge.test>" for n in range(6)]
        assert relay.connections == 1


def test_a_pipelined_envelope_refused_fails_only_its_own_email(pki, pipelining):
    with Relay(pki, users=USERS, pipelining=pipelining) as relay:
        relay.faults.refuse_rcpt = {"gone@example.com": "550 5.1.1 no such user",
                                    "full@example.com": "452 4.2.2 mailbox full"}  # fmt: skip
        smtp = sender(relay.port, ca=pki.ca_file)
        marks = Marks(relay)
        group = [email(1), email(2, "gone@example.com"), email(3), email(4, "full@example.com"),
                 email(5, "full@example.com"), email(6)]  # fmt: skip
        first, gone, third, full, full_again, last = send_group(smtp, group, marks)
        assert first == "smtp 250 <m1@nudge.test>" and third == "smtp 250 <m3@nudge.test>"
        assert isinstance(gone, DeliveryError) and not gone.retryable
        assert gone.reason == "SMTP RCPT TO refused: 550 5.1.1 no such user"
        for refused in (full, full_again):  # the same envelope twice: each refused on its own
            assert isinstance(refused, DeliveryError) and refused.retryable
            assert "452 4.2.2 mailbox full" in refused.reason
        assert last == "smtp 250 <m6@nudge.test>"
        assert marks.seen == [0, 1, 2], "the refused ones never reached their point of no return"
        smtp.close()
        assert ids(relay) == ["<m1@nudge.test>", "<m3@nudge.test>", "<m6@nudge.test>"]
        assert relay.connections == 1, "RSET, and the connection carries on"


def test_lost_after_a_pipelined_dot_is_in_doubt_and_never_sent_twice(pki, pipelining):
    with Relay(pki, users=USERS, pipelining=pipelining) as relay:
        relay.faults.lose_reply = {3}  # the server has message 3, the client never hears so
        smtp = sender(relay.port, ca=pki.ca_file)
        marks = Marks(relay)
        outcomes = send_group(smtp, [email(n) for n in range(1, 7)], marks)
        assert isinstance(outcomes[2], smtplib.SMTPServerDisconnected), "in doubt, not refused"
        assert [o for i, o in enumerate(outcomes) if i != 2] == [
            f"smtp 250 <m{n}@nudge.test>" for n in (1, 2, 4, 5, 6)
        ]
        smtp.close()
        assert ids(relay) == [f"<m{n}@nudge.test>" for n in range(1, 7)], "each once"
        assert marks.seen == [0, 1, 2, 3, 4, 5] and relay.connections == 2


def test_a_relay_hanging_up_or_busy_after_a_pipelined_dot_costs_a_reconnection(pki, pipelining):
    with Relay(pki, users=USERS, pipelining=pipelining) as relay:
        relay.faults.close_after = {2}  # hangs up after message 2: the next envelope unanswered
        relay.faults.busy_mail = {5}  # 421 to a MAIL (the 4th after the reconnection)
        smtp = sender(relay.port, ca=pki.ca_file)
        outcomes = send_group(smtp, [email(n) for n in range(1, 8)], Marks(relay))
        assert outcomes == [f"smtp 250 <m{n}@nudge.test>" for n in range(1, 8)]
        smtp.close()
        assert ids(relay) == [f"<m{n}@nudge.test>" for n in range(1, 8)]
        assert relay.connections == 3


def test_an_envelope_announced_for_an_email_not_sent_is_abandoned_without_a_dot(pki):
    with Relay(pki, users=USERS) as relay:
        smtp = sender(relay.port, ca=pki.ca_file)
        marks = Marks(relay)
        smtp.send_data(email(1), smtp.encode(email(1)), marks, marked=True, then=email(2))
        # The caller sends another email instead: the connection waiting for message 2's data
        # is closed without a dot (which aborts that transaction), the other goes on a new one.
        other = email(3, "grace@example.com")
        assert smtp.send_data(other, smtp.encode(other), marks, marked=True, then=email(4))
        smtp.close()  # waiting for message 4's data: a QUIT would be message text; dropped
        assert ids(relay) == ["<m1@nudge.test>", "<m3@nudge.test>"]
        assert relay.mails == 4 and relay.connections == 2


# -- through the dispatcher -------------------------------------------------------------------------

TRIGGERS = """
- id: payment_failure
  category: transactional
  quiet_hours: ignore
  when: {event: payment_failed}
  actions:
    - send_email: {template: payment_failed}
"""


def outbox_with(store, customers: int) -> TriggerIndex:
    index = TriggerIndex(load_trigger_text(TRIGGERS).triggers)
    profiles = {f"c{i}": {"customer_id": f"c{i}", "email": f"c{i}@example.com",
                          "first_name": f"C{i}"} for i in range(customers)}  # fmt: skip
    store.write(upsert_profiles, profiles, 0.0)
    events = [td.ev(f"e{i}", f"c{i}", "payment_failed", 0, amount=9.5) for i in range(customers)]
    accept_events(store, events, source="test")
    Processor(store, index).run_until_empty()
    return index


def dispatcher(store, index, port: int, security: SmtpSecurity, **kwargs) -> Dispatcher:
    email_settings = EmailSettings(templates_dir=td.TEMPLATES, smtp_host="127.0.0.1",
                                   smtp_port=port, smtp_timeout=5.0, smtp_security=security)  # fmt: skip
    return Dispatcher(store, index, email=email_settings,
                      webhooks=WebhookSender(td.SECRET), **kwargs)  # fmt: skip


def test_dispatcher_sends_a_batch_on_one_authenticated_tls_connection(
    engine_store, pki, pipelining
):
    index = outbox_with(engine_store, 30)
    security = SmtpSecurity(username="apikey", password="s3cret-key", ca_file=pki.ca_file)
    with Relay(pki, users=USERS, pipelining=pipelining) as relay:
        relay.faults.close_after = {12}  # the relay hangs up once in the middle
        relay.faults.lose_reply = {20}  # and once after a message's data
        d = dispatcher(engine_store, index, relay.port, security, batch_size=100)
        assert d.run_due(td.at(1)).outcomes == {"sent": 29, "unconfirmed": 1}
        assert relay.connections == 3, "one per batch, plus the two reconnections"
        assert len(set(ids(relay))) == relay.count == 30, "none twice"
        assert d.run_due(td.at(60)).handled == 0, "the unconfirmed one is never resent"
    actions = engine_store.read(list_actions)
    [lost] = [a for a in actions if a.status == "unconfirmed"]
    assert "connection lost after the end of data" in lost.result
    assert all(a.result.startswith("smtp 250 <") for a in actions if a.status == "sent")


def test_dispatcher_a_recipient_refused_in_a_pipelined_group_fails_alone(
    engine_store, pki, pipelining
):
    index = outbox_with(engine_store, 12)
    security = SmtpSecurity(username="apikey", password="s3cret-key", ca_file=pki.ca_file)
    with Relay(pki, users=USERS, pipelining=pipelining) as relay:
        relay.faults.refuse_rcpt = {"c1@example.com": "550 5.1.1 no such user",
                                    "c7@example.com": "550 5.1.1 no such user"}  # fmt: skip
        d = dispatcher(engine_store, index, relay.port, security, batch_size=100)
        assert d.run_due(td.at(1)).outcomes == {"sent": 10, "failed": 2}
        assert relay.connections == 1 and relay.count == len(set(ids(relay))) == 10
    by_customer = {a.customer_id: a for a in engine_store.read(list_actions)}
    for refused in ("c1", "c7"):
        assert by_customer[refused].status == "failed"
        assert by_customer[refused].result.startswith("SMTP RCPT TO refused: 550 5.1.1 no such")
    assert sorted(a.customer_id for a in by_customer.values() if a.status == "sent") == sorted(
        f"c{i}" for i in range(12) if i not in (1, 7)
    )


def test_dispatcher_prepares_the_next_group_while_replies_travel_each_email_once(
    engine_store, pki, pipelining
):
    index = outbox_with(engine_store, 17)
    security = SmtpSecurity(username="apikey", password="s3cret-key", ca_file=pki.ca_file)
    with Relay(pki, users=USERS, pipelining=pipelining) as relay:
        relay.faults.refuse_rcpt = {"c6@example.com": "550 5.1.1 no such user"}
        relay.faults.lose_reply = {9}  # the 9th message accepted: its reply never comes
        d = dispatcher(engine_store, index, relay.port, security, batch_size=100, group_size=5)
        channel = d.channels["send_email"]
        started: list[int] = []  # send_data calls begun when each email was prepared
        send_data, prepare = channel.mailer.send_data, channel.prepare

        def counting_send(*args, **kwargs):
            started.append(0)
            return send_data(*args, **kwargs)

        prepared: list[int] = []

        def recording_prepare(delivery):
            prepared.append(len(started))
            return prepare(delivery)

        channel.mailer.send_data, channel.prepare = counting_send, recording_prepare
        assert d.run_due(td.at(1)).outcomes == {"sent": 15, "failed": 1, "unconfirmed": 1}
        assert len(set(ids(relay))) == relay.count == 16, "none twice (the lost one arrived)"
        assert relay.connections == 2
        assert d.run_due(td.at(60)).handled == 0, "the unconfirmed one is never resent"
    # The first group is prepared up front, each later one during the sends of the one before:
    # one email after each final dot (c6, refused before its dot, leaves its place to the end).
    assert prepared == [0] * 5 + [1, 2, 3, 4, 5] + [6, 8, 9, 10, 10] + [11, 12]
    statuses = {a.customer_id: a.status for a in engine_store.read(list_actions)}
    assert statuses["c6"] == "failed" and list(statuses.values()).count("unconfirmed") == 1


def test_wrong_credentials_retried_then_failed_with_the_answer_nothing_lost(engine_store, pki):
    index = outbox_with(engine_store, 2)
    wrong = SmtpSecurity(username="apikey", password="wrong", ca_file=pki.ca_file)
    with Relay(pki, users=USERS) as relay:
        d = dispatcher(engine_store, index, relay.port, wrong, max_attempts=3, retry_base=60)
        assert d.run_due(td.at(1)).outcomes == {"retried": 2}
        for a in engine_store.read(list_actions):
            assert a.status == "pending" and a.attempts == 1 and "535" in a.result
        assert d.run_due(td.at(10)).outcomes == {"retried": 2}
        assert d.run_due(td.at(60)).outcomes == {"failed": 2}
        for a in engine_store.read(list_actions):
            assert a.status == "failed" and "535" in a.result and "(after 3 attempt(s))" in a.result
            assert "wrong" not in a.result
        assert relay.count == 0

    # Fixed in time, the same actions go out: the retry kept them whole.
    index = outbox_with(engine_store, 3)  # c2 is new; c0 and c1 are already failed
    with Relay(pki, users=USERS) as relay:
        d = dispatcher(engine_store, index, relay.port, wrong, max_attempts=3, retry_base=60)
        assert d.run_due(td.at(61)).outcomes == {"retried": 1}
        fixed = SmtpSecurity(username="apikey", password="s3cret-key", ca_file=pki.ca_file)
        d = dispatcher(engine_store, index, relay.port, fixed, max_attempts=3, retry_base=60)
        assert d.run_due(td.at(24 * 60)).outcomes == {"sent": 1}
        [message] = relay.messages
        assert message_from_bytes(message)["To"] == "c2@example.com"


def test_untrusted_relay_through_the_dispatcher_is_retried_never_sent(engine_store, pki):
    index = outbox_with(engine_store, 1)
    no_ca = SmtpSecurity(username="apikey", password="s3cret-key")
    with Relay(pki, users=USERS) as relay:
        d = dispatcher(engine_store, index, relay.port, no_ca, retry_base=60)
        assert d.run_due(td.at(1)).outcomes == {"retried": 1}
        [action] = engine_store.read(list_actions)
        assert "TLS certificate not trusted" in action.result and relay.count == 0


def test_settings_give_the_sender_its_security_and_refuse_plaintext_credentials(monkeypatch):
    import typer

    from nudge.engine_cli import smtp_security
    from nudge.settings import Settings

    monkeypatch.setenv("NUDGE_SMTP_HOST", "smtp.sendgrid.net")
    monkeypatch.setenv("NUDGE_SMTP_USERNAME", "apikey")
    monkeypatch.setenv("NUDGE_SMTP_PASSWORD", "SG.s3cret")
    settings = Settings()
    assert "s3cret" not in repr(settings)
    security = smtp_security(settings)
    assert security.effective_mode == "starttls" and security.password == "SG.s3cret"
    assert "s3cret" not in repr(security)
    monkeypatch.setenv("NUDGE_SMTP_SECURITY", " TLS ")
    assert smtp_security(Settings()).effective_mode == "tls"
    monkeypatch.setenv("NUDGE_SMTP_SECURITY", "none")
    with pytest.raises(typer.Exit) as caught:
        smtp_security(Settings())
    assert caught.value.exit_code == 2

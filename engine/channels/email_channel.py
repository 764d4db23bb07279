"""The email channel: render the action's template for the customer, hand it to the transport.

Rendering (`engine.channels.email`) and transport (`engine.channels.smtp`) stay apart so that
previews and test sends render exactly what the dispatcher would send, without sending.

`prepare` renders and builds the wire bytes without sending (a `PreparedEmail`); `send` is
`prepare(...).send()`. The dispatcher prepares a group of emails, marks them *sending* in one
commit, then sends each with `send_committed`, telling it the next one, whose envelope then rides
with this one's final dot (group commit, engine.runtime.dispatcher; PIPELINING, engine.channels.smtp).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from engine.channels.base import Delivery
from engine.channels.email import EmailSettings, RenderedEmail, render_email
from engine.channels.smtp import Mailer, SmtpSender, mailer_for

__all__ = ["EmailChannel", "PreparedEmail"]


@dataclass(frozen=True)
class PreparedEmail:
    """A rendered email with its wire bytes (SMTP), ready to go: `send` transfers it, calls
    `before_commit(reference)` at the final dot, and returns the result to store."""

    mailer: Mailer
    email: RenderedEmail
    data: bytes | None  # the SMTP DATA (SmtpSender.encode); None: the mailer builds its own
    before_commit: Callable[[str | None], None]

    @property
    def reference(self) -> str:
        """What the *sending* mark stores: the Message-ID."""
        return self.email.message_id

    def send(self) -> str:
        """Deliver the email (DeliveryError and the transport's errors as `Mailer.send`)."""
        commit = partial(self.before_commit, self.email.message_id)
        if self.data is not None and isinstance(self.mailer, SmtpSender):
            return self.mailer.send_data(self.email, self.data, commit)
        return self.mailer.send(self.email, commit)

    def send_committed(
        self, following: object | None = None, meanwhile: Callable[[], object] | None = None
    ) -> str:
        """`send` when the *sending* mark is already durable (group commit): over SMTP the data
        and the final dot are one write, and with `following` (the next delivery the caller
        sends, an email on the same connection) its envelope goes with them (PIPELINING);
        `meanwhile` runs while the reply is on its way."""
        if self.data is None or not isinstance(self.mailer, SmtpSender):
            return self.send()
        commit = partial(self.before_commit, self.email.message_id)
        then = following.email if isinstance(following, PreparedEmail) and (
            following.mailer is self.mailer and following.data is not None) else None  # fmt: skip
        return self.mailer.send_data(
            self.email, self.data, commit, marked=True, then=then, meanwhile=meanwhile
        )


class EmailChannel:
    """Email through SMTP or the file outbox, as `settings` select."""

    name = "email"
    consent_field: str | None = "consent_email"

    def __init__(self, settings: EmailSettings, mailer: Mailer | None = None) -> None:
        self.settings = settings
        self.mailer = mailer or mailer_for(settings)
        # SMTP cannot be asked whether a message caught mid-send arrived; a file outbox can
        # simply be written again (it is written once, under the idempotency key).
        self.settle_in_doubt = "unconfirmed" if isinstance(self.mailer, SmtpSender) else "pending"

    def send(self, delivery: Delivery) -> str:
        """Render and deliver one email (TemplateError when it cannot be built)."""
        return self.prepare(delivery).send()

    def prepare(self, delivery: Delivery) -> PreparedEmail:
        """Render the email and build its bytes, sending nothing (TemplateError when it cannot be
        built): the dispatcher prepares a group, commits it *sending*, then sends each."""
        email = render_email(
            self.settings, str(delivery.params["template"]),
            idempotency_key=delivery.idempotency_key, profile=delivery.profile,
            event=delivery.event, scores=delivery.scores, trigger_id=delivery.trigger_id,
            marketing=delivery.marketing, action_id=delivery.action_id,
            tracking=delivery.tracking,
        )  # fmt: skip
        data = self.mailer.encode(email) if isinstance(self.mailer, SmtpSender) else None
        return PreparedEmail(self.mailer, email, data, delivery.before_commit)

    def close(self) -> None:
        """Close the transport's connection, if it keeps one."""
        close = getattr(self.mailer, "close", None)
        if close is not None:
            close()

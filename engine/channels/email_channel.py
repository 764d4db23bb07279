"""The email channel: render the action's template for the customer, hand it to the transport.

Rendering (`engine.channels.email`) and transport (`engine.channels.smtp`) stay apart so that
previews and test sends render exactly what the dispatcher would send, without sending.
"""

from __future__ import annotations

from engine.channels.base import Delivery
from engine.channels.email import EmailSettings, render_email
from engine.channels.smtp import Mailer, SmtpSender, mailer_for

__all__ = ["EmailChannel"]


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
        email = render_email(
            self.settings, str(delivery.params["template"]),
            idempotency_key=delivery.idempotency_key, profile=delivery.profile,
            event=delivery.event, scores=delivery.scores, trigger_id=delivery.trigger_id,
            marketing=delivery.marketing, action_id=delivery.action_id,
            tracking=delivery.tracking,
        )  # fmt: skip
        return self.mailer.send(email, lambda: delivery.before_commit(email.message_id))

    def close(self) -> None:
        """Close the transport's connection, if it keeps one."""
        close = getattr(self.mailer, "close", None)
        if close is not None:
            close()

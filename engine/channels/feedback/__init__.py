"""What email providers report back, parsed and verified: pure functions, no I/O.

One module per provider (as Dittofeed does): `sendgrid`, `postmark`, `ses` (through SNS) and
`mailgun`, each with a ``verify…`` function that checks the request as the provider documents it
and a ``parse`` that turns the provider's JSON into `FeedbackEvent`s. A body that is not what
the provider sends raises `FeedbackError` naming the field; events nudge has no use for
(SendGrid's ``processed``, ``deferred``, SES's ``Send`` …) are skipped, not errors.
engine.runtime.email_webhooks is the router around them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "KINDS",
    "FeedbackError",
    "FeedbackEvent",
    "as_time",
    "field",
    "header_action",
    "json_body",
    "message_id_of",
    "text_of",
]

KINDS = ("delivered", "bounced", "complained", "opened", "clicked", "unsubscribed")


class FeedbackError(ValueError):
    """A provider's body is not what the provider sends (the message names the field)."""


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """One provider event about one recipient of one message.

    `kind` one of `KINDS`; `event_id` the provider's id of it (unique per provider);
    `message_id` the Message-ID header as sent (``<…@…>``) when the provider reports it,
    `action_id` the ``X-Nudge-Message`` header when the provider echoes it; `bounce` ``hard``
    or ``soft`` for bounces, with the provider's `code` and `reason`.
    """

    provider: str
    event_id: str
    kind: str
    occurred_at: datetime
    recipient: str | None
    message_id: str | None = None
    action_id: int | None = None
    bounce: str | None = None
    code: str | None = None
    reason: str | None = None
    url: str | None = None
    user_agent: str | None = None

    def __post_init__(self) -> None:
        # Whatever a provider sends ends as storable text: no NUL or lone surrogates (which
        # PostgreSQL cannot store), a recipient only when it looks like an address.
        for name in ("event_id", "recipient", "message_id", "code", "reason", "url", "user_agent"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, _storable(value))
        recipient = self.recipient
        if recipient is not None and ("@" not in recipient or len(recipient) > MAX_ADDRESS):
            object.__setattr__(self, "recipient", None)
        object.__setattr__(self, "event_id", self.event_id[:120])


MAX_ADDRESS = 320


def json_body(body: bytes, what: str) -> Any:
    """The JSON of a provider's body; FeedbackError "body: expected <what> (…)" when it is not."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise FeedbackError(f"body: expected {what} ({exc})") from None


def _storable(text: str) -> str:
    return text.replace("\x00", "\\0").encode("utf-8", "replace").decode("utf-8")


def field(
    data: Any, path: str, kind: type | tuple[type, ...], *, required: bool = True, where: str = ""
) -> Any:
    """``data[a][b]…`` for the dotted `path`, checked to be a `kind`; FeedbackError naming the
    path (after `where`, the place of `data` in the body) when it is missing (and `required`)
    or of another type."""
    try:
        return _field(data, path, kind, required)
    except FeedbackError as exc:
        raise FeedbackError(f"{where}{exc}") from None


def _field(data: Any, path: str, kind: type | tuple[type, ...], required: bool) -> Any:
    value = data
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value or value[part] is None:
            if required:
                raise FeedbackError(f"{path}: required")
            return None
        value = value[part]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise FeedbackError(f"{path}: expected {_name(kind)} (got a boolean)")
    if not isinstance(value, kind):
        raise FeedbackError(f"{path}: expected {_name(kind)} (got {type(value).__name__})")
    return value


def _name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "text", int: "a number", float: "a number", dict: "an object", list: "a list"}
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))


def as_time(value: Any, path: str) -> datetime:
    """An epoch number or an ISO 8601 text as an aware datetime (FeedbackError naming `path`)."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(float(value), UTC)
        if isinstance(value, str):
            text = value.strip().replace("Z", "+00:00")
            parsed = datetime.fromisoformat(text)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        pass
    raise FeedbackError(f"{path}: expected a time (epoch seconds or ISO 8601), got {value!r:.60}")


def message_id_of(value: Any) -> str | None:
    """A Message-ID as sent (``<local@domain>``) from a provider's text, bracketed or not."""
    if not isinstance(value, str):
        return None
    bare = value.strip().strip("<>").strip()
    if not bare or "@" not in bare or len(bare) > 250 or any(c.isspace() for c in bare):
        return None
    return f"<{bare}>"


def header_action(value: Any) -> int | None:
    """The action id of an ``X-Nudge-Message`` header value (None unless a plain number)."""
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) < 12:
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 < value < 2**31 else None  # action ids are 32-bit integers
    return None


def text_of(value: Any, limit: int = 500) -> str | None:
    """A provider's text field, bounded (None when absent or not text)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    return value[:limit] if isinstance(value, str) and value else None

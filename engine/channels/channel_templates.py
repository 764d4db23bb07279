"""Templates of the SMS and push channels, rendered in the email templates' sandbox.

A channel's template is `<name>.<channel>.j2` (``cart_reminder.sms.j2``, ``cart_reminder.push.j2``)
in the same folder as the email templates. They load through `engine.channels.email`'s sandboxed
environment and loader — the same immutable sandbox, bounded ``*``/``**``, `money`/`number` filters
and the same `TemplateError` for every failure — so a channel cannot weaken what templates may
do. They see what email templates see except ``unsubscribe_url`` (an SMS opts out by replying
STOP; a push subscription is removed in the browser): ``customer`` (``customer.name`` falls back
to "Valued Customer"), ``event``, ``properties``, ``scores`` and ``trigger``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from engine.channels.base import Delivery
from engine.channels.email import (
    FALLBACK_NAME,
    TemplateError,
    _environment,
    _template_error,
    template_name_problem,
)

__all__ = ["channel_template_name", "load_channel_template", "render_channel_template"]


def channel_template_name(name: str, channel: str) -> str:
    """The file name of template `name` of `channel` (``cart.sms.j2``)."""
    return f"{name}.{channel}.j2"


def load_channel_template(templates_dir: Path, name: str, channel: str) -> jinja2.Template:
    """The compiled template `<name>.<channel>.j2`; any failure is a TemplateError."""
    problem = template_name_problem(name)
    if problem:
        raise TemplateError(f"template name: {problem}")
    try:
        return _environment(templates_dir).get_template(channel_template_name(name, channel))
    except TemplateError:
        raise
    except Exception as exc:  # syntax errors, unknown filters, unreadable files, anything
        raise _template_error(f"{name}.{channel}", exc, None) from None


def render_channel_template(
    templates_dir: Path, name: str, channel: str, delivery: Delivery
) -> str:
    """Template `name` of `channel` rendered for the delivery's customer (TemplateError)."""
    compiled = load_channel_template(templates_dir, name, channel)
    try:
        return compiled.render(_context(delivery))
    except TemplateError:
        raise
    except Exception as exc:  # one bad template must never escape as another exception type
        raise _template_error(f"{name}.{channel}", exc, compiled.filename) from None


def _context(delivery: Delivery) -> dict[str, Any]:
    profile = delivery.profile
    return {
        "customer": {**profile, "name": profile.get("first_name") or FALLBACK_NAME},
        "event": delivery.event,
        "properties": delivery.event.get("properties") or {},
        "scores": delivery.scores,
        "trigger": delivery.trigger_id,
    }

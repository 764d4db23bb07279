"""`nudge templates …`: list the email templates, preview one for a real customer, send a test.

Composition only: rendering is `engine.channels.email.render_email` with the settings the
dispatcher uses (`nudge.engine_cli.build_email_settings`), the transport is the one the dispatcher
would use (`engine.channels.smtp.mailer_for`: the SMTP relay when NUDGE_SMTP_HOST is set, else the
file outbox). A preview renders with what the dispatcher would see: the profile from the engine
database, the scores of the models the template's triggers read (from NUDGE_SCORING_URL, when
set), and an event from a JSON file validated against the events contract. Registered in
``nudge.cli`` as ``app.add_typer(templates_app, name="templates")``.
"""

from __future__ import annotations

import json
import re
import smtplib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.markup import escape

from nudge.console import console, fail
from nudge.errors import Commands

if TYPE_CHECKING:
    from engine.channels.email import EmailSettings, RenderedEmail
    from nudge.settings import Settings

__all__ = ["templates_app"]

templates_app = typer.Typer(
    cls=Commands,
    help="Email templates (NUDGE_TEMPLATES_DIR; default: the shipped ones): NAME.j2 is the text "
    "part (a 'subject:' line, '---', the body), NAME.html.j2 the HTML part (extending "
    "layouts/base.html.j2). List them, preview one for a customer, send a test.",
    no_args_is_help=True,
)

PREVIEW_EVENT_TYPE = "template_preview"
_SUBJECT_LINE = re.compile(r"^subject:(.*)$", re.IGNORECASE | re.MULTILINE)
_SUBJECT_BLOCK = re.compile(r"{%-?\s*block\s+subject\s*-?%}(.*?){%-?\s*endblock", re.DOTALL)


@templates_app.command("list")
def list_templates() -> None:
    """Every email template: its parts (text, html, sms, push) and its subject as written."""
    from engine.channels.email import template_names

    s = _settings()
    folder = s.template_folder
    names = template_names(folder) if folder.is_dir() else []
    if not names:
        _fail(f"{folder}: no email templates (NAME.j2 or NAME.html.j2)")
    width = max(len(n) for n in names)
    console.print(f"{'template':<{width}}  text  html  sms  push  subject", soft_wrap=True)
    for name in names:
        parts = [(folder / f"{name}{suffix}").is_file() for suffix in _PART_SUFFIXES]
        marks = "  ".join(f"{'yes' if present else '-':<{len(label)}}"
                          for present, label in zip(parts, _PART_LABELS, strict=True))  # fmt: skip
        console.print(f"{name:<{width}}  {marks}  {_written_subject(folder, name)}",
                      soft_wrap=True, markup=False, highlight=False)  # fmt: skip


_PART_SUFFIXES = (".j2", ".html.j2", ".sms.j2", ".push.j2")
_PART_LABELS = ("text", "html", "sms", "push")


@templates_app.command("preview")
def preview(
    name: Annotated[str, typer.Argument(help="Template name, e.g. cart_reminder (no .j2).")],
    customer: Annotated[
        str, typer.Option("--customer", help="Customer id whose profile (engine database) to use.")
    ],
    event: Annotated[
        Path | None,
        typer.Option(
            "--event",
            help="JSON file with the triggering event (event_type, properties, …); event_id, "
            "customer_id and timestamp may be left out. Default: an event with no properties.",
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="Folder to write NAME.eml and NAME.html into.")
    ] = Path("."),
    transactional: Annotated[
        bool,
        typer.Option(
            "--transactional",
            help="Render as transactional mail (transactional sender, no unsubscribe link).",
        ),
    ] = False,
) -> None:
    """Render NAME for a customer exactly as the dispatcher would, and write NAME.eml (the raw
    message, open it in a mail client) and NAME.html (the HTML part, open it in a browser)."""
    s = _settings()
    email_settings = _email_settings(s)
    _check_template(email_settings, name)
    payload = _event(event, customer)
    profile, scores, note = _context(s, name, customer)
    email = _render(email_settings, name, profile, payload, scores, marketing=not transactional)
    try:
        out.mkdir(parents=True, exist_ok=True)
        eml, html = out / f"{name.replace('/', '_')}.eml", out / f"{name.replace('/', '_')}.html"
        eml.write_bytes(email.to_bytes(linesep="\n"))
        html.write_text(email.html if email.html is not None else _text_as_html(email.body))
    except OSError as exc:
        _fail(f"--out: cannot write into {out}: {exc.strerror or exc}")
    if note:
        console.print(f"[yellow]![/] {note}", soft_wrap=True)
    console.print(f"subject: {email.subject}", soft_wrap=True, markup=False, highlight=False)
    console.print(f"wrote {eml} and {html}" + ("" if email.html else " (text only: no HTML part)"),
                  soft_wrap=True, markup=False, highlight=False)  # fmt: skip


@templates_app.command("send-test")
def send_test(
    name: Annotated[str, typer.Argument(help="Template name, e.g. cart_reminder (no .j2).")],
    to: Annotated[str, typer.Option("--to", help="Address to send the test to (name@domain).")],
    customer: Annotated[
        str | None,
        typer.Option(
            "--customer",
            help="Render with this customer's profile and scores (the email still goes to --to); "
            "default: a sample customer named Test.",
        ),
    ] = None,
    transactional: Annotated[
        bool, typer.Option("--transactional", help="Send as transactional mail.")
    ] = False,
) -> None:
    """Send one rendering of NAME to an address through the configured transport (the SMTP
    relay of NUDGE_SMTP_HOST, else the file outbox) and say where it went."""
    from engine.channels.email import address_problem

    s = _settings()
    if why := address_problem(to):
        _fail(f"--to: {to!r} {why}")
    email_settings = _email_settings(s)
    _check_template(email_settings, name)
    note = None
    if customer is None:
        profile: dict[str, Any] = {"customer_id": "test", "first_name": "Test"}
        scores: dict[str, Any] = {}
    else:
        profile, scores, note = _context(s, name, customer)
    profile = {**profile, "email": to}
    payload = _event(None, str(profile["customer_id"]))
    email = _render(email_settings, name, profile, payload, scores, marketing=not transactional)
    if note:
        console.print(f"[yellow]![/] {note}", soft_wrap=True)
    console.print(_deliver(email_settings, email), soft_wrap=True, markup=False, highlight=False)


# -- helpers -------------------------------------------------------------------------------------


def _fail(message: str) -> NoReturn:
    """One line, exit 2; the message is text (a template's ``[`` is not console markup)."""
    fail(escape(message))


def _settings() -> Settings:
    from nudge.engine_cli import settings

    return settings()


def _email_settings(s: Settings) -> EmailSettings:
    from nudge.engine_cli import build_email_settings

    return build_email_settings(s)


def _check_template(settings: EmailSettings, name: str) -> None:
    from engine.channels.email import TemplateError, load_template

    try:
        load_template(settings.templates_dir, name)
    except TemplateError as exc:
        _fail(str(exc))


def _event(path: Path | None, customer: str) -> dict[str, Any]:
    """The event of a preview: the file's, completed and validated against the contract."""
    from pydantic import ValidationError

    from engine.events import describe_validation_error, validate_event

    data: Any = {"event_type": PREVIEW_EVENT_TYPE, "properties": {}}
    if path is not None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            _fail(f"--event: cannot read {path}: {exc.strerror or exc}")
        except ValueError as exc:
            _fail(f"--event: {path} is not JSON: {exc}")
        if not isinstance(data, dict):
            _fail(
                f"--event: {path} must hold one JSON object (an event), got {type(data).__name__}"
            )
    data = {"event_id": "preview", "customer_id": customer,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **data}  # fmt: skip
    try:
        validated = validate_event(data)
    except ValidationError as exc:
        _fail(f"--event: {path}: {describe_validation_error(exc)[0]}")
    except ValueError as exc:
        _fail(f"--event: {path}: {exc}")
    return validated.model_dump(mode="json", exclude_none=True)


def _context(
    s: Settings, name: str, customer: str
) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """(profile, scores, a note when the scores could not be had) of `customer`."""
    from engine.store.customers import load_profiles
    from nudge.engine_cli import open_store

    store = open_store(s)
    try:
        found = store.read(load_profiles, [customer])
    finally:
        store.dispose()
    if customer not in found:
        _fail(
            f"--customer: no customer {customer!r} in the engine database ({s.engine_url.split('://')[0]})"
        )
    profile = {"customer_id": customer, **found[customer]}
    scores, note = _scores(s, name, customer)
    return profile, scores, note


def _scores(s: Settings, name: str, customer: str) -> tuple[dict[str, Any], str | None]:
    """The scores the template's triggers read, as the dispatcher passes them to templates."""
    models = _models_of(s, name)
    if not s.scoring_url:
        return {}, None if not models else "NUDGE_SCORING_URL is not set: rendered without scores"
    if not models:
        return {}, None
    from engine.runtime.scoring import ScoreClient

    key = s.api_key.get_secret_value() if s.api_key else None
    client = ScoreClient(s.scoring_url, api_key=key, retries=0)
    try:
        answer = client.fetch([customer], models).get(customer, {})
    finally:
        client.close()
    if client.last_error:
        return (
            {},
            f"scoring service at {s.scoring_url}: {client.last_error}; rendered with empty scores",
        )
    scores = {m: None if v is None or not v.known
              else {"value": v.value, "model_version": v.model_version}
              for m, v in answer.items()}  # fmt: skip
    return scores, None


def _models_of(s: Settings, name: str) -> list[str]:
    """The models read by the triggers that send template `name` (what decisions record)."""
    from engine.dsl.triggers import load_trigger_dir

    folder = s.trigger_folder
    if not folder.is_dir():
        return []
    models: set[str] = set()
    for trigger in load_trigger_dir(folder).triggers:
        if any(ref.name == name for ref in trigger.templates):
            models |= set(trigger.score_models())
    return sorted(models)


def _render(
    settings: EmailSettings,
    name: str,
    profile: dict[str, Any],
    event: dict[str, Any],
    scores: dict[str, Any],
    *,
    marketing: bool,
) -> RenderedEmail:
    from engine.channels.email import TemplateError, render_email

    try:
        return render_email(
            settings, name, idempotency_key=f"preview:{name}:{profile['customer_id']}:{time.time()}",
            profile=profile, event=event, scores=scores, trigger_id=f"preview-{name.replace('/', '-')}",
            marketing=marketing,
        )  # fmt: skip
    except TemplateError as exc:
        _fail(str(exc))


def _deliver(settings: EmailSettings, email: RenderedEmail) -> str:
    """Send through the dispatcher's transport; where it went, or one line saying why not."""
    from engine.channels.base import DeliveryError
    from engine.channels.email import TemplateError
    from engine.channels.smtp import FileOutbox, mailer_for

    mailer = mailer_for(settings)
    where = (
        f"the file outbox {mailer.directory}"
        if isinstance(mailer, FileOutbox)
        else f"the SMTP relay {settings.smtp_host}:{settings.smtp_port}"
    )
    try:
        result = mailer.send(email, lambda: None)
    except TemplateError as exc:
        _fail(str(exc))
    except DeliveryError as exc:
        _fail(f"not sent through {where}: {exc.reason}")
    except (OSError, smtplib.SMTPException) as exc:
        _fail(f"not sent through {where}: {type(exc).__name__}: {exc}")
    finally:
        close = getattr(mailer, "close", None)
        if close is not None:
            close()
    return f"sent {email.message_id} to {email.to} through {where}: {result}"


def _written_subject(folder: Path, name: str) -> str:
    """The subject as the template writes it (the text part's line, else the HTML's block)."""
    for suffix, pattern in ((".j2", _SUBJECT_LINE), (".html.j2", _SUBJECT_BLOCK)):
        path = folder / f"{name}{suffix}"
        try:
            found = pattern.search(path.read_text(encoding="utf-8")) if path.is_file() else None
        except (OSError, UnicodeDecodeError):
            return "(unreadable)"
        if found:
            return " ".join(found.group(1).split())
    return "(none)"


def _text_as_html(text: str) -> str:
    from html import escape

    return f"<!DOCTYPE html><html><body><pre>{escape(text)}</pre></body></html>\n"

"""`nudge triggers …` and `nudge engine …`: composition of the engine from settings, and output.

One module (~700 lines) because it is one sub-app: its ten commands share the composition helpers
(settings, index, store, processor, dispatcher, clock parsing) and the output tables; each command
only parses, calls the engine and prints.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nudge.console import console, fail
from nudge.errors import Commands, UserError

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.channels.email import EmailSettings
    from engine.channels.ratelimit import SendRate
    from engine.channels.smtp import SmtpSecurity
    from engine.decisions.suppression import SuppressionPolicy
    from engine.dsl.triggers import TriggerIndex
    from engine.runtime.dispatcher import Dispatcher
    from engine.runtime.live_config import EngineConfig, LiveConfig, PolicyLoader
    from engine.runtime.metrics import EngineMetrics
    from engine.runtime.processor import Processor, ScoreSource
    from engine.store import ActionRow, DeadLetter, DecisionRow, EngineDB, TaskRow
    from engine.store.outbox import ChannelQueue
    from nudge.settings import Settings

triggers_app = typer.Typer(cls=Commands, help="Check trigger definitions.", no_args_is_help=True)
engine_app = typer.Typer(
    cls=Commands,
    help="Run the trigger engine: replay events, inspect decisions and dead letters.",
    no_args_is_help=True,
)


# -- composition ---------------------------------------------------------------------------------


def settings() -> Settings:
    from pydantic import ValidationError

    from nudge.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        problems = [
            f"NUDGE_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        ]
        fail("invalid settings:\n  " + "\n  ".join(problems))


def server_settings() -> Settings:
    """Settings for a long-running server: refuses the development secret outside dev."""
    s = settings()
    problem = s.secret_problem()
    if problem:
        fail(problem)
    return s


def load_index(folder: Path) -> TriggerIndex:
    """The triggers of a folder and the templates they send, or a clean exit listing every
    problem: a missing or broken template is found at start, not at the first send."""
    from engine.dsl.triggers import TriggerIndex, load_trigger_dir

    if not folder.is_dir():
        fail(f"{folder}: no such folder of triggers")
    result = load_trigger_dir(
        folder, templates_dir=settings().template_folder, models=model_names()
    )
    if result.issues:
        for issue in result.issues:
            console.print(f"[red]✗[/] {issue}", soft_wrap=True)
        fail(f"{len(result.issues)} problem(s) in the triggers of {folder}", code=1)
    return TriggerIndex(result.triggers)


def live_config(
    s: Settings, store: EngineDB, *, load_policy: PolicyLoader | None = None
) -> LiveConfig:
    """The running engine's reloadable configuration (engine.runtime.live_config): the triggers
    of NUDGE_TRIGGERS_DIR checked against NUDGE_TEMPLATES_DIR and the model definitions, the
    policy of `load_policy` (default: NUDGE_POLICY_FILE's, or the built-in one), and warnings for event types no input
    has had. An invalid set at start is a clean exit listing every problem (as `load_index`)."""
    from rich.markup import escape

    from engine.lake import EventLake
    from engine.runtime.event_vocabulary import event_type_warnings
    from engine.runtime.live_config import ConfigRefused, LiveConfig, load_engine_config

    lake = EventLake(s.lake_dir)
    if load_policy is None:  # NUDGE_POLICY_FILE, read again at each reload
        from engine.dsl.policy import policy_from_file

        def load_policy() -> SuppressionPolicy:
            return policy_from_file(s.policy_file)

    def load() -> EngineConfig:
        try:
            models = model_names()
        except UserError as exc:  # a broken model definition refuses the set, not the server
            raise ConfigRefused([str(exc)], s.trigger_folder) from None
        return load_engine_config(
            s.trigger_folder, s.template_folder, models=models, load_policy=load_policy,
            warnings=lambda triggers: event_type_warnings(triggers, store, lake),
        )  # fmt: skip

    def report(line: str) -> None:
        console.print(f"[yellow]{escape(line)}[/]", soft_wrap=True)

    try:
        return LiveConfig(load, report=report)
    except ConfigRefused as refused:
        for issue in refused.issues:
            console.print(f"[red]✗[/] {escape(issue)}", soft_wrap=True)
        fail(str(refused), code=1)


def reload_on_sighup(live: LiveConfig) -> Callable[[], None]:
    """``kill -HUP`` reloads `live` in a thread of its own (the handler must not wait for a
    batch); a refused set is reported by `live` and the running one stays. Returns what puts
    the previous handler back."""
    import signal
    import threading

    from engine.runtime.live_config import ConfigRefused

    if not hasattr(signal, "SIGHUP"):  # Windows
        return lambda: None

    def reload() -> None:
        try:
            config = live.reload()
        except ConfigRefused:
            return
        console.print(f"reloaded: {len(config.index)} trigger(s)", soft_wrap=True)

    def handler(signum: int, frame: object) -> None:
        threading.Thread(target=reload, name="reload", daemon=True).start()

    previous = signal.signal(signal.SIGHUP, handler)

    def restore() -> None:
        signal.signal(signal.SIGHUP, previous)

    return restore


def open_store(s: Settings) -> EngineDB:
    """The engine database of the settings; one that is not at this release's revision is a
    DatabaseOutOfDate (a UserError: one line, exit 2) that says to run ``nudge db upgrade``."""
    from engine.store import EngineDB

    return EngineDB.open(s.engine_url)


def load_policy(s: Settings) -> SuppressionPolicy:
    """The suppression policy of NUDGE_POLICY_FILE (unset: the defaults), or a clean exit
    listing every mistake in it with its line."""
    from engine.decisions.suppression import SuppressionPolicy
    from engine.dsl.policy import load_policy_file

    if s.policy_file is None:
        return SuppressionPolicy()
    loaded = load_policy_file(s.policy_file)
    if loaded.issues:
        for issue in loaded.issues:
            console.print(f"[red]✗[/] {issue}", soft_wrap=True)
        fail(f"{len(loaded.issues)} problem(s) in the policy file {s.policy_file}", code=1)
    return loaded.policy


def score_client(s: Settings) -> ScoreSource | None:
    """The client of the scoring service (NUDGE_SCORING_URL), or None when none is configured."""
    if not s.scoring_url:
        return None
    from engine.runtime.scoring import ScoreClient

    key = s.api_key.get_secret_value() if s.api_key else None
    return ScoreClient(s.scoring_url, api_key=key)


def build_processor(
    s: Settings, store: EngineDB, index: TriggerIndex, *, worker: tuple[int, int] = (0, 1)
) -> Processor:
    from engine.runtime.processor import Processor

    return Processor(
        store, index, policy=load_policy(s), scores=score_client(s),
        default_zone=s.default_timezone, worker=worker,
    )  # fmt: skip


def build_email_settings(s: Settings) -> EmailSettings:
    """What the email channel renders and sends with — the dispatcher's, and `nudge templates`'
    previews and test sends. Bad senders, a bad Message-ID domain or unusable DKIM settings are
    one line at start (exit 2), never a failure per message."""
    from engine.channels.dkim import load_dkim_signer
    from engine.channels.email import EmailSettings, domain_problem, sender_problem

    problem = s.secret_problem()
    if s.smtp_host and problem:  # real mail would carry unsubscribe links anyone could forge
        fail(f"{problem} (NUDGE_SMTP_HOST is set: mail goes to real people)")
    for name, value in [("NUDGE_EMAIL_SENDER", s.email_sender),
                        ("NUDGE_EMAIL_SENDER_TRANSACTIONAL", s.email_sender_transactional)]:  # fmt: skip
        if value is not None and (why := sender_problem(value)):
            fail(f"{name}: {value!r} {why}")
    if s.message_id_domain and (why := domain_problem(s.message_id_domain)):
        fail(f"NUDGE_MESSAGE_ID_DOMAIN: {why}, got {s.message_id_domain!r}")
    smtp = smtp_security(s)
    secret = s.signing_secret.get_secret_value()
    return EmailSettings(
        templates_dir=s.template_folder, sender=s.email_sender, unsubscribe_base_url=s.unsubscribe_url,
        unsubscribe_secret=secret, smtp_host=s.smtp_host, smtp_port=s.smtp_port, outbox_dir=s.outbox_dir,
        smtp_timeout=s.smtp_timeout, smtp_security=smtp,
        transactional_sender=s.email_sender_transactional, message_id_domain=s.message_id_domain,
        dkim=load_dkim_signer(s.dkim_domain, s.dkim_selector, s.dkim_key_file),
        public_url=s.public_url, tracking=s.tracking,
    )  # fmt: skip


def smtp_security(s: Settings) -> SmtpSecurity:
    """TLS mode, credentials and private CA of the SMTP relay (NUDGE_SMTP_*); credentials that
    would cross the network in plaintext, or half of a username/password pair, exit 2 at start."""
    from engine.channels.smtp import SmtpSecurity

    password = s.smtp_password.get_secret_value() if s.smtp_password is not None else None
    security = SmtpSecurity(s.smtp_security, s.smtp_username, password, s.smtp_ca_file)
    if s.smtp_host and (why := security.problem(s.smtp_host)):
        fail(why)
    return security


def build_dispatcher(
    s: Settings, store: EngineDB, index: TriggerIndex, *, worker_id: str = "dispatcher-0"
) -> Dispatcher:
    from engine.channels.webhooks import WebhookSender
    from engine.runtime.delivery_channels import provider_channels
    from engine.runtime.dispatcher import Dispatcher

    email = build_email_settings(s)
    secret = s.signing_secret.get_secret_value()
    allow = tuple(x.strip() for x in s.webhook_allow.split(",") if x.strip())
    webhooks = WebhookSender(secret, allow=allow)
    # send_sms / send_push: Twilio and web push when configured, else they fail saying what's missing
    channels = provider_channels(s, store, webhooks)
    return Dispatcher(
        store, index, email=email, webhooks=webhooks, channels=channels, worker_id=worker_id,
        send_rate=build_send_rate(s, store), erasure_salt=s.erasure_key(),
        policy=load_policy(s), default_zone=s.default_timezone, scores=score_client(s),
        group_size=s.email_group_commit,
    )  # fmt: skip


def build_send_rate(s: Settings, store: EngineDB) -> SendRate:
    """The channels' send rates (NUDGE_EMAIL_RATE, …) on the shared state NUDGE_RATE_LIMIT_BACKEND
    names: the engine database, or Redis (asked once here, so that a wrong URL stops at start)."""
    from engine.channels.ratelimit import RateError, SendRate, parse_rate

    try:
        rates = {channel: parse_rate(getattr(s, f"{channel}_rate"), name=f"NUDGE_{channel.upper()}_RATE")
                 for channel in ("email", "sms", "push", "webhook")}  # fmt: skip
    except RateError as exc:
        fail(str(exc))
    if not any(rates.values()):
        return SendRate.unlimited()
    if s.rate_limit_backend == "redis":
        from engine.channels.redis_rates import RedisRates, redis_client

        client = redis_client(s.redis_url)
        try:
            client.ping()
        except Exception as exc:  # any failure to reach it: say which Redis and why
            where = s.redis_url or "127.0.0.1:6379"
            fail(f"NUDGE_RATE_LIMIT_BACKEND=redis: cannot reach Redis at {where}: {exc}")
        return SendRate(rates, RedisRates(client))
    from engine.store.send_rates import DatabaseRates

    return SendRate(rates, DatabaseRates(store))


def send_limits(s: Settings) -> dict[str, float]:
    """Sends per minute each channel may make (NUDGE_EMAIL_RATE, …), for the metrics."""
    from engine.channels.ratelimit import parse_rate

    limits = {}
    for channel, text in (("email", s.email_rate), ("sms", s.sms_rate), ("push", s.push_rate),
                          ("webhook", s.webhook_rate)):  # fmt: skip
        rate = parse_rate(text)
        if rate is not None:
            limits[channel] = rate.count / rate.per * 60.0
    return limits


def watch_scores(metrics: EngineMetrics, processor: Processor | None) -> None:
    """Time the processor's scoring client (if it has one) in `metrics`."""
    from engine.runtime.scoring import ScoreClient

    if processor is not None and isinstance(processor.scores, ScoreClient):
        metrics.watch_scores(processor.scores)


def parse_clock(text: str) -> Callable[[], float]:
    """`wall`, `events` (replay time: the latest processed event) or an ISO timestamp."""
    from engine.runtime.loop import EventClock

    if text == "wall":
        return time.time
    if text == "events":
        return EventClock()
    try:
        fixed = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(
            f"--clock: expected wall, events or an ISO timestamp (got {text!r})"
        ) from None
    if fixed.tzinfo is None:
        fixed = fixed.replace(tzinfo=UTC)
    if fixed.timestamp() < 0:
        raise UserError(f"--clock: expected a time after 1970-01-01 (got {text!r})")
    return lambda: fixed.timestamp()


def parse_worker(text: str) -> tuple[int, int]:
    """`I/N` with 0 <= I < N: this worker owns the customer buckets I mod N."""
    first, slash, second = text.partition("/")
    if slash and first.strip().isdigit() and second.strip().isdigit():
        index, count = int(first), int(second)
        if index < count:
            return index, count
    raise UserError(f"--worker: expected I/N with 0 <= I < N (got {text!r})")


def acceptance_time(clock: Callable[[], float]) -> float | None:
    """The time incoming timestamps are checked against: a fixed clock's, else wall time.

    (Replay time starts at the first event, so it cannot say how far ahead an event is.)
    """
    from engine.runtime.loop import EventClock

    return None if isinstance(clock, EventClock) else clock()


def model_names() -> tuple[str, ...]:
    """The models of the definitions (NUDGE_MODELS_DIR): what score conditions may name."""
    from models.definitions import load_definitions

    return load_definitions().names


def served_model_names(s: Settings) -> tuple[str, frozenset[str]] | None:
    """What the scoring service at NUDGE_SCORING_URL serves (with how to name that list in an
    issue), or None when no URL is set or it cannot say — then one line says so and the models
    of the definitions are checked instead."""
    if not s.scoring_url:
        return None
    import httpx

    from engine.runtime.scoring import ScoringUnavailable, served_models

    key = s.api_key.get_secret_value() if s.api_key else None
    headers = {"X-API-Key": key} if key else {}
    url = s.scoring_url.rstrip("/")
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=5.0) as http:
            served = served_models(http)
    except ScoringUnavailable as exc:
        from rich.markup import escape

        console.print(
            f"[yellow]![/] scoring service at {escape(url)} unreachable ({escape(str(exc))}): "
            "models checked against the model definitions",
            soft_wrap=True,
        )
        return None
    return f"the models the scoring service at {url} serves are", served


def check_zone(name: str, option: str) -> None:
    """Exit with one line unless `name` is an IANA time zone."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        fail(f"{option}: {name!r} is not an IANA time zone name (e.g. UTC, Europe/Berlin)")


def parse_day(text: str, option: str) -> datetime:
    """An ISO date or time (UTC unless it says otherwise); a UserError naming `option` if not."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(
            f"{option}: expected an ISO date such as 2026-01-31 (got {text!r})"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# -- triggers ------------------------------------------------------------------------------------


@triggers_app.command("validate")
def validate(
    folder: Annotated[
        Path | None,
        typer.Argument(
            help="Folder of *.yaml triggers (default: NUDGE_TRIGGERS_DIR or the examples)."
        ),
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Warnings (unknown event types) fail too (exit 1).")
    ] = False,
    policy: Annotated[
        Path | None,
        typer.Option(help="Suppression policy file to check too (default: NUDGE_POLICY_FILE)."),
    ] = None,
) -> None:
    """Check every trigger file, the templates it sends (NUDGE_TEMPLATES_DIR or the bundled
    ones) and the policy file (NUDGE_POLICY_FILE) when there is one; print every problem with
    file, path and line; exit 1 on any. Event types that are not standard and that neither the
    lake nor the inbox has seen are warnings (exit 0 unless --strict)."""
    from rich.markup import escape

    from engine.dsl.policy import load_policy_file
    from engine.dsl.triggers import TriggerIndex, check_score_models, load_trigger_dir

    s = settings()
    folder = folder or s.trigger_folder
    if not folder.is_dir():
        fail(f"{folder}: no such folder of triggers")
    # Templates of every trigger that loads, disabled ones too: enabling one must not break mail.
    served = served_model_names(s)
    result = load_trigger_dir(
        folder, templates_dir=s.template_folder, models=model_names() if served is None else None
    )
    if served is not None:
        result.issues.extend(
            check_score_models(
                result.triggers, served[1], known_as=served[0], uplift_of_triggers=False
            )
        )
    policy = policy or s.policy_file
    if policy is not None:
        result.issues.extend(load_policy_file(policy).issues)
    if result.issues:
        for issue in result.issues:
            console.print(f"[red]✗[/] {escape(str(issue))}", soft_wrap=True)
        also = f" and the policy file {policy}" if policy is not None else ""
        fail(f"{len(result.issues)} problem(s) in the triggers of {folder}{also}", code=1)
    from engine.runtime.event_vocabulary import event_type_warnings_at

    warnings = event_type_warnings_at(result.triggers, s.engine_url, s.lake_dir)
    for warning in warnings:
        console.print(f"[yellow]warning:[/] {escape(str(warning))}", soft_wrap=True)
    if strict and warnings:
        fail(f"{len(warnings)} warning(s) in the triggers of {folder} (--strict)", code=1)
    index = TriggerIndex(result.triggers)
    console.print(f"[green]✓[/] {len(index)} trigger(s) in {folder} are valid")
    if policy is not None:
        console.print(f"[green]✓[/] the policy file {policy} is valid")
    for trigger in index.triggers:
        models = ", ".join(sorted(trigger.score_models())) or "-"
        console.print(
            f"  {trigger.id:<30} on {trigger.starts_on:<20} {trigger.spec.priority:<8} scores: {models:<18} v{trigger.version}"
        )


# -- engine --------------------------------------------------------------------------------------


@engine_app.command("replay")
def replay(
    file: Annotated[
        Path | None, typer.Argument(help="Events as .jsonl, .json or .parquet.")
    ] = None,
    from_lake: Annotated[
        tuple[str, str] | None,
        typer.Option(
            "--from-lake",
            help="START END (ISO dates, UTC): replay the lake's events in [START, END).",
        ),
    ] = None,
    triggers: Annotated[
        Path | None,
        typer.Option(help="Trigger folder (default: NUDGE_TRIGGERS_DIR or the examples)."),
    ] = None,
    tz: Annotated[
        str | None,
        typer.Option("--tz", help="Zone of naive timestamps in FILE (default: they are invalid)."),
    ] = None,
    dispatch: Annotated[
        bool, typer.Option("--dispatch/--no-dispatch", help="Also run actions as they fall due.")
    ] = True,
    clock: Annotated[
        str,
        typer.Option(help="Time for due actions: events (replay time), wall, or an ISO timestamp."),
    ] = "events",
) -> None:
    """Feed recorded events through the engine, record every decision, run actions as they fall due.

    Events are accepted (idempotently by event_id; invalid ones go to the dead letters with the
    reason), then processed in order. Replaying the same events again changes nothing.
    """
    from engine.lake import EventLake
    from engine.runtime.inbox import accept_stream
    from engine.runtime.replay import EventFileError, lake_events, read_event_file
    from engine.runtime.warmup import load_lake_profiles

    s = settings()
    if (file is None) == (from_lake is None):
        fail("give a FILE or --from-lake START END (one of them)")
    # Every option is checked before anything is accepted: a typo must not leave half a replay.
    engine_clock = parse_clock(clock)
    if tz is not None:
        check_zone(tz, "--tz")
    if from_lake is not None:
        start, end = (parse_day(value, "--from-lake") for value in from_lake)
        if start >= end:
            fail(f"--from-lake: START must be before END (got {from_lake[0]} {from_lake[1]})")
    if file is not None:
        if not file.is_file():
            fail(f"{file}: no such file")
        items, source = read_event_file(file), f"file:{file.name}"  # EventFileError: a UserError
    index = load_index(triggers or s.trigger_folder)
    store = open_store(s)
    dispatcher = build_dispatcher(s, store, index) if dispatch else None
    if from_lake is not None:
        load = load_lake_profiles(store, EventLake(s.lake_dir))
        if load.kept_newer or load.invalid:
            console.print(
                f"lake profiles: {load.loaded:,} loaded, {load.kept_newer:,} kept as the engine has "
                f"them (changed since), {load.invalid:,} invalid (dead-lettered)"
            )
        items, source = lake_events(s.lake_dir, start, end), "lake"
    started = time.perf_counter()
    try:
        with console.status("accepting events …"):
            counts = accept_stream(store, items, source=source, naive_timezone=tz,
                                   now=acceptance_time(engine_clock), max_future=s.max_future)  # fmt: skip
    except EventFileError as exc:  # a file that breaks off midway: say what was kept
        raise EventFileError(
            f"{exc} (events read before it were accepted; replaying again is idempotent)"
        ) from None
    console.print(
        f"accepted {counts['accepted']:,}, duplicate {counts['duplicate']:,}, invalid {counts['invalid']:,} (dead-lettered)"
    )
    from engine.runtime.loop import EngineLoop
    from engine.store import schema
    from engine.store.sql import count_rows

    loop = EngineLoop(build_processor(s, store, index), dispatcher, clock=engine_clock)
    with console.status("processing …") as status:
        stats = loop.run(
            until_idle=True, progress=lambda st: status.update(f"processing … {st.events:,} events")
        )
    seconds = time.perf_counter() - started
    rate = stats.events / seconds if seconds else 0.0
    dead = store.read(count_rows, schema.dead_letters)
    console.print(
        f"processed {stats.events:,} events in {seconds:.1f} s ({rate:,.0f} events/s); dead letters {dead:,}"
    )
    if dispatcher is not None:
        console.print(f"actions run: {dict(stats.actions) or 'none due yet'}")
    print_outcomes(store)


@engine_app.command("decisions")
def decisions(
    trigger: Annotated[str | None, typer.Option(help="Only this trigger.")] = None,
    customer: Annotated[str | None, typer.Option(help="Only this customer.")] = None,
    last: Annotated[int, typer.Option(min=1, help="How many recent decisions to list.")] = 10,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help='Print {"decisions": [{decision_id, trigger_id, trigger_version, customer_id, '
            "event_id, outcome, reason, decided_at (ISO 8601, UTC), variant, scores}]}, oldest "
            "first, instead of the tables.",
        ),
    ] = False,
) -> None:
    """Counts of decisions per trigger and outcome, and the latest decisions with their reasons."""
    from engine.store import execution_log

    store = open_store(settings())
    # Only the rows shown are read: filtered, ordered and limited in SQL, not sliced off the log.
    rows = store.read(
        execution_log.list_decisions, trigger_id=trigger, customer_id=customer, last=last
    )
    if as_json:
        print_json({"decisions": [decision_json(row) for row in rows]})
        return
    print_outcomes(store)
    for row in rows:
        console.print(
            f"  {row.event_id:<28} {row.customer_id:<12} {row.trigger_id:<28} {row.outcome:<10} {row.variant or '':<8} {row.reason or ''}"
        )


@engine_app.command("dead-letters")
def dead_letters(
    redrive: Annotated[
        bool,
        typer.Option("--redrive", help="Submit the dead letters again (fixed input is accepted)."),
    ] = False,
    limit: Annotated[int, typer.Option(help="How many to list, oldest first.")] = 50,
    last: Annotated[
        int | None, typer.Option(min=1, help="List the latest N instead (still oldest first).")
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help='Print {"dead_letters": [{dead_letter_id, event_id, source, reason, created_at, '
            "redriven_at (ISO 8601, UTC, or null), payload (the input as received, text)}]} "
            "instead of the list.",
        ),
    ] = False,
) -> None:
    """List events that could not be accepted or processed, with the reason; optionally re-drive them."""
    from engine.runtime.inbox import accept_events
    from engine.store import dead_letters as letters_of

    if redrive and (as_json or last is not None):
        fail("--redrive re-drives every dead letter: it takes no --json or --last")
    s = settings()
    store = open_store(s)
    letters = (
        store.read(letters_of.list_dead_letters, limit=100_000)
        if redrive
        else store.read(letters_of.list_dead_letters, limit=None if last else limit, last=last)
    )
    if as_json:
        print_json({"dead_letters": [dead_letter_json(letter) for letter in letters]})
        return
    if not letters:
        console.print("no dead letters")
        return
    if not redrive:
        for letter in letters:
            console.print(
                f"  #{letter.id:<6} {letter.source:<12} {letter.event_id or '-':<24} {letter.reason}",
                soft_wrap=True,
            )
        console.print(
            f"{len(letters)} shown; re-drive with [bold]nudge engine dead-letters --redrive[/]"
        )
        return
    payloads = [_payload(letter.payload) for letter in letters]
    results = accept_events(
        store, payloads, source="redrive", naive_timezone=None, max_future=s.max_future
    )
    now = time.time()
    store.write(letters_of.mark_redriven, [letter.id for letter in letters], now)
    ok = sum(r.status != "invalid" for r in results)
    console.print(
        f"re-drove {len(letters)}: {ok} accepted or already there, {len(letters) - ok} still invalid (dead-lettered again)"
    )
    if ok:
        stats = build_processor(s, store, load_index(s.trigger_folder)).run_until_empty()
        console.print(f"processed {stats.events:,} events")


@engine_app.command("explain")
def explain(
    customer: Annotated[str, typer.Option(help="The customer whose state and profile to use.")],
    event: Annotated[
        Path, typer.Option(exists=True, dir_okay=False, help="A JSON file with one event.")
    ],
    triggers: Annotated[
        Path | None,
        typer.Option(help="Trigger folder (default: NUDGE_TRIGGERS_DIR or the examples)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the traces as JSON.")] = False,
) -> None:
    """Dry-run one event for a customer: the decision trace of every trigger; nothing is stored."""
    from engine.runtime.explain import explain as explain_one
    from engine.runtime.explain import read_event_json

    s = settings()
    index = load_index(triggers or s.trigger_folder)
    store = open_store(s)
    raw = read_event_json(event)  # an invalid event is a UserError naming the file
    processor = build_processor(s, store, index)
    result = explain_one(store, index, customer, raw, scores=processor.scores,
                         policy=processor.policy, limits=processor.limits,
                         zone=s.default_timezone, source=str(event))  # fmt: skip
    if as_json:
        sys.stdout.write(json.dumps(result.traces, indent=2, default=str) + "\n")
        return
    if not result.traces:
        console.print(f"no trigger listens to {result.event.event_type!r}")
    for item in result.traces:
        colour = {"fired": "green", "not_matched": "dim"}.get(item["verdict"], "yellow")
        console.print(
            f"[bold]{item['trigger']}[/] v{item['version']}: [{colour}]{item['verdict']}[/] {item['reason'] or ''}"
        )
        _print_trace("when", item["when"], 1)
        _print_trace("if", item["if"], 1)
        for action in item["actions"]:
            due = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(action["due_at"]))
            console.print(f"    → {action['kind']} {action['params']} at {due}")


@engine_app.command("run")
def run(
    role: Annotated[str, typer.Option(help="all, processor or dispatcher.")] = "all",
    worker: Annotated[
        str, typer.Option(help="I/N: this worker owns customer buckets i mod N (processors).")
    ] = "0/1",
    clock: Annotated[
        str, typer.Option(help="wall, events (replay time) or an ISO timestamp.")
    ] = "wall",
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="Stop when nothing is pending or due.")
    ] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Serve Prometheus /metrics on this port (0: any free; default NUDGE_METRICS_PORT).",
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="Interface of the metrics server.")
    ] = "127.0.0.1",
) -> None:
    """Run the engine's workers without the API: process events and/or deliver due actions."""
    import threading

    from engine.runtime.loop import EngineLoop
    from engine.runtime.metrics import EngineMetrics, MetricsServer
    from nudge.heap import freeze_startup_heap

    if role not in {"all", "processor", "dispatcher"}:
        fail(f"--role: expected all, processor or dispatcher (got {role!r})")
    index_, count = parse_worker(worker)
    s = server_settings()
    store = open_store(s)
    live = live_config(s, store)  # reloaded by SIGHUP
    index = live.current.index
    processor = (
        build_processor(s, store, index, worker=(index_, count)) if role != "dispatcher" else None
    )
    dispatcher = (
        build_dispatcher(s, store, index, worker_id=f"{role}-{worker}")
        if role != "processor"
        else None
    )
    live.bind(processor, dispatcher)
    restore_sighup = reload_on_sighup(live)
    metrics = EngineMetrics(store, send_limits=send_limits(s))
    watch_scores(metrics, processor)
    loop = EngineLoop(processor, dispatcher, clock=parse_clock(clock), observer=metrics,
                      guard=live.guard)  # fmt: skip
    stop = threading.Event()
    server = None
    port = metrics_port if metrics_port is not None else s.metrics_port
    if port is not None:
        try:
            server = MetricsServer(metrics, port, metrics_host)
        except OSError as exc:
            fail(f"--metrics-port: cannot listen on {metrics_host}:{port} ({exc.strerror})")
        console.print(f"metrics on http://{metrics_host}:{server.port}/metrics")
    freeze_startup_heap()
    try:
        stats = loop.run(stop, until_idle=until_idle)
    except KeyboardInterrupt:
        stop.set()
        return
    finally:
        restore_sighup()
        if server is not None:
            server.close()
    console.print(
        f"processed {stats.events:,} events; decisions {dict(stats.decisions)}; actions {dict(stats.actions)}"
    )


@engine_app.command("tasks")
def tasks(
    status: Annotated[str, typer.Option(help="open, done or all.")] = "open",
    limit: Annotated[int, typer.Option(help="How many to list, oldest first.")] = 50,
    last: Annotated[
        int | None, typer.Option(min=1, help="List the latest N instead (still oldest first).")
    ] = None,
    trigger: Annotated[str | None, typer.Option(help="Only this trigger's tasks.")] = None,
    customer: Annotated[str | None, typer.Option(help="Only this customer's tasks.")] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help='Print {"tasks": [{task_id, trigger_id, customer_id, title, details (object), '
            "status, created_at (ISO 8601, UTC)}]} instead of the list.",
        ),
    ] = False,
) -> None:
    """Tasks that triggers created for people (create_task actions)."""
    from engine.store import outbox

    rows = open_store(settings()).read(
        outbox.list_tasks, None if status == "all" else status, None if last else limit,
        trigger_id=trigger, customer_id=customer, last=last,
    )  # fmt: skip
    if as_json:
        print_json({"tasks": [task_json(row) for row in rows]})
        return
    if not rows:
        console.print(f"no {status} tasks")
    for row in rows:
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(row.created_at))
        console.print(
            f"  #{row.id:<5} {created}  {row.customer_id:<14} {row.trigger_id:<24} {row.title}  {row.details}"
        )


@engine_app.command("actions")
def actions_summary(
    trigger: Annotated[str | None, typer.Option(help="Only this trigger's actions.")] = None,
    customer: Annotated[str | None, typer.Option(help="Only this customer's actions.")] = None,
    status: Annotated[
        str | None,
        typer.Option(help="With --json: only actions of this status (pending, sent, failed, …)."),
    ] = None,
    last: Annotated[
        int, typer.Option(min=1, help="With --json: how many of the latest actions to list.")
    ] = 50,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help='Print the latest actions, {"actions": [{action_id, idempotency_key, trigger_id, '
            "customer_id, event_id, kind, channel, params (object), variant, status, due_at, "
            "attempts, finished_at (times ISO 8601, UTC, or null), result}]}, oldest first, "
            "instead of the counts.",
        ),
    ] = False,
) -> None:
    """Planned actions by kind and status (pending, sent, cancelled, failed, unconfirmed), and
    each channel's queue: pending, due now and the oldest's delay, throttled, next attempt."""
    from engine.store import outbox

    store = open_store(settings())
    if as_json:
        rows = store.read(outbox.list_actions, trigger_id=trigger, customer_id=customer,
                          status=status, last=last)  # fmt: skip
        print_json({"actions": [action_json(row) for row in rows]})
        return
    counts = store.read(outbox.action_counts, trigger_id=trigger, customer_id=customer)
    if status is not None:
        counts = {key: n for key, n in counts.items() if key[1] == status}
    if not counts:
        console.print("no actions planned")
    for (kind, state), n in sorted(counts.items()):
        console.print(f"  {kind:<20} {state:<12} {n:>8,}")
    now = time.time()
    queues = store.read(outbox.pending_by_channel, now, trigger_id=trigger, customer_id=customer)
    for queue in queues:
        console.print(queue_line(queue, now), soft_wrap=True)


@engine_app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8100,
    poll: Annotated[float, typer.Option(help="Seconds between polls when idle.")] = 0.5,
) -> None:
    """Run the ingestion API, the processor, the scheduler and the dispatcher in one process."""
    import threading

    import uvicorn

    from engine.runtime.api import create_app
    from engine.runtime.loop import EngineLoop
    from engine.runtime.metrics import EngineMetrics
    from engine.runtime.supervisor import start_supervised

    s = server_settings()
    if not s.api_key:
        console.print(
            "[yellow]warning:[/] NUDGE_API_KEY is not set: the API will refuse writes (503)"
        )
    if not s.public_url and not s.unsubscribe_url:  # issue 14: links recipients can reach
        console.print(
            "[yellow]warning:[/] NUDGE_PUBLIC_URL is not set: unsubscribe links point at a "
            "placeholder and opens and clicks are not tracked"
        )
    store = open_store(s)
    live = live_config(s, store)  # reloaded by SIGHUP and POST /v1/admin/reload
    index = live.current.index
    metrics = EngineMetrics(store, send_limits=send_limits(s))
    metrics.watch_acceptance()  # events received over every route, by source
    processor = build_processor(s, store, index)
    watch_scores(metrics, processor)
    dispatcher = build_dispatcher(s, store, index)
    live.bind(processor, dispatcher)
    loop = EngineLoop(processor, dispatcher, poll=poll, observer=metrics, guard=live.guard)
    stop = threading.Event()
    restore_sighup = reload_on_sighup(live)

    def report(exc: Exception, pause: float) -> None:
        console.print(f"[red]engine error:[/] {type(exc).__name__}: {exc} (retry in {pause:.0f} s)")

    # The database or the host failing does not stop the API: the loop backs off and runs again.
    worker = start_supervised(loop, stop, on_error=report)
    if s.lake_sync_seconds > 0:  # the engine → lake sync (issue 15): exactly once, in batches
        from engine.runtime.lake_sync import start_lake_sync

        start_lake_sync(store, s.lake_dir, stop, every=s.lake_sync_seconds,
                        batch=s.lake_sync_batch, on_error=lambda e: report(e, s.lake_sync_seconds))  # fmt: skip
    key = s.api_key.get_secret_value() if s.api_key else None
    console.print(
        f"engine on http://{host}:{port} ({len(index)} triggers, store {s.engine_url.split('://')[0]})"
    )
    try:
        from nudge.data_cli import build_eraser

        app = create_app(store, key, max_future=s.max_future, metrics=metrics, reload=live.reload,
                         erasure=build_eraser(s, store, also=[("processor", processor.forget)]))  # fmt: skip
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        restore_sighup()
        stop.set()
        worker.join(timeout=10)


# -- output --------------------------------------------------------------------------------------


def print_outcomes(store: EngineDB) -> None:
    from rich.table import Table

    from engine.store import execution_log

    counts = store.read(execution_log.outcome_counts)
    if not counts:
        console.print("no decisions recorded")
        return
    outcomes = ["fired", "suppressed", "skipped", "held_out", "failed"]
    table = Table(title="Decisions per trigger", title_justify="left", show_edge=False)
    table.add_column("trigger", no_wrap=True)
    for outcome in outcomes:
        table.add_column(outcome, justify="right")
    for trigger in sorted({t for t, _ in counts}):
        table.add_row(trigger, *(f"{counts.get((trigger, o), 0):,}" for o in outcomes))
    console.print(table)


def print_json(payload: dict[str, Any]) -> None:
    """One JSON object on stdout (not through rich: no wrapping, no markup)."""
    sys.stdout.write(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def iso_time(epoch: float | None) -> str | None:
    """Epoch seconds as ISO 8601 in UTC (None stays None)."""
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


def decision_json(row: DecisionRow) -> dict[str, Any]:
    return {"decision_id": row.id, "trigger_id": row.trigger_id, "trigger_version": row.trigger_version,
            "customer_id": row.customer_id, "event_id": row.event_id, "outcome": row.outcome,
            "reason": row.reason, "decided_at": iso_time(row.decided_at), "variant": row.variant,
            "scores": _json_object(row.scores)}  # fmt: skip


def queue_line(queue: ChannelQueue, now: float) -> str:
    """One channel's queue for people: depth, what is due and how late, throttled, next try."""
    line = f"  queue {queue.channel:<9} {queue.pending:>7,} pending, {queue.due:,} due now"
    if queue.oldest_due_at is not None:
        line += f" (oldest due {_span(now - queue.oldest_due_at)} ago)"
    line += f", {queue.throttled:,} throttled"
    if queue.next_attempt_at is not None:
        line += f", next attempt in {_span(queue.next_attempt_at - now)}"
    return line


def _span(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def action_json(row: ActionRow) -> dict[str, Any]:
    return {"action_id": row.id, "idempotency_key": row.idempotency_key, "trigger_id": row.trigger_id,
            "customer_id": row.customer_id, "event_id": row.event_id, "kind": row.kind,
            "channel": row.channel, "params": _json_object(row.params), "variant": row.variant,
            "status": row.status, "due_at": iso_time(row.due_at), "attempts": row.attempts,
            "finished_at": iso_time(row.finished_at), "result": row.result}  # fmt: skip


def task_json(row: TaskRow) -> dict[str, Any]:
    return {"task_id": row.id, "trigger_id": row.trigger_id, "customer_id": row.customer_id,
            "title": row.title, "details": _json_object(row.details), "status": row.status,
            "created_at": iso_time(row.created_at)}  # fmt: skip


def dead_letter_json(row: DeadLetter) -> dict[str, Any]:
    return {"dead_letter_id": row.id, "event_id": row.event_id, "source": row.source,
            "reason": row.reason, "created_at": iso_time(row.created_at),
            "redriven_at": iso_time(row.redriven_at), "payload": row.payload}  # fmt: skip


def _json_object(text: str | None) -> Any:
    """A stored JSON column parsed (an empty object when there is none)."""
    return json.loads(text) if text else {}


def _print_trace(label: str, node: dict[str, Any], depth: int) -> None:
    pad = "  " * depth
    outcome = node.get("outcome", "")
    detail = {k: v for k, v in node.items() if k not in {"outcome", "children", "fields", "kind"}}
    console.print(
        f"{pad}{label}: {node.get('kind', '')} [{'green' if outcome == 'passed' else 'red'}]{outcome}[/] {detail or ''}",
        soft_wrap=True,
    )
    for leaf in node.get("fields", []):
        console.print(
            f"{pad}  {leaf['field']} {leaf.get('test', leaf.get('expected'))} saw {leaf['actual']!r}: {leaf['outcome']}",
            soft_wrap=True,
        )
    for child in node.get("children", []):
        _print_trace("·", child, depth + 1)


def _payload(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


# `nudge triggers report` (nudge/report_cli.py imports this module's helpers inside its commands).
from nudge.report_cli import triggers_report  # noqa: E402

triggers_app.command("report")(triggers_report)

"""Every ``NUDGE_*`` environment variable, defined once, with its default and its description.

**Rule: `nudge.settings` and `nudge.security` are leaves any package may import** (the engine's
CLI composition, features, pipelines, serving, bench). They import pydantic / pydantic-settings
(`nudge.security`: FastAPI) and the standard library only, never a module of the project, so they
cost next to nothing to import and cannot create a cycle. The rest of ``nudge/`` is the
composition root (the CLI) and no package imports it.

The variables, in three groups (each field ``x`` is read from ``NUDGE_X``):

- `SharedSettings`: what every part reads — the home of all local state (``NUDGE_HOME``), the API
  key, the MLflow store, the Feast store's selection (``NUDGE_FEAST_CONFIG``,
  ``NUDGE_FEAST_REGISTRY_URL``, ``NUDGE_REDIS_URL``).
- `Settings` (shared + the CLI, the engine and the pipelines): engine database, triggers, email,
  secrets, event acceptance, simulation, Dask, deployment schedules, snapshots.
- `ServingSettings` (shared + the scoring service): models, alias, polling, bands, limits, bind
  address. `serving.settings` re-exports it.

The rules that were written in several places are here once: the default home (`DEFAULT_HOME`)
and its absolute form (`home_dir`), and where MLflow's store is (`SharedSettings.tracking_uri`:
``MLFLOW_TRACKING_URI`` wins, else ``NUDGE_MLFLOW_TRACKING_URI``, else SQLite under the home).
Code that has no settings object at hand (Feast's repo file in a `feast` process, a flow called
without a path) calls `home_dir()` / `tracking_uri()`: the same rules, read from the environment.
Prefect flows take their paths and URIs as parameters; the CLI passes these settings' values.

Derived, never read: ``NUDGE_FEAST_DIR`` (``$NUDGE_HOME/feast``), which `features.paths` exports,
beside ``NUDGE_HOME`` and the production store's two URLs, for the Feast YAML to expand.
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "DEFAULT_BANDS",
    "DEFAULT_HOME",
    "DEV_SIGNING_SECRET",
    "ENV_PREFIX",
    "MAX_BATCH_LIMIT",
    "MIN_SECRET_BYTES",
    "Bands",
    "ServingSettings",
    "Settings",
    "SharedSettings",
    "home_dir",
    "tracking_uri",
]

ENV_PREFIX = "NUDGE_"
# The one default of NUDGE_HOME: relative, so it follows the working directory.
DEFAULT_HOME = Path(".nudge")

# Public, so that anyone could forge tokens made with it: only for NUDGE_ENV=dev.
DEV_SIGNING_SECRET = "change-me"
MIN_SECRET_BYTES = 32

# The hard ceiling of a scoring batch: the API contract says 1–1000 customers per request.
MAX_BATCH_LIMIT = 1_000

# (low/medium boundary, medium/high boundary) per model, in the model's own units: churn and
# engagement are probabilities, ltv is expected spend over its horizon.
Bands = tuple[float, float]
DEFAULT_BANDS: dict[str, Bands] = {
    "churn": (0.3, 0.6),
    "ltv": (50.0, 200.0),
    "engagement": (0.1, 0.3),
}
# A trigger's uplift model (``uplift_<trigger>``, engine.dsl.score_models' prefix: this leaf
# cannot import the engine, tests/nudge/test_settings.py keeps the two in step) scores a
# difference of probabilities: below 0 mail does harm or nothing; from +5 points it is high.
UPLIFT_MODEL_PREFIX = "uplift_"
UPLIFT_BANDS: Bands = (0.0, 0.05)

# The forms of engine.dsl.durations (trigger files), for values read from the environment; this
# leaf cannot import the engine, and tests/nudge/test_settings.py keeps the two in step.
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def _duration(value: Any) -> timedelta:
    """Seconds (``3600``, ``"1.5"``) or a duration such as ``6h`` / ``1d``."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"duration must not be negative (got {value})")
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"expected a duration such as 30s, 15m, 2h, 7d or 2w (got {value!r})")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2) or "s"])


# Send rates (issue 13, rate limits): the forms of engine.channels.ratelimit.parse_rate, which
# this leaf cannot import; tests/nudge/test_send_rate_settings.py keeps the two in step.
_SEND_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|min|minute|h|hour)\s*$", re.I)


def _send_rate(value: Any) -> str | None:
    """A send rate such as ``100/s``, ``600/min`` or ``5000/h``; empty or ``unlimited``: None."""
    if value is None or not str(value).strip() or str(value).strip().lower() == "unlimited":
        return None
    match = _SEND_RATE.match(str(value))
    if not match or float(match.group(1)) <= 0:
        raise ValueError(
            f"expected sends per time such as 100/s, 600/min or 5000/h (more than 0), or "
            f"unlimited (got {value!r})"
        )
    return str(value).strip()


def _absolute(path: Path | str) -> Path:
    return Path(path).expanduser().resolve()


class SharedSettings(BaseSettings):
    """What every part of nudge reads: home, API key, MLflow store, Feast store selection."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    home: Path = Field(
        default=DEFAULT_HOME,
        description="Root of all local state (default ./.nudge): event lake, engine database, "
        "Feast store, MLflow's SQLite store and artifacts, Prefect's home, simulations.",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="Key the HTTP APIs require: the engine's /v1 routes (X-API-Key header; "
        "unset: they answer 503) and every /v1 route of the scoring service (its header: "
        "NUDGE_API_KEY_HEADER; unset: the service refuses to start).",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking + registry URI of training, backtests, experiments and "
        "serving; MLFLOW_TRACKING_URI wins, default sqlite under NUDGE_HOME (mlflow.db).",
    )
    feast_config: str = Field(
        default="",
        description="`production` selects the production Feast store (Redis online store, SQL "
        "registry: NUDGE_REDIS_URL, NUDGE_FEAST_REGISTRY_URL); anything else the embedded one "
        "under NUDGE_HOME (SQLite online store, file registry).",
    )
    feast_registry_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the production Feast registry, e.g. "
        "postgresql+psycopg://postgres@127.0.0.1:5432/nudge (required by "
        "NUDGE_FEAST_CONFIG=production).",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis of the production Feast online store (and of the send rates when "
        "NUDGE_RATE_LIMIT_BACKEND=redis): redis://[:password@]host:port/db "
        "or Feast's host:port[,db=N][,password=...]; default 127.0.0.1:6379.",
    )
    # -- model definitions (issue 17, models as configuration) --------------------------------
    models_dir: Path | None = Field(
        default=None,
        description="Folder of model definitions, one YAML file per model (name, task, label, "
        "features, baselines, retrain); default: the definitions shipped with nudge "
        "(models/definitions: churn, ltv, engagement).",
    )

    train_max_customers: int = Field(
        default=250_000,
        ge=1,
        description="Most customers the train flow learns from: a lake with more is sampled by "
        "customer (a fixed hash of the id, every snapshot of a sampled customer kept), so that "
        "the training sets fit in memory; measured on a million customers, doubling the sample "
        "moves the holdout ROC-AUC by less than 0.005 (BENCHMARKS.md, Out of core).",
    )

    @classmethod
    def for_home(cls, home: Path | str | None = None, **values: Any) -> Self:
        """The settings from the environment, with `home` instead of NUDGE_HOME when given."""
        if home is not None:
            values["home"] = home
        return cls(**values)

    @property
    def home_dir(self) -> Path:
        """NUDGE_HOME as an absolute path."""
        return _absolute(self.home)

    @property
    def tracking_uri(self) -> str:
        """MLflow's store: MLFLOW_TRACKING_URI, else NUDGE_MLFLOW_TRACKING_URI, else
        ``sqlite:////<absolute NUDGE_HOME>/mlflow.db``."""
        explicit = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
        if explicit:
            return explicit
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        # Four slashes: sqlite:/// + an absolute path.
        return f"sqlite:///{(self.home_dir / 'mlflow.db').as_posix()}"

    @property
    def model_definitions_dir(self) -> Path:
        """NUDGE_MODELS_DIR as an absolute path, else the shipped definitions."""
        if self.models_dir is not None:
            return _absolute(self.models_dir)
        return Path(__file__).resolve().parents[1] / "models" / "definitions"

    @property
    def feast_production_selected(self) -> bool:
        """Whether NUDGE_FEAST_CONFIG selects the production Feast store."""
        return self.feast_config.strip().lower() == "production"


def home_dir(home: Path | str | None = None) -> Path:
    """The absolute NUDGE_HOME: `home` if given, else the environment's, else ./.nudge."""
    if home is not None:
        return _absolute(home)
    return SharedSettings().home_dir


def tracking_uri(home: Path | str | None = None) -> str:
    """MLflow's store by the one rule (`SharedSettings.tracking_uri`), `home` replacing
    NUDGE_HOME when given."""
    return SharedSettings.for_home(home).tracking_uri


class Settings(SharedSettings):
    """The CLI's, the engine's and the pipelines' configuration; `Settings()` reads the env."""

    engine_db: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the engine's state (SQLite or PostgreSQL); default "
        "sqlite under NUDGE_HOME (engine.db).",
    )
    scoring_url: str | None = Field(
        default=None, description="Base URL of the scoring service; unset: score conditions miss."
    )
    triggers_dir: Path | None = Field(
        default=None, description="Folder of trigger YAML files; default: the bundled examples."
    )
    templates_dir: Path | None = Field(
        default=None, description="Folder of email templates; default: the bundled ones."
    )
    smtp_host: str | None = Field(
        default=None, description="SMTP relay for email; unset: emails go to the file outbox."
    )
    smtp_port: int = Field(default=25, description="Port of the SMTP relay.")
    # -- SMTP for real relays (issue 13: TLS, AUTH; engine.channels.smtp) ---------------------
    smtp_security: Annotated[
        Literal["starttls", "tls", "none"] | None,
        BeforeValidator(lambda v: (str(v).strip().lower() or None) if v is not None else None),
    ] = Field(
        default=None,
        description="starttls (upgrade a plain connection, usually port 587), tls (implicit "
        "TLS, usually 465) or none; default starttls when NUDGE_SMTP_USERNAME is set, else none. "
        "Certificates are always verified; none with credentials only to a loopback relay.",
    )
    smtp_username: str | None = Field(
        default=None, description="SMTP AUTH user name (SendGrid: the literal `apikey`)."
    )
    smtp_password: SecretStr | None = Field(
        default=None, description="SMTP AUTH password or API key; never logged."
    )
    smtp_ca_file: Path | None = Field(
        default=None,
        description="PEM file of a private CA to trust for the relay's certificate, on top of "
        "the system's CAs.",
    )
    smtp_timeout: float = Field(
        default=10.0, gt=0, description="Seconds per SMTP connect, command and reply."
    )
    email_group_commit: int = Field(
        default=50, ge=1, le=1000,
        description="Emails marked sending in one commit before their final dots (1: one commit "
        "per email); a crash leaves at most this many unconfirmed, never resent.",
    )  # fmt: skip
    email_sender: str = Field(
        default="nudge <hello@nudge.example>", description="From address of emails."
    )
    unsubscribe_url: str | None = Field(
        default=None,
        description="Deprecated: base of old-style unsubscribe links (?c=…&t=…); when set it "
        "overrides the {NUDGE_PUBLIC_URL}/u/<token> links. Unset and no public URL: "
        "https://nudge.example/unsubscribe.",
    )
    # -- Email rendering and headers (issue 13): transactional sender, Message-ID, DKIM -------
    email_sender_transactional: str | None = Field(
        default=None,
        description="From address of transactional emails (triggers with category: "
        "transactional); default: NUDGE_EMAIL_SENDER.",
    )
    message_id_domain: str | None = Field(
        default=None,
        description="Domain of Message-IDs and List-Ids (<digest@DOMAIN>); default: the "
        "sender's domain.",
    )
    dkim_domain: str | None = Field(
        default=None, description="DKIM signing domain (d=); with the selector and key: signed."
    )
    dkim_selector: str | None = Field(
        default=None, description="DKIM selector (s=): the key is in DNS at <selector>._domainkey."
    )
    dkim_key_file: Path | None = Field(
        default=None, description="RSA private key (PEM) DKIM signs with; read at start."
    )
    signing_secret: SecretStr = Field(
        default=SecretStr(DEV_SIGNING_SECRET),
        description="Secret for webhook signatures and unsubscribe tokens: at least 32 random "
        "bytes; the servers refuse to start without one unless NUDGE_ENV=dev.",
    )
    env: str = Field(
        default="production",
        description="`dev` lets the servers start with the built-in development secret; any "
        "other value (the default) requires real secrets.",
    )
    webhook_allow: str = Field(
        default="",
        description="Comma-separated hosts or CIDR ranges webhooks may reach though private.",
    )
    default_timezone: str = Field(
        default="UTC", description="Zone of customers whose profile names neither zone nor country."
    )
    policy_file: Path | None = Field(
        default=None,
        description="Suppression policy YAML (caps, consent, quiet hours, engagement, global "
        "holdout; see deploy/policy.yaml); unset: the built-in defaults.",
    )
    max_future: Annotated[timedelta, BeforeValidator(_duration)] = Field(
        default=timedelta(days=1),
        description="How far ahead of the engine's clock an event's timestamp may be: seconds "
        "or a duration such as 6h or 1d. Later events are dead-lettered with the reason.",
    )
    sim_start: str = Field(
        default="2025-01-01",
        description="First day of simulated data when `nudge simulate --start` is not given.",
    )
    dask_address: str | None = Field(
        default=None,
        description="Dask scheduler (tcp://host:8786): `train` fits its models there when set.",
    )
    features_cron: str = Field(
        default="0 2 * * *", description="Schedule of the build-features deployment (daily)."
    )
    train_cron: str = Field(
        default="0 3 * * 1", description="Schedule of the train deployment (weekly, Mondays)."
    )
    schedule_timezone: str = Field(
        default="UTC", description="Time zone of the deployments' schedules."
    )
    snapshot_step_days: int = Field(
        default=30, ge=1, description="Days between feature snapshots (training dates)."
    )
    snapshot_count: int = Field(
        default=12, ge=2, description="How many feature snapshots `build-features` computes."
    )
    train_snapshots: int = Field(
        default=6, ge=1, description="Training snapshots per model (the holdout comes on top)."
    )
    # -- Operations: reviews in MLflow and engine metrics (issue 19) ---------------------------
    optimize_cron: str = Field(
        default="0 4 * * *", description="Schedule of the optimize deployment (daily reviews)."
    )
    score_cron: str = Field(
        default="0 5 * * *",
        description="Schedule of the score-batch deployment (every customer's scores refreshed).",
    )
    optimize_days: int = Field(
        default=30, ge=1, le=366, description="How many past days a review logs at most."
    )
    attribution_hours: float = Field(
        default=72.0, gt=0, description="Attribution window of the reviews' conversions, hours."
    )
    metrics_port: Annotated[int, Field(ge=0, le=65_535)] | None = Field(
        default=None, description="Port of `nudge engine run`'s /metrics (unset: none)."
    )
    # -- SMS through Twilio and web push (issue 13, channels) ---------------------------------
    twilio_account_sid: str | None = Field(
        default=None, description="Twilio account SID (AC…); with the token and sender: SMS on."
    )
    twilio_auth_token: SecretStr | None = Field(
        default=None,
        description="Twilio auth token: the API password, and the key of inbound webhook "
        "signatures (X-Twilio-Signature).",
    )
    twilio_from: str | None = Field(
        default=None,
        description="Sender of SMS: a Twilio number in E.164, a sender ID, or a Messaging "
        "Service SID (MG…).",
    )
    twilio_base_url: str = Field(
        default="https://api.twilio.com", description="Base URL of Twilio's REST API."
    )
    twilio_timeout: float = Field(default=10.0, gt=0, description="Seconds per Twilio request.")
    public_url: str | None = Field(
        default=None,
        description="The engine API's public base URL (https://nudge.example.com), where "
        "recipients and providers reach `engine serve`: every link in a message starts with it "
        "(unsubscribe /u, open pixel /o, clicks /c); Twilio signs the URL it posts to, so "
        "behind a proxy the signature is checked against this one. Unset: placeholder "
        "unsubscribe links, no tracking, Twilio checked against the request's own URL.",
    )
    vapid_private_key: SecretStr | None = Field(
        default=None,
        description="VAPID private key for web push (PEM, or base64url as web-push prints it).",
    )
    vapid_private_key_file: Path | None = Field(
        default=None, description="File holding the VAPID private key (instead of the value)."
    )
    vapid_subject: str | None = Field(
        default=None, description="VAPID contact (mailto:ops@example.com or an https URL)."
    )
    push_ttl: int = Field(
        default=86_400, ge=0, description="Seconds a push service keeps an undelivered push."
    )

    def twilio_missing(self) -> list[str]:
        """The Twilio settings SMS still needs (none: SMS is configured)."""
        values = {"NUDGE_TWILIO_ACCOUNT_SID": self.twilio_account_sid,
                  "NUDGE_TWILIO_AUTH_TOKEN": self.twilio_auth_token,
                  "NUDGE_TWILIO_FROM": self.twilio_from}  # fmt: skip
        return [name for name, value in values.items() if not value]

    def push_missing(self) -> list[str]:
        """The VAPID settings web push still needs (none: push is configured)."""
        missing = []
        if self.vapid_private_key is None and self.vapid_private_key_file is None:
            missing.append("NUDGE_VAPID_PRIVATE_KEY or NUDGE_VAPID_PRIVATE_KEY_FILE")
        if not self.vapid_subject:
            missing.append("NUDGE_VAPID_SUBJECT")
        return missing

    def vapid_key_text(self) -> str:
        """The VAPID private key's text (from the value or the file); OSError if unreadable."""
        if self.vapid_private_key is not None:
            return self.vapid_private_key.get_secret_value()
        if self.vapid_private_key_file is None:
            raise ValueError("no VAPID private key configured")
        return self.vapid_private_key_file.read_text()

    # -- Live data in and out (issue 15): the engine → lake sync, erasure ------------------------
    lake_sync_seconds: float = Field(
        default=60.0,
        ge=0,
        description="Seconds between engine → lake syncs in `engine serve` "
        "(0: no background sync; `nudge lake sync` runs one).",
    )
    lake_sync_batch: int = Field(
        default=50_000, ge=1, description="Events per engine → lake sync batch (one lake file)."
    )
    erasure_salt: SecretStr | None = Field(
        default=None,
        description="Secret salt of erased customers' hashes (decisions, the "
        "suppression list); default: derived from NUDGE_SIGNING_SECRET.",
    )

    def erasure_key(self) -> bytes:
        """The salt of erasure hashes: NUDGE_ERASURE_SALT, else one derived from the signing
        secret (so that hashes stay stable without a second secret to keep)."""
        if self.erasure_salt is not None:
            return self.erasure_salt.get_secret_value().encode()
        secret = self.signing_secret.get_secret_value().encode()
        return hashlib.sha256(b"nudge erasure salt:" + secret).digest()

    # -- Public links (issue 14: unsubscribe, preference page, open and click tracking) -------
    signing_secrets_old: str = Field(
        default="",
        description="Comma-separated older signing secrets whose link tokens are still accepted "
        "after a rotation of NUDGE_SIGNING_SECRET (tokens are always signed with the current one).",
    )
    tracking: bool = Field(
        default=True,
        description="Open pixel and click rewriting in HTML marketing email (needs "
        "NUDGE_PUBLIC_URL); false: off everywhere (a trigger can also say `tracking: false`).",
    )
    tracking_scanner_seconds: float = Field(
        default=10.0,
        ge=0,
        description="A click this soon after sending is flagged as a link scanner's "
        "(properties.machine).",
    )

    def link_secrets(self) -> list[str]:
        """The secrets link tokens are verified with: the current one, then the older ones."""
        old = [part.strip() for part in self.signing_secrets_old.split(",") if part.strip()]
        return [self.signing_secret.get_secret_value(), *old]

    # -- Provider feedback (issue 14, webhooks, suppression list, deliverability guard) ---------
    sendgrid_webhook_public_key: str | None = Field(
        default=None,
        description="SendGrid Signed Event Webhook verification key, as SendGrid shows it "
        "(base64 DER); unset: /webhooks/sendgrid answers 503.",
    )
    postmark_webhook_user: str | None = Field(
        default=None, description="User of the basic auth in Postmark's webhook URL."
    )
    postmark_webhook_password: SecretStr | None = Field(
        default=None, description="Password of the basic auth in Postmark's webhook URL."
    )
    mailgun_webhook_signing_key: SecretStr | None = Field(
        default=None, description="Mailgun's HTTP webhook signing key (HMAC-SHA256)."
    )
    sns_cert_hosts: str = Field(
        default="",
        description="Comma-separated hosts (host or host:port) besides sns.<region>.amazonaws.com "
        "whose https SigningCertURL / SubscribeURL are trusted (tests, private endpoints).",
    )
    sns_topic_arns: str = Field(
        default="",
        description="Comma-separated SNS topic ARNs accepted at /webhooks/ses (empty: any topic "
        "whose signature verifies).",
    )
    soft_bounce_limit: int = Field(
        default=3, ge=1, description="Soft bounces in a row that suspend an address."
    )
    soft_bounce_suspend_hours: float = Field(
        default=72.0, gt=0, description="Hours an address is suspended after those soft bounces."
    )
    complaint_warn_rate: float = Field(
        default=0.001, gt=0, le=1, description="Complaints / delivered in a day that warn (0.1%)."
    )
    complaint_pause_rate: float = Field(
        default=0.003,
        gt=0,
        le=1,
        description="Complaints / delivered in a day that pause marketing sends (0.3%).",
    )
    guard_min_delivered: int = Field(
        default=500,
        ge=1,
        description="Deliveries a day needs before its complaint rate can warn or pause.",
    )

    # -- Send rates (issue 13, rate limits): per channel, shared by every dispatcher worker -----
    email_rate: Annotated[str | None, BeforeValidator(_send_rate)] = Field(
        default=None,
        description="Most emails per time, all dispatcher workers together: 100/s, 600/min, "
        "5000/h (a burst of one second's worth); unset: unlimited. A throttled email waits.",
    )
    sms_rate: Annotated[str | None, BeforeValidator(_send_rate)] = Field(
        default=None, description="Most SMS per time (as NUDGE_EMAIL_RATE); unset: unlimited."
    )
    push_rate: Annotated[str | None, BeforeValidator(_send_rate)] = Field(
        default=None,
        description="Most web pushes per time (as NUDGE_EMAIL_RATE); unset: unlimited.",
    )
    webhook_rate: Annotated[str | None, BeforeValidator(_send_rate)] = Field(
        default=None,
        description="Most webhook calls per time (as NUDGE_EMAIL_RATE); unset: unlimited.",
    )
    rate_limit_backend: Literal["database", "redis"] = Field(
        default="database",
        description="Where the send rates' shared state lives: `database` (the engine database, "
        "one row per channel) or `redis` (NUDGE_REDIS_URL; for many fast workers).",
    )

    def secret_problem(self) -> str | None:
        """Why the signing secret is unfit for a server outside dev, or None."""
        if self.env.strip().lower() == "dev":
            return None
        secret = self.signing_secret.get_secret_value()
        how = (
            "set NUDGE_SIGNING_SECRET to at least 32 random bytes, e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'` "
            "(or NUDGE_ENV=dev on a development machine)"
        )
        if secret == DEV_SIGNING_SECRET:
            return f"NUDGE_SIGNING_SECRET is the built-in development secret, which anyone can use to forge unsubscribe tokens and webhook signatures: {how}"
        if len(secret.encode()) < MIN_SECRET_BYTES:
            return f"NUDGE_SIGNING_SECRET is {len(secret.encode())} bytes long, shorter than {MIN_SECRET_BYTES}: {how}"
        return None

    @cached_property
    def lake_dir(self) -> Path:
        """The event lake (Parquet, partitioned by UTC date)."""
        return self.home_dir / "lake"

    @cached_property
    def simulation_dir(self) -> Path:
        """Where `nudge simulate` writes its data set and planted truth by default."""
        return self.home_dir / "simulation"

    @cached_property
    def rejects_dir(self) -> Path:
        """Where `nudge import` writes rows it could not accept, with the reason."""
        return self.home_dir / "rejects"

    @property
    def engine_url(self) -> str:
        """The engine database URL (SQLite under NUDGE_HOME unless NUDGE_ENGINE_DB is set)."""
        return self.engine_db or f"sqlite:///{self.home_dir / 'engine.db'}"

    @property
    def trigger_folder(self) -> Path:
        """Where trigger definitions are read from."""
        return self.triggers_dir or Path(__file__).resolve().parents[1] / "engine" / "examples"

    @property
    def template_folder(self) -> Path:
        """Where email templates are read from."""
        return self.templates_dir or Path(__file__).resolve().parents[1] / "engine" / "templates"

    @property
    def outbox_dir(self) -> Path:
        """Where emails go when no SMTP relay is configured."""
        return self.home_dir / "outbox"


class ServingSettings(SharedSettings):
    """What `nudge serve` and `serving.app.create_app` need; `ServingSettings()` reads the env.

    Which model names exist is the feature schema's to say, not this leaf's: `create_app`
    refuses unknown ones.
    """

    api_key_header: str = Field(
        default="X-API-Key", description="Header carrying the scoring service's API key."
    )
    model_alias: str = Field(default="champion", description="Registry alias the service serves.")
    models: tuple[str, ...] | None = Field(
        default=None,
        min_length=1,
        description="Registered models to serve (JSON list); default: every model of the "
        "definitions (NUDGE_MODELS_DIR) that has a version with the alias in the registry.",
    )
    model_poll_seconds: Annotated[float, Field(gt=0)] = Field(
        default=30.0, description="How often the registry is asked whether an alias moved."
    )
    model_retry_seconds: Annotated[float, Field(ge=0)] = Field(
        default=300.0,
        description="How long before a version that failed to load is tried again.",
    )
    feast_production: bool | None = Field(
        default=None,
        description="Use the production Feast config (Redis); default: whether "
        "NUDGE_FEAST_CONFIG=production.",
    )
    feast_project: str | None = Field(
        default=None, description="Override the Feast project name of the selected config."
    )
    direct_online_reads: bool = Field(
        default=True,
        description="Read Feast's SQLite online store with one query per view (checked against "
        "Feast's own read first); false: Feast's get_online_features for every request.",
    )
    online_snapshot_max_customers: int = Field(
        default=1_000_000,
        ge=0,
        description="With direct reads: hold each SQLite online view in memory while the file "
        "is unchanged (reloaded after each materialization or erasure; SQLite answers "
        "meanwhile) when it has at most this many customers; 0: never.",
    )
    score_bands: dict[str, Bands] = Field(
        default_factory=lambda: dict(DEFAULT_BANDS),
        description='Band thresholds per model as JSON, e.g. {"churn": [0.3, 0.6]}: below the '
        "first is low, from the second on is high.",
    )
    stale_after: timedelta = Field(
        default=timedelta(days=2),
        description="Features older than this are flagged stale (seconds or ISO 8601, P2D).",
    )
    max_batch: Annotated[int, Field(ge=1, le=MAX_BATCH_LIMIT)] = Field(
        default=MAX_BATCH_LIMIT, description="Most customers one request may ask for."
    )
    max_body_bytes: Annotated[int, Field(ge=1_024)] = Field(
        default=256 * 1_024, description="Largest request body accepted (413 above)."
    )
    explain_top: Annotated[int, Field(ge=1, le=20)] = Field(
        default=3, description="Reason codes returned per score with explain."
    )
    serve_host: str = Field(default="127.0.0.1", description="Address `nudge serve` binds.")
    serve_port: Annotated[int, Field(ge=0, le=65_535)] = Field(
        default=8000, description="Port `nudge serve` binds."
    )

    @field_validator("score_bands")
    @classmethod
    def _ordered_bands(cls, bands: dict[str, Bands]) -> dict[str, Bands]:
        for model, (low, high) in bands.items():
            if low > high:
                raise ValueError(f"{model}: the low/medium boundary {low} exceeds {high}")
        # A partial override keeps the defaults of the models it does not name.
        return {**DEFAULT_BANDS, **bands}

    @model_validator(mode="after")
    def _feast_selection(self) -> ServingSettings:
        # Decided here, once, so that the service never reads the environment for it again.
        if self.feast_production is None:
            self.feast_production = self.feast_production_selected
        return self

    def bands_for(self, model: str) -> Bands:
        """The (low/medium, medium/high) boundaries of a model's scores."""
        # A model without bands of its own (a new definition): a probability's default bands;
        # an uplift model's: low where mail hurts or does nothing, high from +5 points.
        if model in self.score_bands:
            return self.score_bands[model]
        if model.startswith(UPLIFT_MODEL_PREFIX):
            return UPLIFT_BANDS
        return DEFAULT_BANDS.get(model, (0.3, 0.6))

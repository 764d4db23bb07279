"""The engine's tables, in SQLAlchemy Core: one `metadata` for SQLite (WAL) and PostgreSQL.

The inbox of accepted events, the execution log of decisions, the planned actions (the outbox),
the tasks and segments that actions create, the dead letters, and per-customer state and profiles.
Times are epoch seconds (double precision) so that both databases compare them the same way.

A change here needs a migration (``engine/store/migrations/versions``): the engine refuses a
database whose revision is not the head (``nudge db upgrade``).
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "actions",
    "customer_state",
    "dead_letters",
    "decisions",
    "engine_flags",
    "erasures",
    "identities",
    "inbox",
    "lake_watermarks",
    "message_ids",
    "metadata",
    "profiles",
    "provider_events",
    "schedule_runs",
    "segments",
    "send_rates",
    "suppressed_addresses",
    "tasks",
    "timers",
]

metadata = sa.MetaData()

inbox = sa.Table(
    "inbox",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(128), nullable=False, unique=True),
    sa.Column("customer_id", sa.String(128), nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("occurred_at", sa.Double, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("received_at", sa.Double, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("processed_at", sa.Double),
    # A stable hash bucket of the customer: N processor workers each own the buckets i mod N,
    # so one customer's events are always handled by one worker, in order.
    sa.Column("bucket", sa.Integer, nullable=False, server_default="0"),
    # Copied to the lake yet (engine.store.lake_sync; migration 0006).
    sa.Column("lake_synced", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("inbox_pending", "status", "seq"),
    sa.Index("inbox_lake_pending", "lake_synced", "seq"),
    sa.Index("inbox_by_customer", "customer_id", "occurred_at"),
)

decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(128), nullable=False),
    sa.Column("customer_id", sa.String(128), nullable=False),
    sa.Column("trigger_id", sa.String(64), nullable=False),
    sa.Column("trigger_version", sa.String(32), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("trace", sa.Text),
    sa.Column("scores", sa.Text),
    sa.Column("variant", sa.String(64)),
    sa.Column("decided_at", sa.Double, nullable=False),
    sa.UniqueConstraint("event_id", "trigger_id", name="decisions_once_per_event"),
    sa.Index("decisions_by_trigger", "trigger_id", "outcome"),
    sa.Index("decisions_by_customer", "customer_id"),
)

actions = sa.Table(
    "actions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("idempotency_key", sa.String(300), nullable=False, unique=True),
    sa.Column("event_id", sa.String(128), nullable=False),
    sa.Column("customer_id", sa.String(128), nullable=False),
    sa.Column("trigger_id", sa.String(64), nullable=False),
    sa.Column("action_index", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("channel", sa.String(32)),
    sa.Column("due_at", sa.Double, nullable=False),
    sa.Column("cancel_if", sa.Text),
    sa.Column("variant", sa.String(64)),
    sa.Column("trigger_at", sa.Double, nullable=False, server_default="0"),
    # pending → claimed → (sending →) sent | cancelled | failed; sending = in doubt after a crash
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.Double, nullable=False, server_default="0"),
    sa.Column("claimed_by", sa.String(64)),
    sa.Column("claimed_at", sa.Double),
    sa.Column("finished_at", sa.Double),
    sa.Column("result", sa.Text),
    sa.Index("actions_due", "status", "due_at"),
    # The dispatcher's frequency caps count a customer's sends (migration 0005).
    sa.Index("actions_by_customer", "customer_id", "status"),
)

segments = sa.Table(
    "segments",
    metadata,
    sa.Column("customer_id", sa.String(128), primary_key=True),
    sa.Column("segment", sa.String(128), primary_key=True),
    sa.Column("added_at", sa.Double, nullable=False),
    sa.Column("source_action", sa.String(300)),
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("idempotency_key", sa.String(300), nullable=False, unique=True),
    sa.Column("customer_id", sa.String(128), nullable=False),
    sa.Column("trigger_id", sa.String(64), nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("details", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="open"),
    sa.Column("created_at", sa.Double, nullable=False),
)

dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(128)),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("redriven_at", sa.Double),
)

customer_state = sa.Table(
    "customer_state",
    metadata,
    sa.Column("customer_id", sa.String(128), primary_key=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)

profiles = sa.Table(
    "profiles",
    metadata,
    sa.Column("customer_id", sa.String(128), primary_key=True),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)

# -- Send rates (issue 13, item 6): one shared limiter row per channel -------------------------

# The GCRA state of a channel's send rate, shared by every dispatcher worker of the database:
# `tat` is the theoretical arrival time (epoch seconds) of the next send at the configured rate;
# engine.store.send_rates moves it forward with one conditional UPDATE per granted send.
send_rates = sa.Table(
    "send_rates",
    metadata,
    sa.Column("channel", sa.String(32), primary_key=True),
    sa.Column("tat", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)

# -- Live data in and out (issue 15): identity links, the lake-sync watermarks, erasure --------

# An anonymousId (or an alias's previousId) linked to the customer it belongs to: events sent
# under it are the customer's (engine.store.identity says the conflict rules).
identities = sa.Table(
    "identities",
    metadata,
    sa.Column("anonymous_id", sa.String(128), primary_key=True),
    sa.Column("customer_id", sa.String(128), nullable=False),
    sa.Column("linked_at", sa.Double, nullable=False),
    sa.Column("via", sa.String(16), nullable=False),  # identify | alias
    sa.Column("message_id", sa.String(128)),
    sa.Index("identities_by_customer", "customer_id"),
)

# How far the engine → lake sync has gone, per stream (events: inbox seq; profiles: updated_at).
lake_watermarks = sa.Table(
    "lake_watermarks",
    metadata,
    sa.Column("stream", sa.String(32), primary_key=True),
    sa.Column("position", sa.Double, nullable=False),
    sa.Column("synced", sa.Integer, nullable=False, server_default="0"),
    sa.Column("updated_at", sa.Double, nullable=False),
)

# Addresses of erased customers, as salted hashes: a re-import does not mail them again.
suppressed_addresses = sa.Table(
    "suppressed_addresses",
    metadata,
    sa.Column("address_hash", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),  # email | phone
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("added_at", sa.Double, nullable=False),
    # -- Feedback from providers (issue 14, migration 0004): reason bounced | complained | soft |
    # manual | erased; the address itself for all but erased ones (so that `export` lists it);
    # `until`: end of a temporary suspension (soft bounces); `soft_bounces`: in a row.
    sa.Column("address", sa.String(320)),
    sa.Column("until", sa.Double),
    sa.Column("soft_bounces", sa.Integer, nullable=False, server_default="0"),
    sa.Column("detail", sa.String(300)),
    sa.Column("updated_at", sa.Double),
    sa.Index("suppressed_by_address", "address"),
)

# Message-ID (as sent, ``<…@…>``) of each email the dispatcher hands to the transport → its
# action: providers' webhooks name the message by it (engine.runtime.email_webhooks).
message_ids = sa.Table(
    "message_ids",
    metadata,
    sa.Column("message_id", sa.String(255), primary_key=True),
    sa.Column("action_id", sa.Integer, nullable=False),
    sa.Column("recorded_at", sa.Double, nullable=False),
)

# Provider events already applied (``sendgrid:<sg_event_id>`` …): a webhook's retry changes the
# suppression list once (the events themselves are idempotent in the inbox by their event_id).
provider_events = sa.Table(
    "provider_events",
    metadata,
    sa.Column("event_key", sa.String(200), primary_key=True),
    sa.Column("received_at", sa.Double, nullable=False),
)

# Engine-wide switches that survive restarts: ``marketing_paused`` (the deliverability guard).
engine_flags = sa.Table(
    "engine_flags",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("set_at", sa.Double, nullable=False),
)

# One row per erasure (GDPR Art. 17): when, whose (salted hash), and what was removed.
erasures = sa.Table(
    "erasures",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("customer_hash", sa.String(64), nullable=False),
    sa.Column("requested_by", sa.String(64), nullable=False),
    sa.Column("erased_at", sa.Double, nullable=False),
    sa.Column("removed", sa.Text, nullable=False),  # JSON: what was removed, counted
)

# -- Predictive triggers (issue 16) -------------------------------------------------------------

# Durable timers of `when: {event, then_absent}` triggers: the first event opened a window; when
# it closes (`due_at`) without the awaited event the trigger decides. One row per (trigger, first
# event); `bucket` is the customer's inbox bucket, so the processor worker that owns the customer's
# events (and state) runs its timers. pending → done, in the transaction that records the outcome.
timers = sa.Table(
    "timers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("trigger_id", sa.String(64), nullable=False),
    sa.Column("customer_id", sa.String(128), nullable=False),
    sa.Column("event_id", sa.String(128), nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("started_at", sa.Double, nullable=False),
    sa.Column("due_at", sa.Double, nullable=False),
    sa.Column("absent_event", sa.String(64), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),  # the first event's JSON, decided with later
    sa.Column("bucket", sa.Integer, nullable=False, server_default="0"),
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("outcome", sa.Text),
    sa.Column("finished_at", sa.Double),
    sa.UniqueConstraint("trigger_id", "event_id", name="timers_once_per_event"),
    sa.Index("timers_due", "status", "due_at"),
    sa.Index("timers_by_customer", "customer_id"),
)

# Runs of scheduled audiences: one row per (trigger, zone, cron time, worker share). `cursor` is
# the last customer id done, committed with each page's decisions, so a run that is cut off
# resumes where it stopped and nobody is decided twice.
schedule_runs = sa.Table(
    "schedule_runs",
    metadata,
    sa.Column("trigger_id", sa.String(64), primary_key=True),
    sa.Column("zone", sa.String(64), primary_key=True),
    sa.Column("occurrence", sa.Double, primary_key=True),
    sa.Column("worker", sa.String(16), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),  # running | done | skipped
    sa.Column("cursor", sa.String(128), nullable=False, server_default=""),
    sa.Column("customers", sa.Integer, nullable=False, server_default="0"),
    sa.Column("fired", sa.Integer, nullable=False, server_default="0"),
    sa.Column("started_at", sa.Double, nullable=False),
    sa.Column("finished_at", sa.Double),
)

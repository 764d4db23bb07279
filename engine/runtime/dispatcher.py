"""The dispatcher: runs due actions from the outbox, each effect once.

An action is claimed (on PostgreSQL with ``FOR UPDATE SKIP LOCKED``, so several dispatchers share
the work), its `cancel_if` is re-checked against the customer's events since the trigger, and then
it runs:

- database effects (segments, profile updates, tasks) commit together with the action's status;
- deliveries go through a channel (`engine.channels.base.Channel`: email, webhook, and whatever
  else is registered), after the channel's consent flag is checked again at the due time; the
  channel marks the action *sending* at its point of no return, so a crash never sends twice —
  an email caught in that instant is reported as `unconfirmed`, not resent;
- webhooks carry the idempotency key; a crash after the POST repeats it with the same key.

Channels are closed after each batch: a transport may keep one connection for a whole batch.

One commit per email, not two: a delivery whose channel never sends again what it finds in doubt
(``settle_in_doubt == "unconfirmed"``: SMTP, push) does not commit its *sent* on its own; that
write rides in the next delivery's *sending* commit of the batch, and the batch's last one is
written when the batch ends. Exactly-once is untouched — each send still has a durable *sending*
mark before its point of no return — but a crash between an email's 250 and that next commit
leaves it `unconfirmed` (never resent) although it did arrive.

Group commit, one commit per `group_size` emails: a channel that can prepare a delivery without
sending it (`prepare`: the email rendered and its bytes built) and never resends what is in doubt
has up to `group_size` deliveries of the batch prepared first, then marked *sending* together in
one commit (with the previous group's *sent*), then sent one after the other, each final dot after
that commit — each told the next, so that over SMTP the next envelope rides with the final dot
(PIPELINING: one round trip an email, engine.channels.smtp), and while an email's reply travels
the next action of the batch is prepared for the next group (the client's render overlaps the
server's work). The durable commit is the largest cost of an email (~1 ms on SQLite, ~4 ms on
PostgreSQL here, against ~3 ms for the SMTP exchange and the MIME bytes together), and this pays it
once per group. The price is what a crash leaves in doubt: up to `group_size` actions *sending* —
settled `unconfirmed` by `recover()`, never resent, never lost from sight — of which some had not
reached their final dot (they did not arrive; an operator can see them and send them again on
purpose), where one commit per email leaves at most the one being finished. A delivery of a group
that fails before its dot (refused, connection lost, 4xx) is retried or failed as always: its
*sending* mark is overwritten. ``group_size=1`` is the one-commit-per-email path (the mark
committed between an email's data and its dot, in the transport's `before_commit`).

Send rates (`engine.channels.ratelimit.SendRate`, shared by all workers through the database or
Redis): after the consent check, a delivery asks its channel's rate; when the channel is throttled
the action is put back, due when the rate allows, with ``throttled: email rate 100/s`` as its
result — no attempt counted, nothing about it changed: a throttled send is delayed, never dropped.
The waiting actions of one run are spread over the following slots, not all due at one instant.
A provider that says when to come back (a retryable `DeliveryError` with `retry_after`: HTTP 429,
or 503 with Retry-After) throttles the same way: the wait is the provider's, no attempt is
counted, and the channel's other actions of the run wait too — so a busy provider cannot use up
`max_attempts`. Only after `throttle_deadline` past the due time (default a day) does a provider's
throttle count as a failed attempt, so an endpoint that answers 429 forever still ends `failed`.

Before the send rate, two holds of issue 14: a marketing send while the deliverability guard
has paused marketing (engine.runtime.deliverability) is put back for later (``paused: …``, no
attempt counted); an email to an address on the suppression list (engine.store.suppressions) is
cancelled as ``suppressed: bounced`` (``complained``, ``soft``, ``manual``) — a complaint stops
marketing only. The list is by address, so it holds whatever the profile says. The Message-ID of
each email is remembered with its point of no return, for the providers' webhooks.

Every marketing delivery passes the suppression policy again at its real send moment (issue 16),
not only the plan's first action at decision time: the consent flag the policy names for its
channel (``no_consent:``), quiet hours in the customer's zone (put back to their end, ``quiet_hours:
deferred to …``; cancelled when the trigger says ``quiet_hours: drop``; skipped with ``ignore``),
then the channel's caps counted from what was really sent to that customer on that channel
(`engine.store.sends`: sends due in the customer-local day of this one's due time, and in the
rolling windows ending at it), cancelled as ``frequency_cap: 1 email already sent on 2026-12-02
(local; cap 1 a day)``. Quiet hours come before the caps: a send put back to the next morning
counts on the next morning's day. These come after the suppression list and the marketing pause,
whose reasons say more.

`cancel_if` is evaluated as `if` is: each event of the customer since the trigger, with the
customer's profile (and segments), state and scores (from the optional score source, by its
`on_missing` when absent), and once more at the due time without an event — so attribute,
behavior and score cancels fire even when no event arrives.

Failures that may pass (SMTP down, HTTP 5xx) are retried with exponential backoff and jitter, up to
`max_attempts`, then marked failed with the reason; failures that will not pass (a missing
template, a blocked target, HTTP 4xx) fail at once.
"""

from __future__ import annotations

import json
import logging
import random
import smtplib
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.channels.base import Channel, Delivery, DeliveryError, PreparedDelivery
from engine.channels.email import EmailSettings, TemplateError
from engine.channels.email_channel import EmailChannel
from engine.channels.ratelimit import SendRate
from engine.channels.webhooks import BlockedTarget, WebhookChannel, WebhookSender
from engine.decisions.state import CustomerState
from engine.decisions.suppression import (
    ChannelCap,
    SuppressionPolicy,
    local_day_bounds,
    quiet_hours_end,
)
from engine.decisions.timezones import customer_zone
from engine.dsl.conditions import (
    Condition,
    ConditionError,
    EvaluationContext,
    Outcome,
    ScoreValue,
    compile_condition,
)
from engine.dsl.durations import format_duration
from engine.dsl.triggers import Trigger, TriggerIndex
from engine.runtime.deliverability import marketing_pause
from engine.runtime.erasure import address_hash
from engine.runtime.processor import ScoreSource
from engine.store import ActionRow, EngineDB
from engine.store.customer_view import segments_of
from engine.store.customers import load_profiles, load_states
from engine.store.erasure import suppressed_hashes
from engine.store.execution_log import scores_of
from engine.store.inbox import customer_events, event_payloads
from engine.store.outbox import (
    THROTTLED,
    claim_due,
    defer_action,
    mark_action,
    mark_actions,
    release_claims,
    retry_action,
    settle_sending,
)
from engine.store.sends import send_times, sends_in_windows
from engine.store.suppressions import (
    normalise_email,
    record_messages,
    suppressions_for,
)

__all__ = ["GROUP_SIZE", "DispatchStats", "Dispatcher"]

log = logging.getLogger(__name__)

# A provider's wait below this is taken as this (a Retry-After: 0 must not spin the loop).
MIN_PROVIDER_WAIT = 1.0
# How long a send waits when the shared limiter itself cannot be asked (Redis down, …).
LIMITER_RETRY = 5.0
# Every customer-local day containing a moment lies within this much of it (UTC-12 … UTC+14).
LOCAL_DAY_REACH = 2 * 86_400.0
# A marketing send held by the deliverability guard's pause looks again this much later.
PAUSE_RECHECK = 300.0
# Deliveries marked *sending* in one commit by default: at most this many in doubt after a crash.
GROUP_SIZE = 50
PAUSED = "paused: by the deliverability guard (`nudge suppressions resume-marketing`)"


@dataclass
class DispatchStats:
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def handled(self) -> int:
        return sum(self.outcomes.values())


class _Retry(Exception):
    """The attempt failed in a way that may pass."""


class _Fail(Exception):
    """The attempt failed in a way that will not pass."""


class Dispatcher:
    """Delivers due actions from the outbox of `store`."""

    def __init__(
        self,
        store: EngineDB,
        index: TriggerIndex,
        *,
        email: EmailSettings,
        webhooks: WebhookSender,
        channels: Mapping[str, Channel] | None = None,
        worker_id: str = "dispatcher-0",
        batch_size: int = 200,
        group_size: int = GROUP_SIZE,
        max_attempts: int = 5,
        retry_base: float = 30.0,
        lease: float = 300.0,
        clock: Callable[[], float] = time.time,
        send_rate: SendRate | None = None,
        throttle_deadline: float = 86_400.0,
        erasure_salt: bytes | None = None,
        policy: SuppressionPolicy | None = None,
        default_zone: str = "UTC",
        scores: ScoreSource | None = None,
    ) -> None:
        self.store = store
        # The marketing rules re-checked at each send (a trigger's `policy:` over this), in the
        # customer's zone (`default_zone` when the profile names none); `scores` for cancel_if.
        self.policy = policy if policy is not None else SuppressionPolicy()
        self.default_zone = default_zone
        self.scores = scores
        # With the salt of the erasure hashes, an address of an erased customer is never sent
        # to again, whatever path put it back on a profile (PUT /v1/customers, a signup event).
        self.erasure_salt = erasure_salt
        self.index = index
        # Action kind → the channel that delivers it; `channels` adds to or replaces the defaults.
        self.channels: dict[str, Channel] = {
            "send_email": EmailChannel(email),
            "webhook": WebhookChannel(webhooks),
            **(channels or {}),
        }
        self.worker_id = worker_id
        self.batch_size = batch_size
        if group_size < 1:
            raise ValueError(f"group_size must be at least 1 (got {group_size})")
        # Deliveries marked *sending* in one commit (the module docstring says the trade-off).
        self.group_size = group_size
        self.max_attempts = max_attempts
        self.retry_base = retry_base
        self.lease = lease
        self.clock = clock
        self.send_rate = send_rate if send_rate is not None else SendRate.unlimited()
        self.throttle_deadline = throttle_deadline
        # Per run (one `now`): channel → (seconds to wait, actions already put behind it).
        self._waits: dict[str, tuple[float, int]] = {}
        self._waits_at: float | None = None
        self._cancel_conditions: dict[str, Any] = {}
        self._cache: dict[str, dict[Any, Any]] = {}
        self._paused: bool = False  # the deliverability guard's pause, asked once per run
        self._paused_at: float | None = None
        # Delivered, *sending* committed, *sent* not yet written: (action id, now, result), which
        # the next *sending* commit (or the end of the batch) writes.
        self._unrecorded: list[tuple[int, float, str]] = []
        # Prepared deliveries of the current group, waiting for their common *sending* commit.
        self._group: list[_Grouped] = []

    def recover(self) -> int:
        """After a restart: release this worker's and stale claims; settle emails caught mid-send."""
        now = self.clock()
        with self.store.begin() as conn:
            released = release_claims(conn, older_than=now - self.lease)
            released += release_claims(conn, worker_id=self.worker_id)
            for kind, channel in self.channels.items():
                settle_sending(conn, channel.settle_in_doubt, kinds=(kind,))
        return released

    def run_due(self, now: float | None = None) -> DispatchStats:
        """Run every action due by `now` (default: the clock), batch by batch.

        One action's failure never stops the others: whatever it raises ends that action
        (retried or failed with the reason), and the loop goes on with the next.
        """
        now = self.clock() if now is None else now
        stats = DispatchStats()
        while True:
            with self.store.hold():  # one connection for the batch: no pool checkout per write
                if not self._run_batch(now, stats):
                    return stats

    def _run_batch(self, now: float, stats: DispatchStats) -> bool:
        """Claim and run one batch; False when nothing was due."""
        batch = self.store.write(claim_due, now, self.batch_size, self.worker_id)
        if not batch:
            return False
        try:
            self._prefetch(batch)
        except Exception:  # the actions then load what they need one by one
            log.exception("prefetch of %d actions failed", len(batch))
            self._cache = {}
        waiting = deque(batch)

        def run_next() -> bool:
            """Run the batch's next action (a delivery joins the next group); False when none
            is left or the next group is full. The transport calls it while a reply travels."""
            if not waiting or len(self._group) >= self.group_size:
                return False
            outcome = self._run_guarded(waiting.popleft(), now)
            if outcome is not None:
                stats.outcomes[outcome] += 1
            return True

        try:
            while waiting or self._group:
                while run_next():
                    pass
                self._send_group(now, stats, run_next)
        finally:
            self._group = []  # not committed: still claimed, released by recover()
            self._cache = {}
            self._close_channels()
            self._record_sent()
        return True

    def _send_group(
        self, now: float, stats: DispatchStats, meanwhile: Callable[[], bool] | None = None
    ) -> None:
        """Mark the prepared group *sending* in one commit (with the earlier *sent*), then send
        each; every delivery's outcome is counted in `stats`. `meanwhile` prepares the next
        group while an email's reply is on its way (a transport that can wait calls it)."""
        group, self._group = self._group, []
        if not group:
            return
        try:
            self._commit_sending(group, now)
        except Exception as exc:  # nothing of the group was sent: each is retried as it says
            log.exception("%d deliveries: the sending commit failed", len(group))
            for entry in group:
                stats.outcomes[self._failure_guarded(entry.action, now, exc)] += 1
            return
        for i, entry in enumerate(group):
            following = group[i + 1].prepared if i + 1 < len(group) else None
            try:
                outcome = self._send_prepared(entry, now, following, meanwhile)
            except Exception as exc:
                outcome = self._failure_guarded(entry.action, now, exc)
            stats.outcomes[outcome] += 1

    def _commit_sending(self, group: Sequence[_Grouped], now: float) -> None:
        """The group's points of no return, in one commit, with the *sent* still unrecorded."""
        marks = [(e.action.id, e.prepared.reference, e.channel.name == "email") for e in group]
        self.store.write(_mark_group_sending, marks, now, self._unrecorded)
        self._unrecorded = []  # committed with the group
        for entry in group:
            entry.committed = True

    def _send_prepared(
        self, entry: _Grouped, now: float, following: Any = None,
        meanwhile: Callable[[], bool] | None = None,
    ) -> str:  # fmt: skip
        """Send one delivery of a committed group (its *sent* goes with the next commit);
        `following`, the group's next, lets a channel start it early (SMTP PIPELINING), and
        `meanwhile` is work for the wait for its reply."""
        send_committed = getattr(entry.prepared, "send_committed", None)
        try:
            if send_committed is not None:
                result = send_committed(following, meanwhile)
            else:
                result = entry.prepared.send()
        except (DeliveryError, smtplib.SMTPDataError):
            raise  # refused before the dot: nothing delivered; retried or failed as it says
        except Exception as exc:  # the mark is committed: never send again, report it
            self.store.write(
                mark_action, entry.action.id, "unconfirmed", now,
                result=_clip(f"connection lost after {_commit_point(entry.channel)} ({_reason(exc)})"),
            )  # fmt: skip
            return "unconfirmed"
        self._unrecorded.append((entry.action.id, now, result))
        return "sent"

    def _record_sent(self) -> None:
        """Write the *sent* of the deliveries still waiting for a commit to carry it."""
        if not self._unrecorded:
            return
        try:
            self.store.write(_mark_sent, self._unrecorded)
            self._unrecorded = []
        except Exception:  # delivered: never retried; recover() settles them as in doubt
            log.exception(
                "%d sent actions: their status could not be recorded", len(self._unrecorded)
            )
            self._unrecorded = []

    def _close_channels(self) -> None:
        for channel in self.channels.values():
            try:
                channel.close()
            except Exception:  # a connection that will not close cleanly is dropped anyway
                log.warning("closing the %s channel failed", channel.name, exc_info=True)

    def _prefetch(self, batch: list[ActionRow]) -> None:
        """Load what the batch's deliveries (and its cancel_if conditions) need in a few queries,
        not a few per action."""
        needs_context = [a for a in batch if a.kind in self.channels]
        cancelling = {a.customer_id for a in batch if a.cancel_if}
        self._cache = {
            "profiles": self.store.read(
                load_profiles, {a.customer_id for a in needs_context} | cancelling
            ),
            "events": self.store.read(event_payloads, {a.event_id for a in needs_context}),
            "scores": self.store.read(
                scores_of, {(a.event_id, a.trigger_id) for a in needs_context}
            ),
        }
        self._prefetch_sends(needs_context)
        if cancelling:  # what cancel_if reads besides the events: state, segments, scores
            self._cache["states"] = self.store.read(load_states, cancelling)
            self._cache["segments"] = self.store.read(segments_of, sorted(cancelling))
            self._cache["cancel_scores"] = self._fetch_cancel_scores(
                [a for a in batch if a.cancel_if]
            )
        emails = [p.get("email") for p in self._cache["profiles"].values()]
        self._cache["suppressed"] = self.store.read(
            suppressions_for, [e for e in emails if isinstance(e, str)]
        )
        if self.erasure_salt is not None:
            addresses = [
                value
                for profile in self._cache["profiles"].values()
                for value in (profile.get("email"), profile.get("phone"))
                if isinstance(value, str) and value
            ]
            hashes = {address_hash(a, self.erasure_salt) for a in addresses}
            self._cache["erased"] = dict.fromkeys(self.store.read(suppressed_hashes, hashes))

    # -- one action --------------------------------------------------------------------------

    def _run_guarded(self, action: ActionRow, now: float) -> str | None:
        """`_run`, and if even recording its outcome fails, put the action back for later (None:
        the delivery joined the group, counted when the group is sent)."""
        try:
            return self._run(action, now)
        except Exception as exc:
            return self._store_failed(action, now, exc)

    def _failure_guarded(self, action: ActionRow, now: float, exc: Exception) -> str:
        """`_failure`, and if even recording it fails, put the action back for later."""
        try:
            return self._failure(action, now, exc)
        except Exception as again:
            return self._store_failed(action, now, again)

    def _store_failed(self, action: ActionRow, now: float, exc: Exception) -> str:
        """The store itself failed while recording an outcome: put the action back for later,
        else leave it claimed (or *sending*) for recover()."""
        log.error("action %s: could not record its outcome", action.id, exc_info=exc)
        try:
            self._retry_or_fail(action, now, f"{type(exc).__name__}: {exc}", True)
        except Exception:
            log.exception("action %s: left claimed; recover() releases it", action.id)
        return "error"

    def _run(self, action: ActionRow, now: float) -> str | None:
        kind = action.kind
        try:
            params = json.loads(action.params)
            if not isinstance(params, dict):
                raise _Fail(f"params: expected a JSON object (got {type(params).__name__})")
            cancelled_by = self._cancelled_by(action, now)
            if cancelled_by:
                self.store.write(mark_action, action.id, "cancelled", now, result=cancelled_by)
                return "cancelled"
            channel = self.channels.get(kind)
            if channel is not None:
                return self._deliver(action, params, channel, now)
            effects = self._database_effects(action, params)
            self.store.write(mark_action, action.id, "sent", now, result=kind, **effects)
            return "sent"
        except Exception as exc:
            return self._failure(action, now, exc)

    def _failure(self, action: ActionRow, now: float, exc: Exception) -> str:
        """Record what `exc` means for the action (failed, retried, throttled); the outcome."""
        kind = action.kind
        try:
            raise exc
        except (_Fail, TemplateError, BlockedTarget) as exc:
            self.store.write(mark_action, action.id, "failed", now, result=_reason(exc))
            return "failed"
        except DeliveryError as exc:
            if exc.retryable and exc.retry_after is not None:
                return self._provider_throttled(action, now, exc)
            return self._retry_or_fail(action, now, _reason(exc), exc.retryable, exc.retry_after)
        except (_Retry, OSError, smtplib.SMTPException, sa.exc.OperationalError) as exc:
            return self._retry_or_fail(action, now, _reason(exc), True)
        except (ValueError, TypeError, KeyError, LookupError, AttributeError) as exc:
            # Bad data in the action or its context (a malformed parameter, a value a filter
            # cannot take): the same input fails the same way, so retrying cannot help.
            self.store.write(mark_action, action.id, "failed", now, result=_reason(exc))
            return "failed"
        except Exception as exc:  # anything else may be passing trouble: retry, then fail
            log.exception("action %s (%s) raised", action.id, kind)
            return self._retry_or_fail(action, now, _reason(exc), True)

    def _deliver(
        self, action: ActionRow, params: dict[str, Any], channel: Channel, now: float
    ) -> str | None:
        """One delivery through `channel`, with the exactly-once bookkeeping around it."""
        customer = action.customer_id
        profile = self._cache.get("profiles", {}).get(customer, {"customer_id": customer})
        marketing = self._is_marketing(action.trigger_id)
        trigger = self.index.by_id.get(action.trigger_id)
        policy = trigger.policy_for(self.policy) if trigger is not None else self.policy
        consent = policy.consent_fields.get(channel.name, channel.consent_field)
        if marketing and consent and profile.get(consent) is not True:
            self.store.write(
                mark_action, action.id, "cancelled", now,
                result=f"no_consent: {consent} withdrawn before sending",
            )  # fmt: skip
            return "cancelled"
        held = self._held_back(action, channel.name, profile, marketing, now)
        if held is not None:
            return held
        if marketing:
            blocked = self._policy_blocks(action, channel.name, profile, trigger, policy, now)
            if blocked is not None:
                return blocked
        if self._throttled(action, channel.name, now):
            return "throttled"
        prepare = getattr(channel, "prepare", None)
        if prepare is not None and channel.settle_in_doubt == "unconfirmed" and self.group_size > 1:
            self._join_group(action, params, channel, prepare, profile, marketing)
            return None
        committed = False

        def mark_sending(reference: str | None) -> None:
            nonlocal committed
            self.store.write(
                _mark_sending, action.id, now, reference, channel.name == "email",
                self._unrecorded,
            )  # fmt: skip
            self._unrecorded = []  # committed with this one
            committed = True
            self._count_send(action, channel.name)

        delivery = self._delivery(action, params, profile, marketing, mark_sending)
        try:
            result = channel.send(delivery)
        except (DeliveryError, smtplib.SMTPDataError):
            raise  # the provider refused it: nothing was delivered, retried or failed as it says
        except Exception as exc:
            if committed:  # after the point of no return: never send again, report it
                self.store.write(
                    mark_action, action.id, "unconfirmed", now,
                    result=_clip(f"connection lost after {_commit_point(channel)} ({_reason(exc)})"),
                )  # fmt: skip
                return "unconfirmed"
            raise
        if not committed:  # a channel without a point of no return: it counts once sent
            self._count_send(action, channel.name)
        if committed and channel.settle_in_doubt == "unconfirmed":
            # Its *sent* goes with the next commit: until then a crash leaves it unconfirmed.
            self._unrecorded.append((action.id, now, result))
            return "sent"
        try:
            self.store.write(mark_action, action.id, "sent", now, result=result)
        except Exception:  # delivered: never retried; recover() settles it as in doubt
            log.exception("action %s: sent, but its status could not be recorded", action.id)
        return "sent"

    def _join_group(
        self, action: ActionRow, params: dict[str, Any], channel: Channel,
        prepare: Callable[[Delivery], PreparedDelivery], profile: Mapping[str, Any],
        marketing: bool,
    ) -> None:  # fmt: skip
        """Prepare the delivery (render, build its bytes: failures are the action's own) and put
        it in the group that `_send_group` commits *sending* together."""
        entry = _Grouped(action, channel)
        delivery = self._delivery(action, params, profile, marketing, entry.before_commit)
        entry.prepared = prepare(delivery)
        self._group.append(entry)
        self._count_send(action, channel.name)  # the batch's later sends count it

    def _delivery(
        self, action: ActionRow, params: dict[str, Any], profile: Mapping[str, Any],
        marketing: bool, before_commit: Callable[[str | None], None],
    ) -> Delivery:  # fmt: skip
        return Delivery(
            action_id=action.id, idempotency_key=action.idempotency_key,
            customer_id=action.customer_id, trigger_id=action.trigger_id,
            event_id=action.event_id, variant=action.variant, params=params, profile=profile,
            event=self._cache.get("events", {}).get(action.event_id) or {},
            scores=self._cache.get("scores", {}).get((action.event_id, action.trigger_id), {}),
            marketing=marketing, before_commit=before_commit,
            tracking=self._tracking(action.trigger_id),
        )  # fmt: skip

    # -- the suppression policy at the send moment (issue 16) ---------------------------------

    def _prefetch_sends(self, deliveries: list[ActionRow]) -> None:
        """The sends the batch's marketing deliveries count their caps from, in one query: every
        send of those customers due within their longest window (and local day) of any of them."""
        marketing = [a for a in deliveries if self._is_marketing(a.trigger_id)]
        if not marketing:
            return
        reach = LOCAL_DAY_REACH
        for action in marketing:
            trigger = self.index.by_id.get(action.trigger_id)
            policy = trigger.policy_for(self.policy) if trigger is not None else self.policy
            for cap in policy.caps.values():
                reach = max([reach, *(window for window, _ in cap.rolling)])
        dues = [_due(a) for a in marketing]
        start, end = min(dues) - reach, max(dues) + LOCAL_DAY_REACH
        try:
            times = self.store.read(send_times, {a.customer_id for a in marketing}, start, end)
        except Exception:  # each send then counts its own caps in the store
            log.warning("prefetch of the sends of %d actions failed", len(marketing), exc_info=True)
            return
        self._cache["sends"] = {"range": (start, end), "times": times}

    def _count_send(self, action: ActionRow, channel: str) -> None:
        """A send of this batch reached its point of no return: its later ones count it."""
        sends = self._cache.get("sends")
        if sends is not None:
            sends["times"].setdefault((action.customer_id, channel), []).append(_due(action))

    def _policy_blocks(
        self, action: ActionRow, channel: str, profile: Mapping[str, Any],
        trigger: Trigger | None, policy: SuppressionPolicy, now: float,
    ) -> str | None:  # fmt: skip
        """Quiet hours (put back to their end, or cancelled for a trigger that drops), then the
        channel's caps from what was really sent; the outcome, or None when the send may go."""
        zone = customer_zone(profile, self.default_zone)
        mode = trigger.spec.quiet_hours if trigger is not None else "defer"
        quiet_until = (
            quiet_hours_end(now, zone, policy.quiet_start, policy.quiet_end)
            if mode != "ignore"
            else None
        )
        if quiet_until is not None:
            local = datetime.fromtimestamp(now, zone).strftime("%H:%M")
            window = f"{policy.quiet_start:%H:%M}-{policy.quiet_end:%H:%M}"
            if mode == "drop":
                reason = f"quiet_hours: {local} (local) is inside quiet hours {window}; this trigger drops"
                self.store.write(mark_action, action.id, "cancelled", now, result=reason)
                return "cancelled"
            until = datetime.fromtimestamp(quiet_until, zone).isoformat()
            self.store.write(
                defer_action, action.id, quiet_until,
                f"quiet_hours: {local} (local) is inside quiet hours {window}; deferred to {until}",
            )  # fmt: skip
            return "deferred"
        cap = policy.caps.get(channel)
        # The caps count when each send was due to go, deferrals included (engine.store.sends).
        due = _due(action)
        blocked = self._cap_binds(action.customer_id, channel, cap, zone, due) if cap else None
        if blocked is None:
            return None
        self.store.write(
            mark_action, action.id, "cancelled", now, result=f"frequency_cap: {blocked}"
        )
        return "cancelled"

    def _cap_binds(
        self, customer: str, channel: str, cap: ChannelCap, zone: ZoneInfo, now: float
    ) -> str | None:
        """Why `cap` holds a send of `channel` to `customer` due at `now`, or None: the sends
        due in its local day and in the rolling windows that end at it."""
        windows = [(now - window, now + 1e-6) for window, _ in cap.rolling]
        if cap.per_local_day is not None:
            windows.insert(0, local_day_bounds(now, zone))
        if not windows:
            return None
        sends = self._cache.get("sends")
        if sends is not None and all(
            sends["range"][0] <= a and b <= sends["range"][1] for a, b in windows
        ):  # the batch's prefetch covers these windows
            mine = sends["times"].get((customer, channel), ())
            counts = [sum(1 for t in mine if a <= t < b) for a, b in windows]
        else:
            counts = self.store.read(sends_in_windows, customer, channel, windows)
        if cap.per_local_day is not None:
            sent = counts.pop(0)
            if sent >= cap.per_local_day:
                day = datetime.fromtimestamp(now, zone).date().isoformat()
                return (
                    f"{sent} {channel} already sent on {day} (local; cap {cap.per_local_day} a day)"
                )
        for (window, limit), sent in zip(cap.rolling, counts, strict=True):
            if sent >= limit:
                span = format_duration(timedelta(seconds=window))
                return f"{sent} {channel} sent in the last {span} (cap {limit})"
        return None

    # -- suppression list and the deliverability guard (issue 14) -----------------------------

    def _held_back(
        self, action: ActionRow, channel: str, profile: Mapping[str, Any], marketing: bool,
        now: float,
    ) -> str | None:  # fmt: skip
        """A marketing pause (the send is put back, untouched) or a suppressed address (the
        send is cancelled as ``suppressed: bounced`` …) that holds this delivery back."""
        if marketing and self._marketing_paused(now):
            self.store.write(defer_action, action.id, now + PAUSE_RECHECK, PAUSED)
            return "paused"
        if self._erased(profile, channel):
            self.store.write(mark_action, action.id, "cancelled", now, result="suppressed: erased")
            return "cancelled"
        address = profile.get("email") if channel == "email" else None
        if not isinstance(address, str) or not address:
            return None
        held = self._cache.get("suppressed")
        if held is None:  # no prefetch (a single action, or the prefetch failed)
            held = self.store.read(suppressions_for, [address])
        entry = held.get(normalise_email(address))
        reason = entry.reason if entry is not None and entry.active(now) else None
        if reason is None or (reason == "complained" and not marketing):
            return None  # a complaint ends marketing; a receipt or a reset still goes
        self.store.write(mark_action, action.id, "cancelled", now, result=f"suppressed: {reason}")
        return "cancelled"

    def _erased(self, profile: Mapping[str, Any], channel: str) -> bool:
        """Whether the address this channel would use belongs to an erased customer."""
        field = {"email": "email", "sms": "phone"}.get(channel)
        address = profile.get(field) if field else None
        if self.erasure_salt is None or not isinstance(address, str) or not address:
            return False
        digest = address_hash(address, self.erasure_salt)
        erased = self._cache.get("erased")
        if erased is None:  # no prefetch (a single action, or the prefetch failed)
            return bool(self.store.read(suppressed_hashes, [digest]))
        return digest in erased

    def _marketing_paused(self, now: float) -> bool:
        if self._paused_at != now:  # asked once per run
            self._paused, self._paused_at = self.store.read(marketing_pause) is not None, now
        return self._paused

    # -- send rates --------------------------------------------------------------------------

    def _throttled(self, action: ActionRow, channel: str, now: float) -> bool:
        """Whether the channel's send rate (or a provider's wait this run) holds the action back;
        if so it is put back for its slot, untouched, with no attempt counted."""
        if self._waits_at != now:  # a new run: what was learnt at another time no longer holds
            self._waits, self._waits_at = {}, now
        rate = self.send_rate.rate(channel)
        queued = self._waits.get(channel)
        if queued is None:
            if rate is None:
                return False
            try:
                wait = self.send_rate.acquire(channel, now)
            except Exception as exc:  # the shared limiter is down: wait, never send unlimited
                log.warning("send rate of %s could not be asked", channel, exc_info=True)
                reason = f"{THROTTLED}{channel} rate limiter unavailable ({_reason(exc)})"
                self.store.write(defer_action, action.id, now + LIMITER_RETRY, _clip(reason))
                return True
            if wait <= 0:
                return False
            queued = (wait, 0)
        wait, behind = queued
        self._waits[channel] = (wait, behind + 1)
        # The actions held back in one run take the slots after the wait, one interval apart.
        at = now + wait + behind * (rate.interval if rate is not None else 0.0)
        why = f"{channel} rate {rate}" if rate is not None else f"{channel} provider asked to wait"
        self.store.write(defer_action, action.id, at, f"{THROTTLED}{why}")
        return True

    def _provider_throttled(self, action: ActionRow, now: float, exc: DeliveryError) -> str:
        """The provider said when to come back: put the action back for then, no attempt
        counted — until `throttle_deadline` after its due time, when it counts as one."""
        wait = max(float(exc.retry_after or 0.0), MIN_PROVIDER_WAIT)
        if now - action.due_at > self.throttle_deadline:
            return self._retry_or_fail(action, now, _reason(exc), True, wait)
        channel = self.channels[action.kind].name
        if self._waits_at != now:
            self._waits, self._waits_at = {}, now
        self._waits[channel] = (wait, 1)  # the channel's other sends of this run wait too
        reason = _clip(f"{THROTTLED}{_reason(exc)} (provider asked to wait {wait:g}s)")
        self.store.write(defer_action, action.id, now + wait, reason)
        return "throttled"

    def _database_effects(self, action: ActionRow, params: dict[str, Any]) -> dict[str, Any]:
        customer, kind, key = action.customer_id, action.kind, action.idempotency_key
        if kind == "add_to_segment":
            return {"segment": (customer, params["segment"], key)}
        if kind == "remove_from_segment":
            return {"remove_segment": (customer, params["segment"])}
        if kind == "update_profile":
            changes = params.get("set")
            if not isinstance(changes, dict):
                raise _Fail("update_profile needs set: {attribute: value, ...}")
            return {"profile": (customer, changes)}
        if kind == "create_task":
            details = {k: v for k, v in params.items() if k != "title"}
            task = {"idempotency_key": key, "customer_id": customer, "trigger_id": action.trigger_id,
                    "title": str(params["title"]), "details": json.dumps(details, default=str)}  # fmt: skip
            return {"task": task}
        raise _Fail(f"unknown action kind {kind!r}")

    def _cancelled_by(self, action: ActionRow, now: float) -> str | None:
        """Why `cancel_if` holds: a later event of the customer with which it passes, or (with no
        such event) the customer's profile, state and scores at the due time; else None."""
        if not action.cancel_if:
            return None
        condition = self._cancel_condition(action.cancel_if)
        customer = action.customer_id
        profile, state = self._customer_context(customer)
        scores = self._cancel_scores(action, condition)
        zone = customer_zone(profile, self.default_zone)
        # What happened up to the moment the action fell due decides, however late it runs.
        until = min(now, action.due_at)
        for event in self.store.read(customer_events, customer, action.trigger_at, until):
            fields = json.loads(event.payload)
            ctx = EvaluationContext(
                event.event_type, fields, profile, state, scores, event.occurred_at, zone
            )
            if condition.check(ctx) is Outcome.PASSED:
                at = datetime.fromtimestamp(event.occurred_at, UTC).isoformat()
                return f"cancelled by {event.event_type} at {at}"
        # Attribute, behavior and score conditions need no event: ask them at the due time.
        ctx = EvaluationContext("", {}, profile, state, scores, until, zone)
        if condition.check(ctx) is Outcome.PASSED:
            at = datetime.fromtimestamp(until, UTC).isoformat()
            return f"cancelled by cancel_if ({condition.kind}) at {at}"
        return None

    def _customer_context(self, customer: str) -> tuple[dict[str, Any], CustomerState]:
        """The profile (with its segments, as the processor shows it) and state of `customer`."""
        profiles = self._cache.get("profiles")
        if profiles is None or customer not in profiles:
            profiles = self.store.read(load_profiles, {customer})
        profile = dict(profiles.get(customer) or {"customer_id": customer})
        states = self._cache.get("states")
        if states is None:  # no prefetch (a single action, or the prefetch failed)
            states = self.store.read(load_states, {customer})
        segments = self._cache.get("segments")
        if segments is None:
            segments = self.store.read(segments_of, [customer])
        if segments.get(customer):
            profile["segments"] = segments[customer]
        return profile, CustomerState.from_json(customer, states.get(customer))

    def _cancel_scores(
        self, action: ActionRow, condition: Condition
    ) -> Mapping[str, ScoreValue | None]:
        if not condition.score_models():
            return {}
        fetched = self._cache.get("cancel_scores")
        if fetched is None:
            fetched = self._fetch_cancel_scores([action])
        return fetched.get(action.customer_id, {})

    def _fetch_cancel_scores(
        self, batch: list[ActionRow]
    ) -> dict[str, dict[str, ScoreValue | None]]:
        """The scores the batch's cancel conditions read, in one call to the score source (none
        configured, or it failed: every score is missing, and each condition's on_missing says)."""
        wanted: dict[str, set[str]] = {}
        for action in batch:
            if not action.cancel_if:
                continue
            try:
                models = self._cancel_condition(action.cancel_if).score_models()
            except (_Fail, ValueError):  # that action fails on its own, with the reason
                continue
            if models:
                wanted.setdefault(action.customer_id, set()).update(models)
        if self.scores is None or not wanted:
            return {}
        try:
            return self.scores.fetch(wanted.keys(), set().union(*wanted.values()))
        except Exception:  # a scoring outage must not stop deliveries: the scores are missing
            log.warning("scores for cancel_if could not be fetched", exc_info=True)
            return {}

    def _cancel_condition(self, text: str) -> Any:
        condition = self._cancel_conditions.get(text)
        if condition is None:
            errors: list[ConditionError] = []
            condition = compile_condition(json.loads(text), ("cancel_if",), errors)
            if condition is None:
                raise _Fail("; ".join(e.message for e in errors))
            self._cancel_conditions[text] = condition
        return condition

    def _tracking(self, trigger_id: str) -> bool:
        trigger = self.index.by_id.get(trigger_id)
        return trigger is None or trigger.spec.tracking

    def _is_marketing(self, trigger_id: str) -> bool:
        trigger = self.index.by_id.get(trigger_id)
        return trigger is None or not trigger.transactional

    def _retry_or_fail(
        self,
        action: ActionRow,
        now: float,
        error: str,
        retryable: bool,
        retry_after: float | None = None,
    ) -> str:
        """Fail the action, or schedule its next attempt: when the provider said (`retry_after`
        seconds), else with exponential backoff and jitter."""
        attempts = action.attempts + 1
        if not retryable or attempts >= self.max_attempts:
            self.store.write(
                mark_action,
                action.id,
                "failed",
                now,
                result=_clip(f"{error} (after {attempts} attempt(s))"),
            )
            return "failed"
        delay = self.retry_base * 2 ** (attempts - 1) * (0.5 + random.random())
        if retry_after is not None and retry_after >= 0:
            delay = retry_after
        self.store.write(retry_action, action.id, attempts, now + delay, _clip(error))
        return "retried"


def _mark_sending(conn: Connection, action_id: int, now: float, reference: str | None,
                  email: bool, delivered: Sequence[tuple[int, float, str]] = ()) -> None:  # fmt: skip
    """The point of no return, with an email's Message-ID remembered for providers' webhooks;
    the *sent* of earlier deliveries (`delivered`) in the same transaction."""
    _mark_group_sending(conn, [(action_id, reference, email)], now, delivered)


def _mark_group_sending(conn: Connection, marks: Sequence[tuple[int, str | None, bool]],
                        now: float, delivered: Sequence[tuple[int, float, str]] = ()) -> None:  # fmt: skip
    """A group's points of no return: (action id, reference, is email) each, in one transaction,
    with the *sent* of earlier deliveries."""
    _mark_sent(conn, delivered)
    mark_actions(
        conn, [(action_id, "sending", now, reference) for action_id, reference, _ in marks]
    )
    messages = [
        (ref, action_id) for action_id, ref, email in marks if email and ref and ref.startswith("<")
    ]
    record_messages(conn, messages, now)


@dataclass
class _Grouped:
    """A prepared delivery waiting for its group's *sending* commit."""

    action: ActionRow
    channel: Channel
    prepared: Any = None  # the channel's PreparedDelivery, once prepared
    committed: bool = False

    def before_commit(self, reference: str | None) -> None:
        """The transport's point of no return: only ever after the group's commit."""
        if not self.committed:
            raise RuntimeError(f"action {self.action.id}: send before its sending commit")


def _mark_sent(conn: Connection, delivered: Sequence[tuple[int, float, str]]) -> None:
    """Record deliveries as *sent*: (action id, now, the channel's result) each."""
    mark_actions(conn, [(action_id, "sent", now, result) for action_id, now, result in delivered])


def _due(action: ActionRow) -> float:
    """When an action was due to go: its due time, or the later time it was put back to."""
    return max(action.due_at, action.next_attempt_at)


def _commit_point(channel: Channel) -> str:
    """The point of no return of `channel`, as people say it."""
    return "the end of data" if channel.name == "email" else f"the {channel.name} request was sent"


def _reason(exc: BaseException) -> str:
    """A failure's reason as stored: the exception's type and message, bounded and storable."""
    text = (
        str(exc)
        if isinstance(exc, _Fail | TemplateError | BlockedTarget | DeliveryError)
        else f"{type(exc).__name__}: {exc}"
    )
    return _clip(text)


def _clip(text: str, limit: int = 1000) -> str:
    # NUL and lone surrogates cannot be stored in PostgreSQL text; a reason is for people anyway.
    cleaned = text.replace("\x00", "\\0").encode("utf-8", "replace").decode("utf-8")
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"

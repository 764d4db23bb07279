"""Merging an anonymous customer's decision state into the known customer's (identify / alias).

The processor owns customers' state in memory, so it merges them when it reaches the linking
message (``identify`` with both ids, ``alias``): `merge_states` is that merge, pure; the rows
move in the same transaction (`engine.store.identity.merge_customer`, whose docstring holds the
conflict rules). A linking event is only honoured when the identity table holds that very link
(`MERGE_KEY` in its properties names the source, and the link's message is the event): an
event posted to ``/v1/events`` with the same property cannot merge two customers.
"""

from __future__ import annotations

from collections import deque

from engine.decisions.state import CustomerState, History, StateLimits

__all__ = ["LINK_EVENT_TYPES", "MERGE_KEY", "merge_states"]

LINK_EVENT_TYPES = frozenset({"identify", "alias"})
MERGE_KEY = "merge_from"  # the property of a linking event naming the id merged into it


def merge_states(
    target: CustomerState, source: CustomerState, limits: StateLimits
) -> CustomerState:
    """The target's state with the source's history in it: events, fires and sends in time order
    (then trimmed to `limits`), fire counts added, seen event ids kept (the target's last)."""
    merged = CustomerState(target.customer_id)
    for event_type in sorted(set(target.events) | set(source.events)):
        history = History([], [])
        for part in (target.events.get(event_type), source.events.get(event_type)):
            if part is not None:
                for at, amount in zip(part.times, part.amounts, strict=True):
                    history.add(at, amount)
        history.trim(limits)
        merged.events[event_type] = history
    for trigger in sorted(set(target.fires) | set(source.fires)):
        times = sorted([*target.fires.get(trigger, ()), *source.fires.get(trigger, ())])
        merged.fires[trigger] = deque(times[-limits.max_fires :])
    for trigger in set(target.fire_counts) | set(source.fire_counts):
        merged.fire_counts[trigger] = target.fire_counts.get(trigger, 0) + source.fire_counts.get(
            trigger, 0
        )
    for channel in sorted(set(target.sends) | set(source.sends)):
        merged.sends[channel] = deque(
            sorted([*target.sends.get(channel, ()), *source.sends.get(channel, ())])
        )
    merged.seen_event_ids.extend(source.seen_event_ids)
    merged.seen_event_ids.extend(target.seen_event_ids)
    # The newer refreshed score of each model wins (a score describes the person, not the id).
    for model in set(target.last_scores) | set(source.last_scores):
        candidates = [
            s for s in (target.last_scores.get(model), source.last_scores.get(model)) if s
        ]
        merged.last_scores[model] = max(candidates, key=lambda score: score[2])
    return merged

"""Deciding one event: triggers' verdicts, suppression, per-customer state, time zones. Pure."""

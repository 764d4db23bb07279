"""Erasing a customer (GDPR Art. 17): ``DELETE /v1/customers/{id}`` and ``nudge customers erase ID``.

In this order, so that nothing can bring the person back half-way:

1. the engine database, in one transaction (engine.store.erasure): profile, state, inbox events,
   segment memberships, identity links and their dead letters removed; decisions, actions and
   tasks kept for accounting with the id replaced by `customer_hash` (pending actions
   cancelled); the email address and phone number put on the suppression list as salted hashes,
   so that a re-import is refused (pipelines.profiles_import) and never mailed. Removing the
   inbox events first also means the lake sync cannot copy them to the lake again;
2. the lake: every partition file holding the customer's events rewritten without them, and the
   customer's row of the customer table dropped (`EventLake.remove_customers`);
3. outbox files: the files the customer's actions wrote, and any other holding the address;
4. further steps given by the caller (`hooks`: the Feast online rows, which the engine cannot
   reach itself — pipelines.online_erasure);
5. the audit entry: when, the customer's hash, who asked, what each step removed.

Every step is idempotent: when one fails (a file system error), the error says so and erasing
again completes it — the database part then finds nothing left and the audit has two entries.
Hashes are HMAC-SHA256 with a secret salt (NUDGE_ERASURE_SALT, else derived from
NUDGE_SIGNING_SECRET): without it, a hash of an email address is guessable from a list of them.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.lake import EventLake
from engine.store import EngineDB
from engine.store.erasure import erase_rows, record_erasure, suppress

__all__ = ["Eraser", "ErasureHook", "address_hash", "customer_hash"]

# A further step: given the customer id, erase what it holds; returns counts for the audit.
ErasureHook = Callable[[str], dict[str, Any]]


def _digest(kind: str, value: str, salt: bytes) -> str:
    return hmac.new(salt, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()


def customer_hash(customer_id: str, salt: bytes) -> str:
    """The pseudonym an erased customer's decisions and actions keep (``erased:`` + 32 hex)."""
    return "erased:" + _digest("customer", customer_id, salt)[:32]


def address_hash(address: str, salt: bytes) -> str:
    """The suppression-list hash of an email address or phone number (normalised first)."""
    text = address.strip().lower()
    if "@" not in text:  # a phone number: its digits and a leading +
        text = ("+" if text.startswith("+") else "") + "".join(c for c in text if c.isdigit())
    return _digest("address", text, salt)


@dataclass
class Eraser:
    """Erases customers from the engine database, the lake, the outbox and what `hooks` reach."""

    store: EngineDB
    salt: bytes
    lake_dir: Path | None = None
    outbox_dir: Path | None = None
    hooks: Sequence[tuple[str, ErasureHook]] = field(default_factory=tuple)

    def __call__(self, customer_id: str, requested_by: str = "api") -> dict[str, Any]:
        """Erase one customer; returns what was removed (the audit entry's content)."""
        now = time.time()
        pseudonym = customer_hash(customer_id, self.salt)
        with self.store.begin() as conn:
            rows = erase_rows(conn, customer_id, pseudonym, now)
            hashes = {address_hash(a, self.salt): kind for kind, a in rows.addresses.items()}
            suppress(conn, hashes, "erased", now)
        removed: dict[str, Any] = {**rows.counts, "suppressed_addresses": len(hashes)}
        if self.lake_dir is not None:
            events, files = EventLake(self.lake_dir).remove_customers([customer_id])
            removed |= {"lake_events": events, "lake_files_rewritten": files}
        if self.outbox_dir is not None:
            removed["outbox_files"] = _erase_outbox(
                self.outbox_dir, rows.outbox_files, list(rows.addresses.values())
            )
        for name, hook in self.hooks:
            removed[name] = hook(customer_id)
        with self.store.begin() as conn:
            entry = record_erasure(conn, pseudonym, requested_by, removed, time.time())
        return {"customer": pseudonym, "erased_at": now, "audit_id": entry, "removed": removed}


def _erase_outbox(directory: Path, named: list[str], addresses: list[str]) -> int:
    """Delete the outbox files the customer's actions wrote, and any that holds an address."""
    if not directory.exists():
        return 0
    gone = 0
    for name in named:
        path = directory / Path(name).name
        if path.is_file():
            path.unlink()
            gone += 1
    needles = [a.lower().encode() for a in addresses if a]
    if needles:
        for path in directory.iterdir():
            if path.is_file() and any(n in path.read_bytes().lower() for n in needles):
                path.unlink()
                gone += 1
    return gone

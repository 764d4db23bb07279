"""Benchmark: provider feedback events per second through ``POST /webhooks/sendgrid``.

SendGrid posts its Event Webhook in batches (up to about a thousand events a POST); each event
is matched to its action by Message-ID, stored in the inbox and applied to the suppression list.
The engine database holds `--events` sent emails (actions with their recorded Message-IDs and
profiles); one signed POST carries one event per email (nine in ten ``delivered``, one in ten
a hard ``bounce``), served by uvicorn on loopback. Measured: the wall time of the POST and
events/s.

    uv run python bench/webhooks.py [--events 1000] [--db sqlite|postgres]

Measured on the 2-core machine shared with other work (load 4-5), 1,000 events a POST, as one
batch (three queries for the lookups, one ``accept_events``, the provider event ids and the
deliveries' list changes in a few statements of one transaction, bounces one by one): SQLite
2,300-3,200 events/s (0.3-0.4 s a POST), PostgreSQL 660-1,180 events/s (0.85-1.5 s). One event
at a time (a read, an accept and a list transaction each) it was 384 events/s on SQLite (2.6 s).
"""

from __future__ import annotations

import argparse
import base64
import json
import tempfile
import time
import uuid

import httpx
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI

from engine.runtime.email_webhooks import WebhookConfig, email_webhook_router
from engine.store import EngineDB
from engine.store.customers import upsert_profiles
from engine.store.schema import actions
from engine.store.suppressions import record_message
from tests.conftest import POSTGRES_URL
from tests.support import LocalServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()
    n = args.events
    schema = None
    if args.db == "postgres":
        schema = "bench_" + uuid.uuid4().hex[:8]
        store = EngineDB.open(POSTGRES_URL, schema=schema)
    else:
        store = EngineDB.open(f"sqlite:///{tempfile.mkdtemp()}/engine.db")
    try:
        print(run(store, n, args.db))
    finally:
        store.dispose()
        if schema:
            admin = sa.create_engine(POSTGRES_URL)
            with admin.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


def run(store: EngineDB, n: int, db: str) -> str:
    profiles = {f"c{i}": {"customer_id": f"c{i}", "email": f"u{i}@example.com",
                          "consent_email": True} for i in range(n)}  # fmt: skip
    store.write(upsert_profiles, profiles, 0.0)
    with store.begin() as conn:
        conn.execute(actions.insert(), [
            {"id": i + 1, "idempotency_key": f"k{i}", "event_id": f"e{i}", "customer_id": f"c{i}",
             "trigger_id": "bench", "action_index": 0, "kind": "send_email", "params": "{}",
             "due_at": 0.0, "trigger_at": 0.0, "status": "sent"}
            for i in range(n)
        ])  # fmt: skip
        for i in range(n):
            record_message(conn, f"<m{i}@example.com>", i + 1, 0.0)
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    config = WebhookConfig(b"bench", sendgrid_public_key=base64.b64encode(der).decode())
    app = FastAPI()
    app.include_router(email_webhook_router(store, config))
    events = [
        {"email": f"u{i}@example.com", "timestamp": 1767225600 + i, "smtp-id": f"<m{i}@example.com>",
         "event": "bounce" if i % 10 == 0 else "delivered", "type": "bounce",
         "sg_event_id": f"sg-{i}"}
        for i in range(n)
    ]  # fmt: skip
    body = json.dumps(events).encode()
    stamp = str(int(time.time()))
    signature = base64.b64encode(key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256())))
    headers = {"X-Twilio-Email-Event-Webhook-Signature": signature.decode(),
               "X-Twilio-Email-Event-Webhook-Timestamp": stamp}  # fmt: skip
    with LocalServer(app) as server:
        started = time.perf_counter()
        response = httpx.post(server.url + "/webhooks/sendgrid", content=body, headers=headers,
                              timeout=600)  # fmt: skip
        seconds = time.perf_counter() - started
    response.raise_for_status()
    counts = response.json()
    assert counts["accepted"] == n, counts
    return (
        f"{db}: {n:,} events in one POST: {seconds:.2f} s, {n / seconds:,.0f} events/s ({counts})"
    )


if __name__ == "__main__":
    main()

"""The `score-batch` flow: refresh every known customer's scores into the engine.

Score conditions read scores when an event arrives, and a churned customer sends none; a
`score_crosses` trigger needs to be told when a score moves. This flow asks the scoring service
for every customer the engine knows (profiles and states, 1,000 ids per request through the
engine's own `ScoreClient`: the same timeouts, retries and circuit breaker) and writes one
``score_refreshed`` event per customer into the engine's inbox through `accept_events` — so the
refresh is idempotent (the event id is the refresh's id and the customer), keeps per-customer
order with the customer's other events, follows identity merges and erasure, and the processor
compares each score with the last one it kept (engine.decisions.predictive).

`nudge pipeline deploy` schedules it (NUDGE_SCORE_CRON) and the `train` flow runs it after
training when a scoring service is configured.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger

__all__ = ["refresh_events", "score_batch"]

PAGE = 1000


@flow(name="score-batch")
def score_batch(
    engine_url: str | None = None,
    scoring_url: str | None = None,
    models: list[str] | None = None,
    page_size: int = PAGE,
    refresh_id: str | None = None,
) -> dict[str, Any]:
    """Score every known customer with `models` (default: the model definitions) and hand the
    scores to the engine; returns counts (customers, refreshed, without a score, seconds)."""
    from nudge.settings import Settings

    settings = Settings()
    return refresh_scores(
        engine_url or settings.engine_url,
        scoring_url or settings.scoring_url,
        models,
        api_key=settings.api_key.get_secret_value() if settings.api_key else None,
        page_size=page_size,
        refresh_id=refresh_id,
        log=get_run_logger().info,
    )


def refresh_scores(
    engine_url: str,
    scoring_url: str | None,
    models: list[str] | None,
    *,
    api_key: str | None = None,
    page_size: int = PAGE,
    refresh_id: str | None = None,
    log: Callable[[str], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """The flow's work, callable without Prefect (the CLI shows progress through `progress`)."""
    from engine.errors import UserError
    from engine.runtime.inbox import accept_events
    from engine.runtime.scoring import ScoreClient
    from engine.store import EngineDB
    from engine.store.timers import audience_page

    if not scoring_url:
        raise UserError("score-batch needs the scoring service: set NUDGE_SCORING_URL")
    if models is None:
        from models.definitions import load_definitions

        models = [d.name for d in load_definitions()]
    started = time.perf_counter()
    refresh = refresh_id or uuid.uuid4().hex[:12]
    store = EngineDB.open(engine_url)
    client = ScoreClient(scoring_url, api_key=api_key)
    customers = refreshed = unscored = 0
    cursor = ""
    try:
        while True:
            ids = store.read(audience_page, cursor, page_size)
            if not ids:
                break
            cursor = ids[-1]
            scores = client.fetch(ids, models)
            events = refresh_events(refresh, scores, time.time())
            accept_events(store, events, source="score_batch")
            customers += len(ids)
            refreshed += len(events)
            unscored += len(ids) - len(events)
            if progress is not None:
                progress(customers)
            if len(ids) < page_size:
                break
    finally:
        store.dispose()
    seconds = time.perf_counter() - started
    if log is not None:
        log(
            f"score-batch {refresh}: {customers} customers, {refreshed} refreshed in {seconds:.1f} s"
        )
    return {"refresh_id": refresh, "models": models, "customers": customers,
            "refreshed": refreshed, "unscored": unscored, "seconds": round(seconds, 2)}  # fmt: skip


def refresh_events(
    refresh_id: str, scores: dict[str, dict[str, Any]], now: float
) -> list[dict[str, Any]]:
    """One ``score_refreshed`` event per customer with at least one known score."""
    stamp = datetime.fromtimestamp(now, UTC).isoformat()
    events = []
    for customer, by_model in scores.items():
        known = {
            model: {
                "value": score.value,
                "model_version": score.model_version,
                **({"features_at": score.features_at} if score.features_at is not None else {}),
            }
            for model, score in by_model.items()
            if score is not None and score.known
        }
        if not known:
            continue
        digest = hashlib.sha256(customer.encode()).hexdigest()[:20]
        events.append({
            "event_id": f"score:{refresh_id}:{digest}", "customer_id": customer,
            "event_type": "score_refreshed", "timestamp": stamp, "source": "score_batch",
            "properties": {"scores": known, "refresh_id": refresh_id},
        })  # fmt: skip
    return events

"""The engine's client of the scoring service: batched, cached, patient, and never blocking.

One HTTP call asks for every (customer, model) score a batch of events needs, in requests of at
most 1,000 customers (the service's limit; a scheduled audience of 100,000 is 100 requests).
Calls have timeouts and retries with exponential backoff, per request; after repeated failures a
circuit breaker opens and the engine stops asking for a while, so score conditions follow their
`on_missing` rule at once instead of waiting. Answers are cached per (customer, model) with the
model version they came with.

The client asks only for models the service serves (`GET /v1/models`, cached and refreshed
periodically and after a 422): a trigger naming a model the service does not serve gets None for
it, and only that trigger follows its `on_missing` — one unknown name must not fail the request
(a 422) and take every other trigger's scores with it.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import httpx

from engine.dsl.conditions import ScoreValue
from nudge.settings import MAX_BATCH_LIMIT

__all__ = ["BreakerState", "CircuitBreaker", "ScoreClient", "ScoringUnavailable", "served_models"]

log = logging.getLogger(__name__)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class CircuitBreaker:
    """Opens after `failures` consecutive failures; lets one call through after `reset_after` s."""

    failures: int = 3
    reset_after: float = 10.0
    state: BreakerState = BreakerState.CLOSED
    _consecutive: int = 0
    _opened_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def allow(self, now: float) -> bool:
        with self._lock:
            if self.state is BreakerState.OPEN and now - self._opened_at >= self.reset_after:
                self.state = BreakerState.HALF_OPEN
            return self.state is not BreakerState.OPEN

    def record_success(self) -> None:
        with self._lock:
            self._consecutive = 0
            self.state = BreakerState.CLOSED

    def record_failure(self, now: float) -> None:
        with self._lock:
            self._consecutive += 1
            if self.state is BreakerState.HALF_OPEN or self._consecutive >= self.failures:
                self.state = BreakerState.OPEN
                self._opened_at = now


class ScoringUnavailable(Exception):
    """The scoring service could not say which models it serves (down, refused, not ours)."""


def served_models(http: httpx.Client) -> frozenset[str]:
    """The models the service at `http`'s base URL serves: ``GET /v1/models`` entries with a
    loaded version (``serving`` or ``serving_previous``; ``not_loaded`` ones would answer 503).

    Raises ScoringUnavailable with a one-line reason when the listing cannot be read.
    """
    try:
        response = http.get("/v1/models")
        response.raise_for_status()
        entries = response.json()["models"]
        return frozenset(
            str(entry["name"]) for entry in entries if entry.get("version") is not None
        )
    except httpx.HTTPStatusError as exc:
        raise ScoringUnavailable(f"GET /v1/models answered {exc.response.status_code}") from None
    except httpx.HTTPError as exc:
        raise ScoringUnavailable(f"{type(exc).__name__}: {exc}") from None
    except (ValueError, KeyError, TypeError) as exc:  # not the scoring service's listing
        raise ScoringUnavailable(f"unreadable GET /v1/models answer ({exc})") from None


class ScoreClient:
    """Fetches scores from `POST {base_url}/v1/scores`; missing answers come back as None.

    `models_ttl`: how long the list of served models is trusted (seconds; a 422 refreshes it at
    once). `max_batch`: customers per request (at most the service's 1,000). `cache_size`: the
    (customer, model) answers kept; beyond it, expired ones and then the oldest are dropped.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 2.0,
        retries: int = 2,
        backoff: float = 0.1,
        cache_ttl: float = 300.0,
        breaker: CircuitBreaker | None = None,
        transport: httpx.BaseTransport | None = None,
        models_ttl: float = 60.0,
        max_batch: int = MAX_BATCH_LIMIT,
        cache_size: int = 500_000,
    ) -> None:
        if not 1 <= max_batch <= MAX_BATCH_LIMIT:
            raise ValueError(f"max_batch: expected 1–{MAX_BATCH_LIMIT}, got {max_batch}")
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), timeout=timeout, headers=headers, transport=transport
        )
        self.retries = retries
        self.backoff = backoff
        self.cache_ttl = cache_ttl
        self.breaker = breaker or CircuitBreaker()
        self.models_ttl = models_ttl
        self.max_batch = max_batch
        self.cache_size = cache_size
        # Insertion order is age order (entries are re-inserted when refreshed): pruning drops
        # from the front.
        self._cache: dict[tuple[str, str], tuple[float, ScoreValue]] = {}
        self._lock = threading.Lock()
        self._served: frozenset[str] | None = None  # None: unknown, ask for every model
        self._served_checked = -float("inf")
        self._reported_unknown: set[str] = set()
        self.last_error: str | None = None
        self.calls = 0
        # Told of every HTTP attempt: (seconds, "ok" | "error"), and (0.0, "circuit_open") when
        # the breaker refuses to ask (engine.runtime.metrics counts and times them).
        self.on_request: Callable[[float, str], None] | None = None

    def fetch(
        self, customer_ids: Iterable[str], models: Iterable[str]
    ) -> dict[str, dict[str, ScoreValue | None]]:
        """Scores for every customer × model; None where the service could not answer, and for
        a model it does not serve (logged once per model, not per call).

        Customers not cached are asked for in requests of at most `max_batch`; each request has
        its own retries and passes the breaker on its own (once it opens, the rest of the
        customers get None at once), and its answers are cached as soon as it returns.
        """
        customers, wanted = sorted(set(customer_ids)), sorted(set(models))
        now = time.time()
        result: dict[str, dict[str, ScoreValue | None]] = {c: {} for c in customers}
        to_ask: list[str] = []
        cache = self._cache
        for customer in customers:
            row = result[customer]
            missing = False
            for model in wanted:
                cached = cache.get((customer, model))
                if cached and now - cached[0] < self.cache_ttl:
                    row[model] = cached[1]
                else:
                    row[model] = None
                    missing = True
            if missing:
                to_ask.append(customer)
        if not to_ask or not wanted:
            return result
        if not self.breaker.allow(time.time()):  # not even the listing: answer at once
            self._refused()
            return result
        asked = self._servable(wanted)
        for chunk in _chunks(to_ask, self.max_batch):
            if not asked:
                break
            if not self.breaker.allow(time.time()):
                self._refused()  # once for the rest of the customers, not once per request
                break
            answers, asked = self._ask_chunk(chunk, asked)
            self._remember(answers, now)
            for (customer, model), score in answers.items():
                result[customer][model] = score
        return result

    def served_models(self, *, refresh: bool = False) -> frozenset[str] | None:
        """The models the service serves (cached `models_ttl` s), or None when it cannot say
        (then every model is asked for, as a service without the listing expects)."""
        now = time.monotonic()
        with self._lock:
            if not refresh and now - self._served_checked < self.models_ttl:
                return self._served
            self._served_checked = now
        try:
            served: frozenset[str] | None = served_models(self._http)
        except ScoringUnavailable as exc:
            self.last_error = f"models listing: {exc}"
            served = None
        with self._lock:
            self._served = served
            if served is None:  # ask again soon, not only after a whole models_ttl
                self._served_checked = now - self.models_ttl + min(self.models_ttl, 5.0)
        return served

    def close(self) -> None:
        self._http.close()

    def _servable(self, wanted: list[str], *, refresh: bool = False) -> list[str]:
        """`wanted` without the models the service does not serve, each reported once."""
        served = self.served_models(refresh=refresh)
        if served is None:
            return wanted
        for model in wanted:
            if model not in served and model not in self._reported_unknown:
                self._reported_unknown.add(model)
                log.warning(
                    "the scoring service does not serve model %r (it serves %s): score "
                    "conditions on it follow their on_missing",
                    model,
                    ", ".join(sorted(served)) or "none",
                )
        self._reported_unknown -= served  # served again: reported again if it goes
        return [m for m in wanted if m in served]

    def _ask_chunk(
        self, customers: list[str], models: list[str]
    ) -> tuple[dict[tuple[str, str], ScoreValue], list[str]]:
        """One request's answers, and the models to ask for from now on (fewer after a 422
        whose refreshed listing drops some)."""
        answers, status = self._ask(customers, models)
        if status == 422:
            narrower = self._servable(models, refresh=True)
            if narrower != models:
                models = narrower
                if models:
                    answers, _ = self._ask(customers, models)
        return answers, models

    def _ask(
        self, customers: list[str], models: list[str]
    ) -> tuple[dict[tuple[str, str], ScoreValue], int | None]:
        """The parsed answer of one request (empty when it failed) and the 4xx status that
        ended it, if one did."""
        status: int | None = None
        for attempt in range(self.retries + 1):
            started = time.perf_counter()
            try:
                self.calls += 1
                response = self._http.post(
                    "/v1/scores", json={"customer_ids": customers, "models": models}
                )
                if response.status_code >= 500:
                    raise httpx.HTTPStatusError(
                        f"scoring service answered {response.status_code}",
                        request=response.request,
                        response=response,
                    )
                response.raise_for_status()
                parsed = _parse(response.json(), time.time())
                self.breaker.record_success()
                self.last_error = None
                self._observe(time.perf_counter() - started, "ok")
                return parsed, None
            except (httpx.HTTPError, ValueError) as exc:
                self._observe(time.perf_counter() - started, "error")
                self.last_error = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code < 500:
                    status = exc.response.status_code
                    break  # our request is wrong; retrying it as it is will not help
                if attempt < self.retries:
                    time.sleep(self.backoff * (2**attempt) * (0.5 + random.random()))
        self.breaker.record_failure(time.time())
        return {}, status

    def _remember(self, answers: dict[tuple[str, str], ScoreValue], at: float) -> None:
        with self._lock:
            cache = self._cache
            for key, score in answers.items():
                cache.pop(key, None)  # re-inserted at the end: the dict stays in age order
                cache[key] = (at, score)
            if len(cache) > self.cache_size:
                self._prune(at)

    def _prune(self, now: float) -> None:
        """Drop expired answers, then the oldest, down to 90 % of `cache_size` (pruning is
        rare, not once per fetch)."""
        cache = self._cache
        keep = int(self.cache_size * 0.9)
        for key in [k for k, (at, _) in cache.items() if now - at >= self.cache_ttl]:
            del cache[key]
        excess = len(cache) - keep
        if excess > 0:
            for key in list(itertools.islice(cache, excess)):
                del cache[key]

    def _refused(self) -> None:
        self.last_error = "circuit open: scoring service unavailable"
        self._observe(0.0, "circuit_open")

    def _observe(self, seconds: float, result: str) -> None:
        if self.on_request is not None:
            self.on_request(seconds, result)


def _parse(body: dict[str, Any], received: float) -> dict[tuple[str, str], ScoreValue]:
    """``{"results": [{"customer_id", "known", "scores": {model: {"value", "model_version",
    "known", "features_at", "best_send_hour"}}}]}``; `features_at` (ISO 8601, UTC when it has
    no offset) becomes epoch seconds. A malformed answer is a ValueError (a failed request)."""
    out: dict[tuple[str, str], ScoreValue] = {}
    stamps: dict[str, float] = {}  # a batch has few distinct snapshots: parse each once
    for item in body.get("results", []):
        customer_known = bool(item.get("known", True))
        for model, score in (item.get("scores") or {}).items():
            if score is None or score.get("value") is None:
                continue
            features_at = score.get("features_at")
            hour = score.get("best_send_hour")
            out[(str(item["customer_id"]), model)] = ScoreValue(
                value=float(score["value"]),
                model_version=str(score.get("model_version", "")),
                computed_at=received,
                known=bool(score.get("known", customer_known)),
                features_at=None if features_at is None else _epoch(str(features_at), stamps),
                best_send_hour=None if hour is None else int(hour),
            )
    return out


def _epoch(text: str, seen: dict[str, float]) -> float:
    epoch = seen.get(text)
    if epoch is None:
        at = datetime.fromisoformat(text)
        epoch = seen[text] = (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
    return epoch


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]

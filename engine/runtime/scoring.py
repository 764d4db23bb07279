"""The engine's client of the scoring service: batched, cached, patient, and never blocking.

One HTTP call asks for every (customer, model) score a batch of events needs. Calls have timeouts
and retries with exponential backoff; after repeated failures a circuit breaker opens and the
engine stops asking for a while, so score conditions follow their `on_missing` rule at once
instead of waiting. Answers are cached per (customer, model) with the model version they came with.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import httpx

from engine.dsl.conditions import ScoreValue

__all__ = ["BreakerState", "CircuitBreaker", "ScoreClient"]


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


class ScoreClient:
    """Fetches scores from `POST {base_url}/v1/scores`; missing answers come back as None."""

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
    ) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), timeout=timeout, headers=headers, transport=transport
        )
        self.retries = retries
        self.backoff = backoff
        self.cache_ttl = cache_ttl
        self.breaker = breaker or CircuitBreaker()
        self._cache: dict[tuple[str, str], tuple[float, ScoreValue]] = {}
        self.last_error: str | None = None
        self.calls = 0
        # Told of every HTTP attempt: (seconds, "ok" | "error"), and (0.0, "circuit_open") when
        # the breaker refuses to ask (engine.runtime.metrics counts and times them).
        self.on_request: Callable[[float, str], None] | None = None

    def fetch(
        self, customer_ids: Iterable[str], models: Iterable[str]
    ) -> dict[str, dict[str, ScoreValue | None]]:
        """Scores for every customer × model; None where the service could not answer."""
        customers, wanted = sorted(set(customer_ids)), sorted(set(models))
        now = time.time()
        result: dict[str, dict[str, ScoreValue | None]] = {c: {} for c in customers}
        to_ask: set[str] = set()
        for customer in customers:
            for model in wanted:
                cached = self._cache.get((customer, model))
                if cached and now - cached[0] < self.cache_ttl:
                    result[customer][model] = cached[1]
                else:
                    result[customer][model] = None
                    to_ask.add(customer)
        if to_ask and wanted:
            for chunk in _chunks(sorted(to_ask), 1000):
                for (customer, model), score in self._ask(chunk, wanted).items():
                    result[customer][model] = score
                    self._cache[(customer, model)] = (now, score)
        return result

    def close(self) -> None:
        self._http.close()

    def _ask(self, customers: list[str], models: list[str]) -> dict[tuple[str, str], ScoreValue]:
        if not self.breaker.allow(time.time()):
            self.last_error = "circuit open: scoring service unavailable"
            self._observe(0.0, "circuit_open")
            return {}
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
                return parsed
            except (httpx.HTTPError, ValueError) as exc:
                self._observe(time.perf_counter() - started, "error")
                self.last_error = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code < 500:
                    break  # our request is wrong; retrying will not help
                if attempt < self.retries:
                    time.sleep(self.backoff * (2**attempt) * (0.5 + random.random()))
        self.breaker.record_failure(time.time())
        return {}

    def _observe(self, seconds: float, result: str) -> None:
        if self.on_request is not None:
            self.on_request(seconds, result)


def _parse(body: dict[str, Any], received: float) -> dict[tuple[str, str], ScoreValue]:
    """``{"results": [{"customer_id", "known", "scores": {model: {"value", "model_version"}}}]}``."""
    out: dict[tuple[str, str], ScoreValue] = {}
    for item in body.get("results", []):
        for model, score in (item.get("scores") or {}).items():
            if score is None or score.get("value") is None:
                continue
            out[(str(item["customer_id"]), model)] = ScoreValue(
                value=float(score["value"]),
                model_version=str(score.get("model_version", "")),
                computed_at=received,
                known=bool(item.get("known", True)),
            )
    return out


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]

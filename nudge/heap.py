"""Keeping a process's long-lived start-up objects out of the cyclic garbage collector.

Imports, settings, models and trigger indexes live as long as the process, yet every full
collection walks them again — and request bursts or event batches, allocating thousands of dicts,
trigger full collections often. Frozen (`gc.freeze`), they are skipped; objects made later are
collected as usual. Measured: the scoring service's ~400k start-up objects paused every request
for ~0.2 s at each full collection; the engine API's ~165,000 cost `/v1/batch` a third of its
throughput on PostgreSQL (3.4–3.7k → 5.7–7.5k events/s); `nudge engine run`'s processing of 30,000
events at 1,000 triggers went from 5,500–7,100 to 8,700–10,900 events/s under load (~4.5), end to
end ~8 % on a quiet machine (BENCHMARKS.md, engine run 5).
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

__all__ = ["YOUNG_GENERATION_THRESHOLD", "freeze_startup_heap", "frozen_heap"]

YOUNG_GENERATION_THRESHOLD = 10_000  # allocations between collections of the youngest generation


def freeze_startup_heap() -> None:
    """Collect what start-up left as garbage, then freeze everything alive: call it once the
    process is set up (a trigger index replaced by a later reload stays, a few MB); and collect
    the youngest generation less often (see the module's docstring)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, older, oldest)


@asynccontextmanager
async def frozen_heap(_app: Any = None) -> AsyncIterator[None]:
    """An app lifespan: frozen while it serves, given back at shutdown, so that a process making
    many apps (tests) frees what they leave."""
    freeze_startup_heap()
    try:
        yield
    finally:
        gc.unfreeze()

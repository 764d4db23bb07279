"""Keep the engine's loop running inside a server, backing off when a run of it fails.

One bad event or action cannot stop the loop (the processor dead-letters it, the dispatcher
marks it failed); what does is the database or the host failing. A server then keeps serving:
the loop is run again after a pause that doubles, from four polls up to a minute. Pending work
stays pending and is retried by the next run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

__all__ = ["MAX_PAUSE", "Runnable", "start_supervised", "supervise"]

log = logging.getLogger(__name__)

MAX_PAUSE = 60.0
"""The longest pause between two runs after errors, in seconds."""


class Runnable(Protocol):
    """What is supervised: ``EngineLoop`` (its ``run(stop)`` returns once ``stop`` is set)."""

    poll: float

    def run(self, stop: threading.Event | None = None) -> object: ...


def supervise(
    loop: Runnable,
    stop: threading.Event,
    *,
    pause: float | None = None,
    max_pause: float = MAX_PAUSE,
    on_error: Callable[[Exception, float], None] | None = None,
) -> None:
    """Run ``loop`` until ``stop`` is set; after an error, call ``on_error(error, pause)`` (by
    default: log it), wait ``pause`` seconds (default four of the loop's polls) or until
    ``stop``, and run it again with the pause doubled, at most ``max_pause``."""
    wait = loop.poll * 4 if pause is None else pause
    report = on_error or _log
    while not stop.is_set():
        try:
            loop.run(stop)
        except Exception as exc:  # keep serving: the next run retries what is pending
            report(exc, wait)
            stop.wait(wait)
            wait = min(wait * 2, max_pause)


def start_supervised(
    loop: Runnable,
    stop: threading.Event,
    *,
    on_error: Callable[[Exception, float], None] | None = None,
    name: str = "engine",
) -> threading.Thread:
    """``supervise`` in a daemon thread, started; set ``stop`` and join it to end."""
    thread = threading.Thread(
        target=supervise, args=(loop, stop), kwargs={"on_error": on_error}, name=name, daemon=True
    )
    thread.start()
    return thread


def _log(error: Exception, pause: float) -> None:
    log.error("engine error (retry in %.0f s)", pause, exc_info=error)

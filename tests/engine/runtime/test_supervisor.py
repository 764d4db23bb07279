"""engine.runtime.supervisor: an error in one run of the loop backs off and the loop goes on;
setting stop ends it."""

from __future__ import annotations

import threading
import time

from engine.runtime.loop import EngineLoop
from engine.runtime.supervisor import start_supervised, supervise


class FlakyLoop:
    """Fails its first `failures` runs, then runs until stopped."""

    poll = 0.001

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.runs = 0

    def run(self, stop: threading.Event | None = None) -> None:
        self.runs += 1
        if self.runs <= self.failures:
            raise ConnectionError(f"database gone ({self.runs})")
        assert stop is not None
        stop.wait()


def test_an_error_backs_off_doubling_and_the_loop_runs_again():
    loop, stop, seen = FlakyLoop(failures=4), threading.Event(), []
    thread = start_supervised(
        loop, stop, on_error=lambda exc, pause: seen.append((str(exc), pause))
    )
    deadline = time.monotonic() + 10
    while loop.runs < 5 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert loop.runs == 5 and thread.is_alive(), "still serving after the errors"
    assert [message for message, _ in seen] == [f"database gone ({i})" for i in range(1, 5)]
    assert [pause for _, pause in seen] == [0.004, 0.008, 0.016, 0.032]  # 4 polls, doubling
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_the_pause_is_capped_and_stop_ends_the_wait():
    loop, stop, pauses = FlakyLoop(failures=100), threading.Event(), []

    def record(_exc: Exception, pause: float) -> None:
        pauses.append(pause)
        if len(pauses) == 6:
            stop.set()

    started = time.monotonic()
    supervise(loop, stop, pause=0.001, max_pause=0.004, on_error=record)
    assert pauses == [0.001, 0.002, 0.004, 0.004, 0.004, 0.004]
    assert time.monotonic() - started < 5


def test_a_real_loop_stops_when_told(engine_store):
    from engine.dsl.triggers import TriggerIndex
    from engine.runtime.processor import Processor

    loop = EngineLoop(Processor(engine_store, TriggerIndex([])), None, poll=0.01)
    stop = threading.Event()
    thread = start_supervised(loop, stop)
    time.sleep(0.05)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()

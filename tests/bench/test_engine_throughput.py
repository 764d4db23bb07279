"""bench/engine_throughput.py's PostgreSQL workers' comparison: what it checks, and a tiny run."""

from __future__ import annotations

import uuid

import pytest

from bench.engine_throughput import WorkerReport, WorkersRun, order_problems, postgres_workers
from tests.conftest import POSTGRES_URL, postgres_available, require_service


def _run(workers: int, decisions: dict, statuses: dict | None = None) -> WorkersRun:
    events = sum(len(d) for d in decisions.values())
    reports = [WorkerReport((i, workers), 1.0, events // workers + (i < events % workers), 0,
                            1.0, None) for i in range(workers)]  # fmt: skip
    return WorkersRun(workers, 0.0, 1.0, reports, (0.0, 0.0), decisions,
                      statuses or {"processed": events})  # fmt: skip


ONE = {
    "c1": [(1, "e1", "t1", "sent"), (3, "e3", "t1", "suppressed")],
    "c2": [(2, "e2", "t2", "sent")],
}


def test_the_same_decisions_in_arrival_order_pass():
    assert order_problems(_run(1, ONE), None, 3) == []
    moved = {"c1": [(7, "e1", "t1", "sent"), (9, "e3", "t1", "suppressed")],
             "c2": [(8, "e2", "t2", "sent")]}  # fmt: skip
    assert order_problems(_run(2, moved), _run(1, ONE), 3) == []  # other seqs, the same order


def test_decisions_out_of_arrival_order_or_other_ones_fail():
    swapped = {**ONE, "c1": [(3, "e3", "t1", "suppressed"), (1, "e1", "t1", "sent")]}
    problems = order_problems(_run(2, swapped), _run(1, ONE), 3)
    assert any("not in arrival order" in p for p in problems)
    assert any("in another order" in p for p in problems)
    other = {**ONE, "c2": [(2, "e2", "t3", "sent")]}
    assert any("not the same ones" in p for p in order_problems(_run(2, other), _run(1, ONE), 3))


def test_events_left_pending_fail():
    problems = order_problems(_run(1, ONE, {"processed": 2, "pending": 1}), None, 3)
    assert problems and "pending" in problems[0]


@pytest.mark.slow
@pytest.mark.postgres
def test_one_and_two_workers_on_postgres_make_the_same_decisions_in_order(capsys):
    ok, why = postgres_available()
    require_service("PostgreSQL at 127.0.0.1:5432", ok, why)
    from engine.runtime.replay import events_from_rows
    from pipelines.simulator import simulate

    sim = simulate(300, 30, seed=5)
    items = list(events_from_rows(sim.events.slice(0, 600).to_pylist()))
    profiles = {r["customer_id"]: {**r, "signup_at": str(r["signup_at"])}
                for r in sim.customers.to_dict("records")}  # fmt: skip
    schema = f"t_{uuid.uuid4().hex[:12]}"
    assert postgres_workers(POSTGRES_URL, schema, items, profiles, triggers=100) == []
    out = capsys.readouterr().out
    assert "| 2 | 600 |" in out and "the same" in out

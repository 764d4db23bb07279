"""BASELINE — not nudge code: the simulator written the obvious way, one customer at a time.

Same purchase model (Gamma rates, geometric dropout after purchases), browsing sessions and weekly
email with opens, drawn with Python's `random` in nested loops and collected as row dicts — the
way a first simulator usually looks. It exists only so that bench/simulate.py can quote the
vectorised simulator's speed as a ratio against it.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pyarrow as pa


def simulate_loop(n_customers: int, days: int, seed: int) -> pa.Table:
    """Rows of events for `n_customers` customers over `days` days."""
    rnd = random.Random(seed)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    rows: list[dict] = []
    counter = 0

    def emit(customer: str, event_type: str, at: float, **props: object) -> None:
        nonlocal counter
        counter += 1
        rows.append(
            {
                "event_id": f"loop-{counter}",
                "customer_id": customer,
                "event_type": event_type,
                "timestamp": start + timedelta(days=at),
                "properties": str(props),
            }
        )

    for i in range(n_customers):
        customer = f"c{i:07d}"
        signup = rnd.random() * days * 0.9
        rate = rnd.gammavariate(2.0, 1 / 40 / 2.0)
        dropout = rnd.betavariate(1.5, 9.0)
        emit(customer, "signup", signup)
        t, alive = signup, True
        while alive:
            t += rnd.expovariate(rate)
            if t >= days:
                break
            for _ in range(3):  # browsing sessions around each purchase
                s = t - rnd.random() * 20
                if s > signup:
                    emit(customer, "session_start", s)
                    for _ in range(1 + int(rnd.expovariate(1 / 1.5))):
                        emit(customer, "page_view", s + rnd.random() / 100)
                    if rnd.random() < 0.3:
                        emit(customer, "cart_add", s + 0.01)
                        emit(
                            customer,
                            "cart_abandoned",
                            s + 0.05,
                            cart_value=round(rnd.gammavariate(4, 9), 2),
                        )
            emit(customer, "purchase_completed", t, total=round(rnd.gammavariate(4, 9), 2))
            alive = rnd.random() >= dropout
        send = signup
        while True:
            send += rnd.expovariate(0.5 / 7)
            if send >= days:
                break
            emit(customer, "email_sent", send)
            emit(customer, "email_delivered", send + 0.001)
            if rnd.random() < 0.2:
                emit(customer, "email_opened", send + rnd.expovariate(16))
    return pa.Table.from_pylist(rows)

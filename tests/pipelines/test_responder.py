"""The closed-loop responder answers from the planted effects, deterministically."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from pipelines.simulator.output import write_simulation
from pipelines.simulator.responder import Responder, UnknownCustomerError

SENT = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def responder(small_simulation) -> Responder:
    sim = small_simulation
    return Responder(sim.truth, sim.planted, sim.params.seed)


def customers_of(small_simulation, segment: str) -> list[str]:
    truth = small_simulation.truth
    return truth.loc[truth["segment"] == segment, "customer_id"].tolist()


def conversion_rate(
    responder: Responder, customers: list[str], delay: timedelta, repeats: int = 8
) -> float:
    hits = [
        responder.respond(c, SENT + timedelta(hours=k), "cart_reminder", delay).converted
        for c in customers
        for k in range(repeats)
    ]
    return float(np.mean(hits))


def test_same_question_same_answer(responder, small_simulation):
    customer = small_simulation.truth["customer_id"].iloc[0]
    a = responder.respond(customer, SENT, "cart_reminder", timedelta(hours=1))
    b = responder.respond(customer, SENT, "cart_reminder", timedelta(hours=1))
    assert a == b


def test_conversion_follows_the_planted_effect_per_segment_and_delay(responder, small_simulation):
    bargain = customers_of(small_simulation, "bargain_hunter")
    fast, slow = (conversion_rate(responder, bargain, timedelta(hours=h)) for h in (1, 24))
    planted = small_simulation.planted
    base = planted.segments["bargain_hunter"].conversion_baseline
    n = len(bargain) * 8
    for observed, delay in ((fast, "1h"), (slow, "24h")):
        expected = base + planted.uplift["bargain_hunter"][delay]
        assert abs(observed - expected) < 4 * np.sqrt(expected * (1 - expected) / n)
    assert fast > slow

    loyal = customers_of(small_simulation, "loyal")
    assert conversion_rate(responder, loyal, timedelta(hours=24)) > conversion_rate(
        responder, loyal, timedelta(hours=1)
    )


def test_segments_without_effect_convert_at_baseline(responder, small_simulation):
    browsers = customers_of(small_simulation, "browser")
    assert responder.conversion_probability(
        browsers[0], timedelta(hours=1)
    ) == responder.conversion_probability(browsers[0], None)
    held_out = np.mean(
        [responder.respond_without_email(c, SENT).converted for c in browsers for _ in range(1)]
    )
    assert held_out < 0.06


def test_opens_clicks_and_conversions_are_ordered_in_time(responder, small_simulation):
    for customer in small_simulation.truth["customer_id"].iloc[:400]:
        r = responder.respond(customer, SENT, "winback", timedelta(hours=4))
        if r.clicked_at:
            assert r.opened_at is not None and SENT < r.opened_at < r.clicked_at
        if r.converted_at:
            assert SENT <= r.converted_at <= SENT + small_simulation.planted.attribution_window
            assert r.revenue > 0


def test_responder_loads_from_a_written_simulation(tmp_path, small_simulation, responder):
    write_simulation(small_simulation, tmp_path)
    loaded = Responder.from_directory(tmp_path)
    customer = small_simulation.truth["customer_id"].iloc[5]
    assert loaded.respond(customer, SENT, "x", timedelta(hours=4)) == responder.respond(
        customer, SENT, "x", timedelta(hours=4)
    )


def test_unknown_customer_is_a_clear_error(responder):
    with pytest.raises(UnknownCustomerError, match="nobody"):
        responder.respond("nobody", SENT, "x", timedelta(hours=1))

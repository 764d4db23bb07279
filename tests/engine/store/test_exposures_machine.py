"""Experiment exposures count people: a proxy's open or a scanner's click (properties.machine)
does not make a message opened or clicked unless asked for."""

from __future__ import annotations

from engine.store.exposures import load_exposures
from tests.engine.store.test_exposures import HOUR, T0, decision, email, event, record


def test_machine_opens_and_clicks_are_left_out_by_default(engine_store):
    key1, key2 = "cart:c1:a1:0", "cart:c2:a2:0"
    record(
        engine_store,
        [event("a1", "c1", "cart_abandoned", T0), event("a2", "c2", "cart_abandoned", T0),
         event("o1", "c1", "email_opened", T0 + HOUR, message_id=key1, machine=True,
               machine_reason="apple_mpp"),
         event("k1", "c1", "email_clicked", T0 + HOUR, message_id=key1, machine=True,
               machine_reason="too_soon"),
         event("o2", "c2", "email_opened", T0 + HOUR, message_id=key2, machine=False),
         event("o3", "c2", "email_opened", T0 + HOUR, message_id=key2, machine="true")],
        [decision("a1", "c1", "cart", "x"), decision("a2", "c2", "cart", "y")],
        [email("a1", "c1", "cart", "sent"), email("a2", "c2", "cart", "sent")],
    )  # fmt: skip
    people = engine_store.read(load_exposures, "cart", attribution_window=HOUR)
    rows = people.set_index("customer_id").to_dict("index")
    assert (rows["c1"]["opened"], rows["c1"]["clicked"]) == (False, False)
    assert rows["c2"]["opened"] is True  # a human open (machine false) counts
    everything = engine_store.read(
        load_exposures, "cart", attribution_window=HOUR, include_machine=True
    )
    rows = everything.set_index("customer_id").to_dict("index")
    assert (rows["c1"]["opened"], rows["c1"]["clicked"]) == (True, True)

"""A simulation in parts: bounded memory, the same model, ids that run on, nothing lost twice."""

from __future__ import annotations

import pandas as pd
import pyarrow.dataset as ds
import pytest

from engine.lake import EventLake
from pipelines.simulate import run_simulation
from pipelines.simulator import simulate
from pipelines.simulator.generate import simulate_parts
from pipelines.simulator.output import read_truth


def test_parts_number_the_customers_on_and_never_share_an_event_id():
    parts = list(simulate_parts(2_500, 90, seed=5, part_customers=1_000))
    assert [p.params.n_customers for p in parts] == [1_000, 1_000, 500]
    ids = pd.concat([p.customers["customer_id"] for p in parts], ignore_index=True)
    assert ids.tolist() == [f"c{i:07d}" for i in range(1, 2_501)]
    for part in parts:  # every event belongs to its part's customers
        assert set(part.events["customer_id"].to_pylist()) <= set(part.customers["customer_id"])
        assert part.truth["customer_id"].tolist() == part.customers["customer_id"].tolist()
    event_ids = [i for p in parts for i in p.events["event_id"].to_pylist()]
    assert len(event_ids) == len(set(event_ids))


def test_parts_are_the_same_for_a_seed_and_draw_from_the_same_model():
    first = list(simulate_parts(2_000, 120, seed=5, part_customers=1_000))
    again = list(simulate_parts(2_000, 120, seed=5, part_customers=1_000))
    assert all(a.events.equals(b.events) for a, b in zip(first, again, strict=True))
    assert not first[0].events["timestamp"].equals(first[1].events["timestamp"])
    whole = simulate(2_000, 120, seed=5)
    per_customer = sum(p.events.num_rows for p in first) / 2_000
    assert per_customer == pytest.approx(whole.events.num_rows / 2_000, rel=0.1)
    mix = pd.concat([p.truth for p in first])["segment"].value_counts(normalize=True)
    expected = whole.truth["segment"].value_counts(normalize=True)
    assert (mix - expected).abs().max() < 0.05


def test_a_simulation_in_parts_streams_every_event_to_the_data_set_and_the_lake(tmp_path):
    lake = EventLake(tmp_path / "lake")
    said: list[str] = []
    run = run_simulation(customers=2_400, days=120, seed=9, start="2025-01-01",
                         out=tmp_path / "sim", lake=lake, part_customers=1_000,
                         progress=said.append)  # fmt: skip
    written = ds.dataset(run.paths["events"]).count_rows()  # a directory of part files
    assert written == run.events == run.summary["events"] == lake.info().events > 0
    assert run.appended is not None and run.appended.added == run.events
    assert run.profiles == len(lake.read_customers()) == 2_400
    assert run.simulation.events.num_rows == 0  # the events are on disk, not in memory
    truth, _planted, summary = read_truth(tmp_path / "sim")
    assert len(truth) == 2_400 and summary["events"] == run.events
    assert sum("part " in message for message in said) == 3
    assert 0 < run.peak_rss < 8 * 1024**3
    assert not list((tmp_path / "sim").glob(".events.*"))
    # Again into the same lake: idempotent, every event recognised as already there.
    again = run_simulation(customers=2_400, days=120, seed=9, start="2025-01-01",
                           out=tmp_path / "sim", lake=lake, part_customers=1_000)  # fmt: skip
    assert again.appended is not None and again.appended.added == 0
    assert lake.info().events == run.events


def test_lake_days_keep_the_future_of_every_part_out_of_the_lake(tmp_path):
    lake = EventLake(tmp_path / "lake")
    run = run_simulation(customers=1_500, days=60, seed=9, start="2025-01-01",
                         out=tmp_path / "sim", lake=lake, part_customers=1_000,
                         lake_days=30)  # fmt: skip
    info = lake.info()
    assert info.last_event is not None and info.last_event < pd.Timestamp("2025-01-31", tz="UTC")
    assert 0 < info.events < run.events


def test_bad_part_sizes_are_refused():
    with pytest.raises(ValueError, match="part_customers"):
        next(simulate_parts(10, 10, seed=1, part_customers=0))


def test_a_part_that_fails_in_its_worker_fails_the_run_with_its_error(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the lake should be")
    with pytest.raises(RuntimeError, match=r"simulation part \d failed .*not-a-folder"):
        run_simulation(customers=1_500, days=30, seed=9, start="2025-01-01",
                       out=tmp_path / "sim", lake=EventLake(blocker / "lake"),
                       part_customers=1_000, workers=2)  # fmt: skip
    assert not (tmp_path / "sim" / "events.parquet").exists()
    assert not list((tmp_path / "sim").glob(".*"))  # nothing staged is left behind


def test_one_worker_draws_the_same_parts_in_this_process(tmp_path):
    runs = [
        run_simulation(
            customers=1_500,
            days=30,
            seed=9,
            start="2025-01-01",
            out=tmp_path / f"sim{w}",
            lake=EventLake(tmp_path / f"lake{w}"),
            part_customers=1_000,
            workers=w,
        )
        for w in (1, 2)
    ]
    assert runs[0].events == runs[1].events
    tables = [ds.dataset(r.paths["events"]).to_table().sort_by("event_id") for r in runs]
    assert tables[0].equals(tables[1])

from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pytest

from engine.events import validate_event
from engine.lake import EventLake, LakeError, events_to_table

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_events(
    n: int, *, start: int = 0, hours: int = 7, types=("purchase_completed", "page_view")
) -> pa.Table:
    return events_to_table(
        validate_event(
            {
                "event_id": f"e{i}",
                "customer_id": f"c{i % 3}",
                "event_type": types[i % len(types)],
                "timestamp": (T0 + timedelta(hours=hours * i)).isoformat(),
                "properties": {"total": i},
            }
        )
        for i in range(start, start + n)
    )


@pytest.fixture
def lake(tmp_path) -> EventLake:
    return EventLake(tmp_path / "lake")


def test_an_empty_lake_reads_as_an_empty_table_of_the_lake_schema(lake):
    table = lake.read(T0, T0 + timedelta(days=1))
    assert table.num_rows == 0
    assert "event_id" in table.column_names
    assert lake.info().events == 0


def test_appending_the_same_events_twice_adds_nothing(lake):
    first = lake.append(make_events(20))
    again = lake.append(make_events(20))
    overlap = lake.append(make_events(10, start=15))
    assert (first.added, first.duplicates) == (20, 0)
    assert (again.added, again.duplicates) == (0, 20)
    assert (overlap.added, overlap.duplicates) == (5, 5)
    assert lake.info().events == 25


def test_duplicates_within_one_batch_are_kept_once(lake):
    batch = make_events(5)
    result = lake.append(pa.concat_tables([batch, batch.slice(0, 2)]))
    assert (result.received, result.added, result.duplicates) == (7, 5, 2)
    assert sorted(lake.read()["event_id"].to_pylist()) == ["e0", "e1", "e2", "e3", "e4"]


def test_files_are_partitioned_by_utc_date(lake):
    lake.append(make_events(20))  # every 7 h from 2026-01-01 00:00 → 6 days
    dates = sorted(p.name for p in lake.events_dir.iterdir())
    assert dates == [f"date=2026-01-0{d}" for d in range(1, 7)]
    assert not (lake.root / "_staging").exists() or not any((lake.root / "_staging").iterdir())


def test_range_reads_include_the_start_and_exclude_the_end(lake):
    lake.append(make_events(20))
    table = lake.read(T0 + timedelta(hours=14), T0 + timedelta(hours=35))
    assert table["event_id"].to_pylist() == ["e2", "e3", "e4"]
    stamps = table["timestamp"].to_pylist()
    assert stamps == sorted(stamps)


def test_reads_filter_by_type_and_customer_and_select_columns(lake):
    lake.append(make_events(30))
    purchases = lake.read(
        event_types=["purchase_completed"], columns=["event_id", "event_type", "amount"]
    )
    assert set(purchases["event_type"].to_pylist()) == {"purchase_completed"}
    assert purchases.column_names == ["event_id", "event_type", "amount"]
    assert purchases["amount"].to_pylist()[:3] == [0.0, 2.0, 4.0]
    one = lake.read(customer_ids=["c1"])
    assert set(one["customer_id"].to_pylist()) == {"c1"} and one.num_rows == 10


def test_range_bounds_may_be_dates_strings_or_naive_utc(lake):
    lake.append(make_events(20))
    by_date = lake.read("2026-01-02", "2026-01-03")
    by_aware = lake.read(T0 + timedelta(days=1), T0 + timedelta(days=2))
    assert by_date["event_id"].to_pylist() == by_aware["event_id"].to_pylist() == ["e4", "e5", "e6"]


def test_batches_that_break_the_schema_are_refused_with_the_column_named(lake):
    good = make_events(3).to_pandas()
    with pytest.raises(LakeError, match="event_type"):
        lake.append(good.drop(columns=["event_type"]))
    with pytest.raises(LakeError, match="colour"):
        lake.append(good.assign(colour="red"))
    with pytest.raises(LakeError, match="time-zone aware"):
        lake.append(good.assign(timestamp=good["timestamp"].dt.tz_localize(None)))
    with pytest.raises(LakeError, match="customer_id has 1 empty"):
        lake.append(good.assign(customer_id=["a", None, "b"]))
    with pytest.raises(LakeError, match="unknown column"):
        lake.read(columns=["nope"])
    assert lake.info().events == 0


def test_info_counts_customers_types_and_range(lake):
    lake.append(make_events(9))
    info = lake.info()
    assert (info.events, info.customers, info.partitions) == (9, 3, 3)
    assert info.events_per_type == {"purchase_completed": 5, "page_view": 4}
    assert info.first_event == T0 and info.last_event == T0 + timedelta(hours=56)


def test_customer_profiles_are_upserted_by_id(lake):
    lake.upsert_customers(pd.DataFrame({"customer_id": ["a", "b"], "first_name": ["Ada", "Ben"]}))
    size = lake.upsert_customers(
        pd.DataFrame({"customer_id": ["b", "c"], "first_name": ["Bea", "Cy"]})
    )
    profiles = lake.read_customers().set_index("customer_id")["first_name"].to_dict()
    assert size == 3
    assert profiles == {"a": "Ada", "b": "Bea", "c": "Cy"}


# -- customer slices: partitions and samples of the customers ------------------------------------


def many_customers(n_events: int = 3_000, customers: int = 600) -> pa.Table:
    return events_to_table(
        validate_event(
            {
                "event_id": f"e{i}",
                "customer_id": f"c{i % customers:05d}",
                "event_type": "page_view",
                "timestamp": (T0 + timedelta(minutes=i)).isoformat(),
            }
        )
        for i in range(n_events)
    )


def test_the_parts_of_a_slicing_hold_every_customer_once(tmp_path):
    from engine.lake import CustomerSlice

    lake = EventLake(tmp_path / "lake")
    lake.append(many_customers())
    seen: list[str] = []
    for index in range(4):
        part = lake.read(customers=CustomerSlice.part(index, 4), columns=["customer_id"])
        ids = set(part["customer_id"].to_pylist())
        assert 100 < len(ids) < 200  # about a quarter of 600
        assert CustomerSlice.part(index, 4).mask(sorted(ids)).all()
        seen += ids
    assert len(seen) == len(set(seen)) == 600
    assert sum(lake.read(customers=CustomerSlice.part(i, 4)).num_rows for i in range(4)) == 3_000
    with pytest.raises(ValueError, match="part index"):
        CustomerSlice.part(4, 4)


def test_a_sample_keeps_all_events_of_its_customers_and_nests_in_a_larger_one(tmp_path):
    from engine.lake import CustomerSlice

    lake = EventLake(tmp_path / "lake")
    lake.append(many_customers())
    small, large = CustomerSlice.sample(0.2), CustomerSlice.sample(0.5)
    assert (small.fraction, large.fraction) == (0.2, 0.5)
    small_ids = set(lake.read(customers=small)["customer_id"].to_pylist())
    large_ids = set(lake.read(customers=large)["customer_id"].to_pylist())
    assert small_ids < large_ids
    assert 80 < len(small_ids) < 160 and 240 < len(large_ids) < 360
    every = lake.read().to_pandas()
    assert len(lake.read(customers=small)) == every["customer_id"].isin(small_ids).sum()
    assert CustomerSlice.sample(1.0).sql() == "TRUE"
    with pytest.raises(ValueError, match="fraction"):
        CustomerSlice.sample(0)


def test_the_customer_count_is_close_and_zero_for_an_empty_lake(tmp_path):
    lake = EventLake(tmp_path / "lake")
    assert lake.customer_count() == 0
    lake.append(many_customers())
    assert 570 <= lake.customer_count() <= 630


def test_an_append_skips_known_ids_of_the_range_and_adds_the_others(tmp_path):
    lake = EventLake(tmp_path / "lake")
    lake.append(many_customers(100))
    # Ids e50..e149: the first half is known (inside the batch's id range), the rest is new.
    batch = many_customers(150).slice(50)
    result = lake.append(batch)
    assert (result.received, result.added, result.duplicates) == (100, 50, 50)
    assert lake.read().num_rows == 150


def test_a_read_can_keep_the_properties_of_some_event_types_only(tmp_path):
    lake = EventLake(tmp_path / "lake")
    lake.append(make_events(6))  # purchases and page views, each with properties
    rows = lake.read(properties_of=["purchase_completed"]).to_pylist()
    assert {r["event_type"] for r in rows} == {"purchase_completed", "page_view"}
    for row in rows:
        kept = row["event_type"] == "purchase_completed"
        assert (row["properties"] is not None) == kept
    assert all(r["properties"] is None for r in lake.read(properties_of=[]).to_pylist())
    assert lake.read(properties_of=["it's"]).num_rows == 6  # quoted, not injected

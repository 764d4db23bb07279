"""Importing external logs: the real CDNOW sample, mapping, rejects, idempotency."""

import pandas as pd
import pytest

from engine.lake import EventLake
from pipelines.ingest import PRESETS, IngestError, import_events, normalise_events, parse_column_map


@pytest.fixture
def lake(tmp_path) -> EventLake:
    return EventLake(tmp_path / "lake")


def import_cdnow(lake, path, rejects_dir):
    preset = PRESETS["cdnow"]
    return import_events(
        lake, path, preset.column_map, timezone=preset.timezone, timestamp_format=preset.timestamp_format,
        rejects_dir=rejects_dir, preset=preset,
    )  # fmt: skip


def test_cdnow_sample_imports_every_transaction_once(lake, cdnow_sample, tmp_path):
    report = import_cdnow(lake, cdnow_sample, tmp_path / "rejects")
    assert (report.read, report.accepted, report.rejected, report.added) == (6_919, 6_919, 0, 6_919)
    info = lake.info()
    assert (info.events, info.customers) == (6_919, 2_357)
    assert info.events_per_type == {"purchase_completed": 6_919}
    assert info.first_event.date().isoformat() == "1997-01-01"
    assert info.last_event.date().isoformat() == "1998-06-30"
    events = lake.read(columns=["customer_id", "amount", "properties", "source"]).to_pandas()
    assert events["amount"].sum() == pytest.approx(
        pd.read_csv(cdnow_sample, sep=r"\s+", header=None)[4].sum()
    )
    assert set(events["source"]) == {"cdnow"}
    assert '"units": ' in events["properties"].iloc[0]

    again = import_cdnow(lake, cdnow_sample, tmp_path / "rejects")
    assert (again.accepted, again.duplicates, again.added) == (6_919, 6_919, 0)
    assert lake.info().events == 6_919


def test_identical_rows_stay_separate_transactions(lake, tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text("cust,when,total\n1,2026-01-05T10:00:00Z,9.5\n1,2026-01-05T10:00:00Z,9.5\n")
    mapping = parse_column_map(
        "customer_id=cust,timestamp=when,event_type=purchase_completed,amount=total"
    )
    first = import_events(lake, path, mapping, rejects_dir=tmp_path / "r")
    second = import_events(lake, path, mapping, rejects_dir=tmp_path / "r")
    assert (first.added, second.added, second.duplicates) == (2, 0, 2)


def test_bad_rows_go_to_the_rejects_file_with_the_reason(lake, tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(
        "user,ts,kind,value,channel\n"
        "u1,2026-02-01T08:00:00+01:00,purchase_completed,12.0,web\n"
        ",2026-02-01T09:00:00Z,page_view,,web\n"
        "u2,not a date,page_view,,web\n"
        "u3,2026-02-01T10:00:00Z,Bad Kind!,,web\n"
        "u4,2026-02-01T11:00:00Z,refund,twelve,web\n"
        "u5,2026-02-02T11:00:00Z,email_opened,,app\n"
    )
    mapping = parse_column_map("customer_id=user,timestamp=ts,event_type=kind,amount=value")
    report = import_events(lake, path, mapping, rejects_dir=tmp_path / "rejects")
    assert (report.read, report.accepted, report.rejected, report.added) == (6, 2, 4, 2)
    rejects = pd.read_csv(report.rejects_path)
    assert rejects["row"].tolist() == [2, 3, 4, 5]
    assert rejects["reason"].str.split(":").str[0].tolist() == [
        "customer_id",
        "timestamp",
        "event_type",
        "amount",
    ]
    assert "could not read 'not a date'" in rejects["reason"][1]
    assert "twelve" in rejects["reason"][3]
    assert set(rejects.columns) >= {"user", "ts", "kind", "value", "channel"}, (
        "the original row is kept"
    )
    stored = lake.read().to_pandas()
    assert stored["timestamp"].min().isoformat() == "2026-02-01T07:00:00+00:00"
    assert '"channel": "web"' in stored["properties"].iloc[0]


def test_naive_timestamps_need_an_explicit_zone(tmp_path):
    frame = pd.DataFrame(
        {"c": ["a", "b", "c"], "t": ["2026-03-29 02:30", "2026-03-30 09:00", "2026-04-05"]}
    )
    mapping = parse_column_map("customer_id=c,timestamp=t,event_type=signup")
    events, rejects = normalise_events(frame, mapping)
    assert events.num_rows == 0 and rejects["reason"].str.contains("pass --tz").all()
    events, rejects = normalise_events(frame, mapping, timezone="Europe/Berlin")
    # 02:30 on the spring-forward night does not exist in Berlin.
    assert events.num_rows == 2 and "does not exist or is ambiguous" in rejects["reason"].iloc[0]
    assert [t.isoformat() for t in events["timestamp"].to_pylist()] == [
        "2026-03-30T07:00:00+00:00",
        "2026-04-04T22:00:00+00:00",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("customer_id=a,timestamp=b", "missing required field(s) event_type"),
        ("customer_id=a,timestamp=b,event_type=c,colour=d", "unknown field 'colour'"),
        ("customer_id=a,timestamp,event_type=c", "FIELD=COLUMN"),
        ("customer_id=a,customer_id=b,timestamp=t,event_type=c", "given twice"),
    ],
)
def test_column_map_mistakes_are_named(text, message):
    with pytest.raises(IngestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_column_map(text)


def test_a_mapped_column_that_is_missing_is_named_with_the_columns_there_are():
    frame = pd.DataFrame({"c": ["a"], "t": ["2026-01-01T00:00:00Z"]})
    with pytest.raises(IngestError, match="no column 'amt'; its columns are c, t"):
        normalise_events(
            frame, parse_column_map("customer_id=c,timestamp=t,event_type=signup,amount=amt")
        )
    with pytest.raises(IngestError, match="neither a column of the file nor a valid event type"):
        normalise_events(frame, parse_column_map("customer_id=c,timestamp=t,event_type=Not A Type"))


def test_imported_profile_fields_are_validated_like_put(lake, tmp_path):
    path = tmp_path / "signups.csv"
    path.write_text(
        "user,ts,kind,email,first_name,consent_email\n"
        "u1,2026-02-01T08:00:00Z,signup,u1@example.com,Ada,true\n"
        'u2,2026-02-01T08:00:00Z,signup,u2@example.com,"Eve\r\nBcc: victim@example.com",true\n'
        "u3,2026-02-01T08:00:00Z,signup,u3@example.com,Bo,maybe\n"
        "u4,2026-02-01T08:00:00Z,subscription_changed,,,false\n"
        "u\x075,2026-02-01T08:00:00Z,page_view,,,\n"
    )
    mapping = parse_column_map("customer_id=user,timestamp=ts,event_type=kind")
    report = import_events(lake, path, mapping, rejects_dir=tmp_path / "rejects")
    assert (report.read, report.accepted, report.rejected) == (5, 2, 3)
    rejects = pd.read_csv(report.rejects_path)
    assert rejects["row"].tolist() == [2, 3, 5]
    assert rejects["reason"].str.split(":").str[0].tolist() == [
        "properties.first_name",
        "properties.consent_email",
        "customer_id",
    ]

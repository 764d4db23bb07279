"""Files as real exports write them: delimiters (comma, semicolon, tab, pipe, runs of blanks),
quoting, header or none, a UTF-8 BOM, gzip, decimal commas; every published CDNOW layout; a file
that cannot be read is one line naming the row (and column)."""

from __future__ import annotations

import gzip
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from engine.lake import EventLake
from nudge.cli import app
from pipelines.ingest import PRESETS, IngestError, import_events, parse_column_map
from pipelines.sniff import FileReadError, read_delimited

MAP = parse_column_map("customer_id=id,timestamp=when,event_type=purchase_completed,amount=total")


def write(path: Path, text: str, *, bom: bool = False, zipped: bool = False) -> Path:
    data = ("\ufeff" if bom else "").encode() + text.encode()
    path.write_bytes(gzip.compress(data) if zipped else data)
    return path


@pytest.mark.parametrize(
    ("text", "delimiter"),
    [
        ("id,when,total\nc1,2026-01-01T00:00:00Z,1.5\nc2,2026-01-02T00:00:00Z,2\n", ","),
        ("id;when;total\nc1;2026-01-01T00:00:00Z;1.5\nc2;2026-01-02T00:00:00Z;2\n", ";"),
        ("id\twhen\ttotal\nc1\t2026-01-01T00:00:00Z\t1.5\nc2\t2026-01-02T00:00:00Z\t2\n", "\t"),
        ("id|when|total\nc1|2026-01-01T00:00:00Z|1.5\nc2|2026-01-02T00:00:00Z|2\n", "|"),
        (
            "id   when                   total\n c1  2026-01-01T00:00:00Z   1.5\n"
            " c2  2026-01-02T00:00:00Z     2\n",
            "whitespace",
        ),
    ],
)
def test_the_delimiter_is_sniffed_and_columns_read_by_header_name(tmp_path, text, delimiter):
    frame, dialect = read_delimited(write(tmp_path / "f.txt", text))
    assert dialect.delimiter == delimiter and dialect.header and dialect.columns == 3
    assert list(frame.columns) == ["id", "when", "total"]
    assert frame.to_dict("list") == {"id": ["c1", "c2"], "when": ["2026-01-01T00:00:00Z",
                                     "2026-01-02T00:00:00Z"], "total": ["1.5", "2"]}  # fmt: skip


def test_quotes_bom_gzip_and_no_header(tmp_path):
    text = 'c1,"Smith, Ann",2026-01-01T00:00:00Z\nc2,"says ""hi""\nand more",2026-01-02T00:00:00Z\n'
    path = write(tmp_path / "export.csv", text, bom=True, zipped=True)
    frame, dialect = read_delimited(path)
    assert (dialect.gzip, dialect.bom, dialect.header, dialect.delimiter) == (
        True,
        True,
        False,
        ",",
    )
    assert list(frame.columns) == ["column_1", "column_2", "column_3"]
    assert frame["column_2"].tolist() == ["Smith, Ann", 'says "hi"\nand more']


def test_a_decimal_comma_with_semicolons_imports_amounts(tmp_path):
    lake = EventLake(tmp_path / "lake")
    path = write(tmp_path / "eu.csv", "id;when;total\nc1;2026-01-01T00:00:00Z;1.234,50\n"
                                      "c2;2026-01-02T00:00:00Z;7,25\n")  # fmt: skip
    report = import_events(lake, path, MAP, rejects_dir=tmp_path / "r", decimal=",")
    assert report.accepted == 2
    assert sorted(lake.read()["amount"].to_pylist()) == [7.25, 1234.5]


def test_an_unreadable_file_is_one_line_naming_row_and_column(tmp_path):
    latin = tmp_path / "latin.csv"
    latin.write_bytes("id,name\nc1,Ann\nc2,Jos\xe9\n".encode("latin-1"))
    with pytest.raises(FileReadError, match=r"row 3, column 2: byte 0xe9 is not UTF-8"):
        read_delimited(latin)
    ragged = write(tmp_path / "ragged.csv", "id,when,total\nc1,2026-01-01,1\nc2,2026-01-02\n")
    with pytest.raises(FileReadError, match=r"row 3: expected 3 columns .* found 2"):
        read_delimited(ragged)
    bad_zip = tmp_path / "bad.csv"
    bad_zip.write_bytes(b"\x1f\x8bnot really")
    with pytest.raises(FileReadError, match="cannot be decompressed"):
        read_delimited(bad_zip)
    runner = CliRunner()
    result = runner.invoke(app, ["import", str(latin), "--map", "customer_id=id,timestamp=id,"
                                 "event_type=x"])  # fmt: skip
    assert result.exit_code == 2 and "row 3, column 2" in result.output
    assert len(result.output.strip().splitlines()) == 1


def lifetimes_file(name: str) -> Path:
    return Path(str(metadata.distribution("lifetimes").locate_file(f"lifetimes/datasets/{name}")))


def cdnow_layouts(tmp_path: Path) -> dict[str, Path]:
    """Every published CDNOW layout, from the two files the lifetimes wheel ships."""
    sample = lifetimes_file("CDNOW_sample.txt").read_text()
    master = lifetimes_file("CDNOW_master.txt").read_text()
    master_rows = master.splitlines()[1:2001]
    sample_rows = sample.splitlines()
    layouts = {
        "sample (5 columns, no header)": sample,
        "sample with a header": "customer_id sample_id date units dollars\n" + sample,
        "master (4 columns, header)": "\n".join(master.splitlines()[:2001]) + "\n",
        "master without header": "\n".join(master_rows) + "\n",
        "master as CSV": "customer_id,date,number_of_cds,dollar_value\n"
        + "\n".join(",".join(r.split()) for r in master_rows)
        + "\n",
        "sample as gzip CSV": None,
    }
    paths = {}
    for name, text in layouts.items():
        path = tmp_path / (
            name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "") + ".txt"
        )
        if text is None:
            text = "\n".join(",".join(r.split()) for r in sample_rows) + "\n"
            write(path, text, zipped=True)
        else:
            write(path, text)
        paths[name] = path
    return paths


def test_the_cdnow_preset_reads_every_published_layout(tmp_path):
    preset = PRESETS["cdnow"]
    expected_sample = pd.read_csv(lifetimes_file("CDNOW_sample.txt"), sep=r"\s+", header=None)
    for name, path in cdnow_layouts(tmp_path).items():
        lake = EventLake(tmp_path / f"lake-{path.stem}")
        report = import_events(lake, path, preset.column_map, timezone=preset.timezone,
                               timestamp_format=preset.timestamp_format,
                               rejects_dir=tmp_path / "rejects", preset=preset)  # fmt: skip
        assert report.rejected == 0, (name, report.reasons)
        events = lake.read()
        if "sample" in name:
            assert report.read == len(expected_sample), name
            assert events["amount"].to_pandas().sum() == pytest.approx(expected_sample[4].sum())
        else:
            assert report.read == 2000, name
        first = "00004" if "sample" in name else "00001"
        assert first in set(events["customer_id"].to_pylist()), name


def test_a_cdnow_file_of_another_shape_says_what_it_expected(tmp_path):
    path = write(tmp_path / "three.txt", "1 19970101 2\n2 19970102 3\n")
    with pytest.raises(IngestError, match=r"row 1: the cdnow preset expects 4 or 5 columns"):
        import_events(EventLake(tmp_path / "lake"), path, PRESETS["cdnow"].column_map,
                      rejects_dir=tmp_path / "r", preset=PRESETS["cdnow"])  # fmt: skip


def test_the_cli_reads_a_decimal_comma(tmp_path, nudge_home):
    path = write(tmp_path / "eu.csv", "id;when;total\nc1;2026-01-01T00:00:00Z;3,5\n")
    runner = CliRunner()
    args = [
        "import",
        str(path),
        "--map",
        "customer_id=id,timestamp=when,event_type=purchase_completed,amount=total",
    ]
    result = runner.invoke(app, [*args, "--decimal", ","])
    assert result.exit_code == 0, result.output
    assert EventLake(nudge_home / "lake").read()["amount"].to_pylist() == [3.5]
    assert runner.invoke(app, [*args, "--decimal", "x"]).exit_code == 2

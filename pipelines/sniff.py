"""Reading delimited text files as real exports write them: `sniff` the dialect, `read_delimited`.

What is told from the file itself (never from its name):

- gzip, by its magic bytes (``1f 8b``), whatever the file is called;
- the encoding: UTF-8, with or without a byte-order mark; anything else is refused with the row
  and column of the first byte that is not UTF-8 (an export in Latin-1 says where it is);
- the delimiter: comma, semicolon, tab, pipe, or runs of whitespace (fixed-width exports such as
  CDNOW's) — the one that splits every sampled line into the same number of fields (more than
  one), quotes respected; with ``--decimal ,`` a comma is a decimal mark, not a delimiter;
- a header line: when a column's first value is not a number or date while all values below it
  are, or every value of the first line is a name that occurs nowhere below it. Without a header,
  columns are called ``column_1``, ``column_2``, … (``--map customer_id=column_1,…``).

A line with a different number of fields is refused with its row number, expected and found.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from engine.errors import UserError

__all__ = ["Dialect", "FileReadError", "parse_decimal", "read_delimited", "sniff"]

SAMPLE_LINES = 200
WHITESPACE = "whitespace"
_CANDIDATES = ("\t", ";", ",", "|")  # in order of preference when several fit
_NUMBER = re.compile(r"[+-]?(\d+([.,]\d*)?|[.,]\d+)([eE][+-]?\d+)?")
_DATE = re.compile(r"\d{4}-?\d{2}-?\d{2}([T ].*)?|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}.*")
_NAME = re.compile(r"[A-Za-z_][\w .()/-]{0,63}")


class FileReadError(UserError):
    """A file that cannot be read as a table; the message names the row (and column)."""


@dataclass(frozen=True)
class Dialect:
    """How a delimited file is written."""

    delimiter: str  # one character, or WHITESPACE for runs of blanks
    header: bool
    columns: int
    gzip: bool
    bom: bool

    def describe(self) -> str:
        names = {"\t": "tab", ";": "semicolon", ",": "comma", "|": "pipe", WHITESPACE: "whitespace"}
        parts = [f"{names.get(self.delimiter, self.delimiter)}-delimited", f"{self.columns} columns",
                 "a header line" if self.header else "no header line"]  # fmt: skip
        if self.gzip:
            parts.append("gzip")
        if self.bom:
            parts.append("UTF-8 BOM")
        return ", ".join(parts)


def _text(path: Path) -> tuple[str, bool, bool]:
    """The file's text, and whether it was gzip and had a BOM (FileReadError when unreadable)."""
    raw = path.read_bytes()
    zipped = raw[:2] == b"\x1f\x8b"
    if zipped:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise FileReadError(
                f"{path}: starts like gzip but cannot be decompressed: {exc}"
            ) from None
    bom = raw.startswith(b"\xef\xbb\xbf")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        row = raw.count(b"\n", 0, exc.start) + 1
        before = raw[line_start : exc.start].decode("utf-8", "replace")
        column = max(before.count(d) for d in _CANDIDATES) + 1 if before else 1
        raise FileReadError(
            f"{path}: row {row}, column {column}: byte 0x{raw[exc.start]:02x} is not UTF-8 "
            "(save the file as UTF-8)"
        ) from None
    return text, zipped, bom


def _records(text: str, delimiter: str, limit: int | None = None) -> list[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank record, quotes respected: a quoted field may hold
    the delimiter and line breaks. For WHITESPACE, runs of blanks and tabs are one delimiter."""
    out: list[tuple[int, list[str]]] = []
    if delimiter == WHITESPACE:
        for number, line in enumerate(text.split("\n"), start=1):
            stripped = line.strip().replace("\t", " ")
            if stripped:
                out.append((number, next(csv.reader([stripped], delimiter=" ",
                                                    skipinitialspace=True))))  # fmt: skip
                if limit is not None and len(out) >= limit:
                    break
        return out
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    start = 1
    try:
        for fields in reader:
            if fields and any(f.strip() for f in fields):
                out.append((start, fields))
                if limit is not None and len(out) >= limit:
                    break
            start = reader.line_num + 1
    except csv.Error as exc:
        raise FileReadError(f"row {reader.line_num}: {exc}") from None
    return out


def sniff(text: str, decimal: str | None = None) -> tuple[str, bool, int]:
    """The delimiter, whether there is a header line, and the number of columns of `text`."""
    head = text[: 256 * 1024]
    if not head.strip():
        return ",", False, 0
    fits: list[tuple[str, int]] = []
    for delimiter in (*_CANDIDATES, WHITESPACE):
        if delimiter == "," and decimal == ",":
            continue
        try:
            sample = _records(head, delimiter, SAMPLE_LINES)
        except FileReadError:
            continue
        if len(head) < len(text) and len(sample) > 1:
            sample = sample[:-1]  # the last record of a cut sample may be cut too
        counts = Counter(len(fields) for _, fields in sample)
        if len(counts) == 1 and (n := next(iter(counts))) > 1:
            fits.append((delimiter, n))
    if fits:
        # a character delimiter before whitespace (names with blanks); among those, the most fields
        characters = [f for f in fits if f[0] != WHITESPACE]
        delimiter, columns = max(characters, key=lambda f: f[1]) if characters else fits[0]
    else:
        delimiter, columns = _most_likely(head, decimal), 0
    rows = [fields for _, fields in _records(head, delimiter, SAMPLE_LINES)]
    columns = columns or len(rows[0])
    return delimiter, _has_header(rows), columns


def _most_likely(head: str, decimal: str | None) -> str:
    """The delimiter of a file whose lines do not all agree (the reader then names the line)."""
    first = next(line for line in head.split("\n") if line.strip())
    scores = {d: first.count(d) for d in _CANDIDATES if not (d == "," and decimal == ",")}
    best = max(scores, key=lambda d: scores[d])
    if scores[best]:
        return best
    return WHITESPACE if len(first.split()) > 1 else ","


def _value_kind(value: str) -> str:
    text = value.strip()
    if not text:
        return "empty"
    if _NUMBER.fullmatch(text) or _DATE.fullmatch(text):
        return "number"
    return "text"


def _has_header(rows: list[list[str]]) -> bool:
    if len(rows) < 2:
        return all(_value_kind(v) == "text" for v in rows[0]) if rows else False
    first, rest = rows[0], rows[1:]
    for j, value in enumerate(first):
        below = [r[j] for r in rest if j < len(r) and r[j].strip()]
        if (
            below
            and _value_kind(value) == "text"
            and all(_value_kind(v) == "number" for v in below)
        ):
            return True
    names = [v.strip() for v in first]
    if all(_NAME.fullmatch(n) for n in names) and len(set(names)) == len(names):
        return not any(j < len(r) and r[j].strip() == n for r in rest for j, n in enumerate(names))
    return False


def read_delimited(
    path: Path, *, decimal: str | None = None, header: bool | None = None
) -> tuple[pd.DataFrame, Dialect]:
    """The file as a frame of strings (blank cells missing), and the dialect it was read with.

    `header` overrides what sniffing decides (a preset knows its layout better).
    """
    text, zipped, bom = _text(path)
    delimiter, has_header, columns = sniff(text, decimal)
    if header is not None:
        has_header = header
    dialect = Dialect(delimiter, has_header, columns, zipped, bom)
    if not columns:
        raise FileReadError(f"{path}: the file is empty")
    try:
        records = _records(text, delimiter)
    except FileReadError as exc:
        raise FileReadError(f"{path}: {exc}") from None
    expected = len(records[0][1])
    for number, fields in records:
        if len(fields) != expected:
            raise FileReadError(
                f"{path}: row {number}: expected {expected} columns ({dialect.describe()}), "
                f"found {len(fields)}"
            )
    rows = [[f.strip() for f in fields] for _, fields in records]
    if has_header:
        names, rows = [n or f"column_{i}" for i, n in enumerate(rows[0], start=1)], rows[1:]
    else:
        names = [f"column_{i}" for i in range(1, expected + 1)]
    frame = pd.DataFrame(rows, columns=names, dtype=object)
    frame = frame.where(frame != "", None)
    return frame, dialect


def parse_decimal(values: pd.Series, decimal: str | None) -> pd.Series:
    """Numbers written with `decimal` as the decimal mark (``1.234,56`` with ``,``) as text that
    `pd.to_numeric` reads; other values unchanged."""
    if decimal != ",":
        return values
    text = values.astype("string")
    cleaned = text.str.replace(r"[\s.](?=\d{3}(\D|$))", "", regex=True).str.replace(",", ".")
    return cleaned.where(text.notna(), None).astype(object)

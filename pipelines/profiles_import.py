"""Import customer profiles (CSV or Parquet) into the engine database: ``nudge import-profiles``.

One row per customer: a ``customer_id`` column (or ``--id-column``), the profile contract's
fields by name (email, first_name, last_name, timezone, country, language, consent_email,
consent_sms, consent_push, signup_at, acquisition_channel; ``phone`` and any other column kept as
an attribute). Every row goes through the same contract as ``PUT /v1/customers``; a row that
fails it goes to a rejects file with its row number and the reason, and so does a row whose
address was erased (it is on the suppression list as a hash: a re-import must not mail it
again). The others are merged into the stored profiles — the file's non-empty values replace
the stored ones, attributes the file does not have are kept.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from engine.events import CustomerProfile, describe_validation_error
from engine.runtime.erasure import address_hash
from engine.store import EngineDB
from engine.store.customers import load_profiles, upsert_profiles
from engine.store.erasure import suppressed_hashes
from engine.store.sql import chunks
from pipelines.ingest import IngestError, read_table

__all__ = ["ProfileImport", "import_profiles"]

_BATCH = 2000


@dataclass(frozen=True)
class ProfileImport:
    """Counts of one profile import, and where the rejected rows went."""

    read: int
    imported: int
    created: int
    rejected: int
    rejects_path: Path | None
    reasons: dict[str, int]


def import_profiles(
    store: EngineDB,
    path: Path,
    *,
    rejects_dir: Path,
    salt: bytes,
    file_format: str | None = None,
    id_column: str = "customer_id",
) -> ProfileImport:
    """Validate the file's rows as profiles, merge the valid ones into the store, keep the rest."""
    frame = read_table(path, file_format)
    if id_column not in frame.columns:
        raise IngestError(
            f"{path}: no {id_column!r} column (its columns are "
            f"{', '.join(map(str, frame.columns))}); say which one with --id-column"
        )
    valid: dict[str, dict[str, Any]] = {}
    rejects: list[dict[str, Any]] = []
    suppressed = store.read(suppressed_hashes)
    for number, record in enumerate(frame.to_dict("records"), start=1):
        given = {str(k): _cell(v) for k, v in record.items()}
        given = {k: v for k, v in given.items() if v is not None}
        customer = given.pop(id_column, None)
        reason = _problem(customer, given, suppressed, salt)
        if reason is None:
            profile = CustomerProfile.model_validate({**given, "customer_id": customer})
            assert customer is not None
            valid[str(customer)] = profile.model_dump(mode="json", include=set(given))
        else:
            rejects.append({"row": number, "reason": reason, **record})
    created = _merge(store, valid)
    rejects_path = None
    if rejects:
        rejects_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        rejects_path = rejects_dir / f"{path.stem}-{stamp}.profile-rejects.csv"
        pd.DataFrame(rejects).to_csv(rejects_path, index=False)
    reasons: dict[str, int] = {}
    for r in rejects:
        key = str(r["reason"]).split(" (")[0]
        reasons[key] = reasons.get(key, 0) + 1
    return ProfileImport(len(frame), len(valid), created, len(rejects), rejects_path, reasons)


def _problem(
    customer: Any, given: Mapping[str, Any], suppressed: set[str], salt: bytes
) -> str | None:
    if customer is None:
        return "customer_id: is required"
    try:
        CustomerProfile.model_validate({**given, "customer_id": customer})
    except ValidationError as exc:
        return "; ".join(describe_validation_error(exc))[:2000]
    for kind in ("email", "phone"):
        value = given.get(kind)
        if isinstance(value, str) and address_hash(value, salt) in suppressed:
            return f"{kind}: belongs to an erased customer (on the suppression list)"
    return None


def _merge(store: EngineDB, rows: Mapping[str, Mapping[str, Any]]) -> int:
    """Merge into the stored profiles in batches; returns how many customers were new."""
    created = 0
    items = list(rows.items())
    for chunk in chunks(items, _BATCH):
        now = datetime.now(UTC).timestamp()
        with store.begin() as conn:
            stored = load_profiles(conn, [c for c, _ in chunk])
            created += sum(1 for c, _ in chunk if c not in stored)
            merged = {c: {**stored.get(c, {"customer_id": c}), **p} for c, p in chunk}
            upsert_profiles(conn, merged, now)
    return created


def _cell(value: Any) -> Any:
    """A file's cell as the contract reads it: blank is absent, JSON text of a list/object parsed."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    if value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text[0] in "[{":
            try:
                return json.loads(text)
            except ValueError:
                return text
        return text
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value.item() if hasattr(value, "item") else value

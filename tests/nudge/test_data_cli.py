"""`nudge import-profiles`, `nudge customers erase`, `nudge lake sync` through the CLI, on SQLite and
the real PostgreSQL: rejects with row and reason, an erased address refused on re-import, the lake
fed exactly once."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from engine.lake import EventLake
from engine.runtime.inbox import accept_events
from engine.store import EngineDB
from engine.store.customers import load_profiles
from engine.store.erasure import erasure_log
from nudge.cli import app
from tests.conftest import POSTGRES_URL, postgres_available, require_service

runner = CliRunner()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine_url(request, nudge_home, monkeypatch):
    if request.param == "sqlite":
        nudge_home.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{nudge_home / 'engine.db'}"
        monkeypatch.setenv("NUDGE_ENGINE_DB", url)
        yield url
        return
    ok, why = postgres_available()
    require_service("PostgreSQL at 127.0.0.1:5432", ok, why)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    monkeypatch.setenv("NUDGE_ENGINE_DB", url)
    yield url
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


PROFILES = """customer_id,email,first_name,consent_email,country,tier
c1,c1@example.com,Ann,true,DE,gold
c2,not-an-address,Bob,true,FR,
,c3@example.com,Cy,false,US,
c4,c4@example.com,Di,maybe,GB,silver
c5,c5@example.com,Ed,0,Germany,
"""


def test_import_profiles_merges_valid_rows_and_rejects_the_rest_with_row_and_reason(
    engine_url, nudge_home, tmp_path
):
    path = tmp_path / "profiles.csv"
    path.write_text(PROFILES)
    result = runner.invoke(app, ["import-profiles", str(path)])
    assert result.exit_code == 0, result.output
    assert "5 read, 1 imported (1 new), 4 rejected" in result.output
    [rejects_file] = (nudge_home / "rejects").glob("profiles-*.profile-rejects.csv")
    rejects = pd.read_csv(rejects_file)
    reasons = dict(zip(rejects["row"], rejects["reason"], strict=True))
    assert reasons[2].startswith("email:")
    assert reasons[3] == "customer_id: is required"
    assert reasons[4].startswith("consent_email: expected true or false")
    assert reasons[5].startswith("country:")
    db = EngineDB.open(engine_url)
    assert db.read(load_profiles, ["c1"])["c1"] == {
        "customer_id": "c1", "email": "c1@example.com", "first_name": "Ann",
        "consent_email": True, "country": "DE", "tier": "gold",
    }  # fmt: skip
    # a second file updates what it has and keeps the rest
    (tmp_path / "more.parquet").parent.mkdir(exist_ok=True)
    pd.DataFrame({"customer_id": ["c1"], "first_name": ["Anna"]}).to_parquet(
        tmp_path / "more.parquet"
    )
    assert runner.invoke(app, ["import-profiles", str(tmp_path / "more.parquet")]).exit_code == 0
    assert db.read(load_profiles, ["c1"])["c1"]["first_name"] == "Anna"
    assert db.read(load_profiles, ["c1"])["c1"]["tier"] == "gold"
    db.dispose()
    missing = runner.invoke(app, ["import-profiles", str(path), "--id-column", "user"])
    assert missing.exit_code == 2 and "no 'user' column" in missing.output


def test_erase_then_reimport_refuses_the_address(engine_url, nudge_home, tmp_path):
    path = tmp_path / "profiles.csv"
    path.write_text(PROFILES)
    assert runner.invoke(app, ["import-profiles", str(path)]).exit_code == 0
    result = runner.invoke(app, ["customers", "erase", "c1", "--yes", "--json"])
    assert result.exit_code == 0, result.output
    erased = json.loads(result.output)
    assert erased["removed"]["profile"] == 1 and erased["customer"].startswith("erased:")
    db = EngineDB.open(engine_url)
    assert db.read(load_profiles, ["c1"]) == {}
    assert db.read(erasure_log, erased["customer"])[0]["requested_by"] == "cli"
    again = runner.invoke(app, ["import-profiles", str(path)])
    assert "0 imported" in again.output
    [*_, latest] = sorted((nudge_home / "rejects").glob("profiles-*.profile-rejects.csv"))
    rejects = pd.read_csv(latest)
    assert (
        rejects.loc[rejects["row"] == 1, "reason"]
        .item()
        .startswith("email: belongs to an erased customer")
    )
    db.dispose()
    refused = runner.invoke(app, ["customers", "erase", "c2"], input="n\n")
    assert refused.exit_code == 1


def test_lake_sync_copies_accepted_events_once(engine_url, nudge_home):
    db = EngineDB.open(engine_url)
    t0 = datetime(2026, 1, 5, tzinfo=UTC)
    events = [{"event_id": f"e{i}", "customer_id": "c1", "event_type": "page_view",
               "timestamp": (t0 + timedelta(minutes=i)).isoformat()} for i in range(12)]  # fmt: skip
    accept_events(db, events, source="test")
    db.dispose()
    first = runner.invoke(app, ["lake", "sync", "--batch", "5", "--settle", "0"])
    assert first.exit_code == 0, first.output
    assert "12 events (12 new to the lake" in first.output
    assert EventLake(nudge_home / "lake").read().num_rows == 12
    second = runner.invoke(app, ["lake", "sync", "--settle", "0"])
    assert "0 events" in second.output


@pytest.mark.slow
def test_engine_serve_syncs_the_lake_in_the_background_and_erases(nudge_home, tmp_path):
    import base64
    import os
    import subprocess
    import sys
    import time

    import httpx

    from nudge.local_server import free_port, wait_until_ready

    port = free_port()
    env = {**os.environ, "NUDGE_HOME": str(nudge_home), "NUDGE_API_KEY": "k-serve",
           "NUDGE_LAKE_SYNC_SECONDS": "0.5", "NUDGE_ENGINE_DB": f"sqlite:///{nudge_home / 'engine.db'}"}  # fmt: skip
    process = subprocess.Popen([sys.executable, "-m", "nudge.cli", "engine", "serve", "--port",
                                str(port)], env=env, stdout=subprocess.DEVNULL)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{base}/healthz", process, 90, "engine serve")
        auth = {"Authorization": "Basic " + base64.b64encode(b"k-serve:").decode()}
        message = {"type": "track", "userId": "s1", "event": "Order Completed",
                   "properties": {"total": 12}, "messageId": "m-serve",
                   "timestamp": datetime(2026, 1, 2, tzinfo=UTC).isoformat()}  # fmt: skip
        assert httpx.post(f"{base}/v1/track", json=message, headers=auth).status_code == 200
        lake = EventLake(nudge_home / "lake")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and lake.read().num_rows == 0:
            time.sleep(0.2)
        assert lake.read()["event_id"].to_pylist() == ["m-serve"]
        erased = httpx.delete(
            f"{base}/v1/customers/s1", headers={"X-API-Key": "k-serve"}, timeout=120
        )
        assert erased.status_code == 200, erased.text
        assert erased.json()["removed"]["lake_events"] == 1
        assert (
            httpx.get(f"{base}/v1/customers/s1", headers={"X-API-Key": "k-serve"}).status_code
            == 404
        )
    finally:
        process.terminate()
        process.wait(timeout=30)

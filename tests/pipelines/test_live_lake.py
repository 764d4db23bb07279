"""Live data reaches the models: events and profiles posted to the engine over HTTP are synced to the
lake, features are built and the models trained from it, and customers the lake only knows through
the engine get real scores from the scoring service (not the population prior); their Feast online
rows go with an erasure."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pandas as pd
import pytest

from tests.support import LocalServer

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

KEY = "k-live"
SERVING_KEY = "k-live-serving-0123"


def api_events(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Lake-shaped simulated events as the engine's API takes them."""
    out = []
    for row in frame.itertuples(index=False):
        out.append({"event_id": row.event_id, "customer_id": row.customer_id,
                    "event_type": row.event_type, "timestamp": row.timestamp.isoformat(),
                    "properties": json.loads(row.properties) if row.properties else {}})  # fmt: skip
    return out


@pytest.fixture(scope="module")
def live_home(tmp_path_factory):
    """A home whose lake holds 320 customers directly and 80 more only through the engine."""
    from engine.lake import EventLake
    from engine.runtime.api import create_app
    from engine.runtime.lake_sync import sync_once
    from engine.store import EngineDB
    from features.schema import ENTITY_KEY
    from pipelines.sample_home import train_from_lake
    from pipelines.simulator import simulate

    home = tmp_path_factory.mktemp("live") / "home"
    home.mkdir(parents=True)
    sim = simulate(400, 240, seed=5)
    events = sim.events if isinstance(sim.events, pd.DataFrame) else sim.events.to_pandas()
    ids = sorted(sim.customers[ENTITY_KEY].astype(str))
    live = set(ids[-80:])
    lake = EventLake(home / "lake")
    lake.append(events[~events["customer_id"].isin(live)])
    lake.upsert_customers(sim.customers[~sim.customers[ENTITY_KEY].astype(str).isin(live)])
    db = EngineDB.open(f"sqlite:///{home / 'engine.db'}")
    posted = events[events["customer_id"].isin(live)]
    with LocalServer(create_app(db, KEY)) as server:
        items = api_events(posted)
        for start in range(0, len(items), 1000):
            response = httpx.post(f"{server.url}/v1/events", json={"events": items[start:start + 1000]},
                                  headers={"X-API-Key": KEY}, timeout=60)  # fmt: skip
            assert response.status_code == 202, response.text
            assert response.json()["invalid"] == 0
        for record in sim.customers[sim.customers[ENTITY_KEY].astype(str).isin(live)].to_dict(
            "records"
        ):
            body = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in record.items()
                    if k != ENTITY_KEY and v is not None and v == v}  # fmt: skip
            httpx.put(f"{server.url}/v1/customers/{record[ENTITY_KEY]}", json=body,
                      headers={"X-API-Key": KEY}).raise_for_status()  # fmt: skip
    before = set(lake.read(columns=["customer_id"])["customer_id"].to_pylist())
    report = sync_once(db, lake, settle=0)
    assert report.added == len(posted) and report.profiles == 80
    scored = train_from_lake(home, lake, max_rounds=30)
    uri, versions, online = scored.tracking_uri, scored.versions, scored.online_ids
    yield {"home": home, "db": db, "uri": uri, "versions": versions, "before": before,
           "live_online": sorted(live & online), "live": sorted(live)}  # fmt: skip
    db.dispose()


def test_customers_known_only_through_the_engine_get_real_scores(live_home, monkeypatch):
    from pydantic import SecretStr

    from serving.app import create_app
    from serving.service import ScoringService
    from serving.settings import ServingSettings

    assert not set(live_home["live"]) & live_home["before"], "the lake had none of them before"
    targets = live_home["live_online"]
    assert len(targets) >= 20
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("NUDGE_FEAST_CONFIG", raising=False)
    settings = ServingSettings(home=live_home["home"], api_key=SecretStr(SERVING_KEY),
                               mlflow_tracking_uri=live_home["uri"], model_poll_seconds=3600)  # fmt: skip
    service = ScoringService(settings).start()
    try:
        with LocalServer(create_app(service=service)) as server:
            response = httpx.post(f"{server.url}/v1/scores", json={"customer_ids": targets},
                                  headers={"X-API-Key": SERVING_KEY}, timeout=60)  # fmt: skip
    finally:
        service.close()
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert all(r["known"] for r in results), [r for r in results if not r["known"]][:2]
    for r in results:
        for model, score in r["scores"].items():
            assert score["model_version"] == live_home["versions"][model]
    values = [r["scores"]["churn"]["value"] for r in results]
    assert len(set(values)) > 1, "real scores differ between customers"


def test_erasure_removes_the_customers_feast_online_rows(live_home):
    from features.store import online_features, open_store
    from pipelines.online_erasure import erase_online_rows

    victim = live_home["live_online"][0]
    store = open_store(live_home["home"], production=False)
    assert victim in set(online_features(store, "churn", [victim])["customer_id"])
    removed = erase_online_rows(victim, live_home["home"], production=False)
    assert removed["store"] == "sqlite" and removed["rows"] > 0
    store = open_store(live_home["home"], production=False)
    assert online_features(store, "churn", [victim]).empty
    other = live_home["live_online"][1]
    assert other in set(online_features(store, "churn", [other])["customer_id"])
    assert erase_online_rows(victim, live_home["home"], production=False)["rows"] == 0

"""Done when: two new model definitions dropped into a models folder go the whole way with no code
change — feature tables and Feast views, training beside baselines, MLflow registration, the
scoring service (its model list from the registry), a trigger that uses the score, a backtest.

One module-scoped run (build, train) on a copy of the session's simulated lake; ~1.5 min here.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:fetch_arrow_table:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

REFUND = """\
name: refund_30d
task: classification
description: the probability of a refund in the next {h} days
label:
  event: refund
  horizon: 30d
features:
  - activity
  - value
  - label_history
  - {events: [refund, purchase_completed], windows: [30, 90]}
retrain: 14d
"""
BIG_ORDER = """\
name: big_order_90d
task: classification
description: the probability of an order of at least $50 in the next {h} days
label:
  event: purchase_completed
  where: {amount: {gte: 50}}
  horizon: 90d
features:
  - activity
  - {property: items, event: purchase_completed, last: true}
  - {property: items, event: purchase_completed, distinct: true, window: 90}
"""
NEW = ("refund_30d", "big_order_90d")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    (folder / "refund_30d.yaml").write_text(REFUND)
    (folder / "big_order_90d.yaml").write_text(BIG_ORDER)
    return folder


@pytest.fixture(scope="module")
def world(
    models_dir: Path,
    pipeline_home: Path,
    prefect_harness: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """A home with the session's lake, its features built and the two models trained."""
    from pipelines.flows.features import build_features
    from pipelines.flows.train import train

    home = tmp_path_factory.mktemp("definitions_home")
    shutil.copytree(pipeline_home / "lake", home / "lake")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("NUDGE_MODELS_DIR", str(models_dir))
        built = build_features(home=str(home), step_days=30, count=10)
        trained = train(home=str(home), tracking_uri=uri, max_rounds=80)
        yield {"home": home, "uri": uri, "built": built, "trained": trained}


@pytest.fixture
def defined(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NUDGE_MODELS_DIR", str(models_dir))
    return models_dir


def test_features_views_and_services_come_from_the_definitions(world, defined):
    from features.store import online_features, open_store

    home = world["home"]
    assert {"refund_30d_features", "big_order_90d_features"} <= set(world["built"]["views"])
    assert world["built"]["models_without_data"] == {}
    for view in ("refund_30d_features", "big_order_90d_features"):
        assert (home / "features" / f"{view}.parquet").exists()
    store = open_store(home)
    assert {s.name for s in store.list_feature_services()} >= set(NEW)
    online = online_features(store, "refund_30d", [f"c{i:07d}" for i in range(1, 30)])
    assert "refund_30d_refund_count_90d" in online.columns and len(online) > 0


def test_both_models_train_beside_their_baselines_and_are_registered(world, defined):
    import mlflow

    trained = world["trained"]
    assert set(trained) == set(NEW)
    client = mlflow.MlflowClient(world["uri"], registry_uri=world["uri"])
    for name in NEW:
        run = trained[name]
        assert list(run["metrics"]) == ["model", "recency_frequency", "base_rate"]
        assert run["version"] == "1"
        assert str(client.get_model_version_by_alias(name, "challenger").version) == "1"
        tags = client.get_run(run["run_id"]).data.tags
        assert tags["definition"].endswith(f"{name}.yaml")
        card = client.download_artifacts(run["run_id"], "model_card.md")
        assert "Predicts** the probability of" in Path(card).read_text()
    # An order of $50+ is learnable from the purchase history: the model beats the base rate.
    big = trained["big_order_90d"]["metrics"]
    assert big["model"]["roc_auc"] > big["base_rate"]["roc_auc"]
    assert trained["big_order_90d"]["champion"], trained["big_order_90d"]["reason"]


def test_the_service_lists_models_from_the_registry_and_explains_in_words(world, defined):
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.settings import ServingSettings

    champions = [n for n in NEW if world["trained"][n]["champion"]]
    settings = ServingSettings(
        home=world["home"], api_key="k", mlflow_tracking_uri=world["uri"], model_poll_seconds=60
    )
    with TestClient(create_app(settings)) as client:
        listed = client.get("/v1/models", headers={"X-API-Key": "k"}).json()["models"]
        # Both are registered: the registry, not a list in code, says what the service knows.
        assert sorted(m["name"] for m in listed) == sorted(NEW)
        serving = sorted(m["name"] for m in listed if m["status"] == "serving")
        assert serving == sorted(champions)
        body = {"customer_ids": ["c0000001", "c0000002"], "explain": True, "models": champions}
        answer = client.post("/v1/scores", json=body, headers={"X-API-Key": "k"})
        assert answer.status_code == 200, answer.text
        scores = answer.json()["results"][0]["scores"]
        assert set(scores) == set(champions)
        reasons = [r for s in scores.values() for r in s["reasons"] or []]
        assert reasons and all(r["description"] and r["feature"] not in r["description"]
                               for r in reasons)  # fmt: skip
        unknown = client.post(
            "/v1/scores", json={**body, "models": ["nope"]}, headers={"X-API-Key": "k"}
        )
        assert unknown.status_code == 422 and "one of the models" in unknown.text
        schema = client.get("/openapi.json").text
        assert '"enum":["big_order_90d","refund_30d"]' in schema.replace(" ", "")


def test_a_trigger_uses_the_new_score(world, defined):
    from engine.decisions.decide import DecisionOutcome, EventView, decide
    from engine.decisions.state import CustomerState, StateLimits
    from engine.decisions.suppression import SuppressionPolicy
    from engine.dsl.triggers import TriggerIndex, check_score_models, load_trigger_text
    from engine.runtime.scoring import ScoreClient
    from models.definitions import load_definitions
    from serving.app import create_app
    from serving.settings import ServingSettings
    from tests.support import LocalServer

    model = next(n for n in NEW if world["trained"][n]["champion"])
    text = f"""
id: likely_{model}
when: {{event: session_start}}
if: {{score: {{model: {model}, gte: 0.0, max_age: 1d}}}}
actions: [{{webhook: {{url: "https://example.com/hook"}}}}]
"""
    loaded = load_trigger_text(text, "likely.yaml")
    names = load_definitions().names
    assert not loaded.issues and not check_score_models(loaded.triggers, names)
    typo = load_trigger_text(text.replace(f"model: {model}", "model: refnd_30d"), "typo.yaml")
    issues = check_score_models(typo.triggers, names)
    assert len(issues) == 1 and "typo.yaml:4" in str(issues[0]) and "refnd_30d" in str(issues[0])

    settings = ServingSettings(home=world["home"], api_key="k", mlflow_tracking_uri=world["uri"])
    app = create_app(settings)
    app.state.service.start()
    try:
        with LocalServer(app) as server:
            client = ScoreClient(server.url, api_key="k")
            scores = client.fetch(["c0000001"], [model])["c0000001"]
            client.close()
    finally:
        app.state.service.close()
    assert scores[model] is not None and 0.0 <= scores[model].value <= 1.0
    # An event just after the features' snapshot: `max_age: 1d` is measured from it.
    assert scores[model].features_at is not None
    at = scores[model].features_at + 3600
    event = EventView("e1", "c0000001", "session_start", at, None, {"properties": {}})
    decisions = decide(
        event,
        {"customer_id": "c0000001"},
        CustomerState("c0000001"),
        TriggerIndex(loaded.triggers),
        scores,
        SuppressionPolicy(),
        StateLimits(),
    )
    assert [d.outcome for d in decisions] == [DecisionOutcome.FIRED]


def test_a_backtest_of_one_new_model(world, defined):
    from pipelines.flows.backtest import backtest

    payload = backtest(
        cutoff="2025-09-30",
        home=str(world["home"]),
        tracking_uri=world["uri"],
        models=["big_order_90d"],
    )
    block = payload["big_order_90d"]
    assert set(block) == {"model", "baselines", "horizon_days"} and block["horizon_days"] == 90
    assert set(block["model"]) == {"roc_auc", "log_loss"}
    assert set(block["baselines"]) == {"base_rate", "recency_frequency"}
    assert block["model"]["roc_auc"] > 0.6
    assert set(payload) == {"big_order_90d", "customers"}

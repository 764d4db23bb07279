"""The scoring API over real HTTP: scores, priors, freshness, reasons, auth, validation, limits,
metrics, and the engine's own client against it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from features.schema import MODEL_NAMES, model_features
from tests.serving.conftest import API_KEY, make_settings
from tests.support import LocalServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


def scores(client: httpx.Client, ids: list[str], **extra: Any) -> list[dict[str, Any]]:
    response = client.post("/v1/scores", json={"customer_ids": ids, **extra})
    assert response.status_code == 200, response.text
    return response.json()["results"]


@pytest.fixture(scope="module")
def online(prepared):
    """The repo's own online read (features.store.online_features), for comparisons."""
    from features.store import online_features, open_store

    store = open_store(prepared.home, production=False)
    return lambda model, ids: online_features(store, model, ids)


@pytest.fixture(scope="module")
def tight(prepared):
    """A second service: fresh-enough features, custom bands, small limits, two reasons."""
    from serving.app import create_app
    from serving.service import ScoringService

    age = datetime.now(UTC) - prepared.snapshot.to_pydatetime()
    settings = make_settings(
        prepared,
        stale_after=age + timedelta(days=30),
        score_bands={"churn": [0.0, 0.0]},
        max_batch=5,
        max_body_bytes=2_048,
        explain_top=2,
    )
    svc = ScoringService(settings).start()
    with (
        LocalServer(create_app(service=svc)) as server,
        httpx.Client(base_url=server.url, headers={"X-API-Key": API_KEY}, timeout=30) as http,
    ):
        yield http
    svc.close()


# -- scores ----------------------------------------------------------------------------------------


def test_known_customers_get_every_model_with_band_version_and_snapshot(client, prepared, service):
    from serving.scoring import band_of

    ids = prepared.known_ids[:7]
    results = scores(client, ids)

    assert [r["customer_id"] for r in results] == ids
    for result in results:
        assert result["known"] is True
        assert set(result["scores"]) == set(MODEL_NAMES)
        for model, score in result["scores"].items():
            assert score["model_version"] == prepared.versions[model]
            assert score["band"] == band_of(score["value"], service.settings.bands_for(model))
            assert score["features_at"] == "2025-08-01T00:00:00+00:00"
            assert score["stale"] is True  # the snapshot is far older than the 2-day default
            assert "reasons" not in score
        assert 0 < result["scores"]["churn"]["value"] < 1
        assert 0 < result["scores"]["engagement"]["value"] < 1
        assert result["scores"]["ltv"]["value"] > 0
        assert 0 <= result["scores"]["engagement"]["best_send_hour"] <= 23
    # Three models give three bands somewhere among a few customers, not one constant.
    assert len({r["scores"]["churn"]["band"] for r in scores(client, prepared.known_ids[:200])}) > 1


def test_values_are_the_registered_models_applied_to_feast_online_features(
    client, prepared, online
):
    """End to end against an independent path: the registry's pyfunc (with its signature
    enforcement) on the repo's own online read — so dtypes and column order match training."""
    import mlflow

    ids = prepared.known_ids[100:140]
    results = {r["customer_id"]: r for r in scores(client, ids)}
    registry = mlflow.MlflowClient(prepared.tracking_uri, prepared.tracking_uri)
    for model in MODEL_NAMES:
        location = registry.get_model_version_download_uri(model, prepared.versions[model])
        frame = online(model, ids)
        expected = mlflow.pyfunc.load_model(location).predict(frame[list(model_features(model))])
        served = [results[c]["scores"][model]["value"] for c in frame["customer_id"]]
        np.testing.assert_allclose(served, expected["score"].to_numpy(), rtol=1e-12)


def test_the_services_single_feast_read_equals_the_per_model_online_read(service, prepared, online):
    ids = [*prepared.known_ids[:30], *prepared.unknown_ids[:3], "nobody"]
    rows = service.features.read(list(MODEL_NAMES), ids)
    for model in MODEL_NAMES:
        frame, features = online(model, ids), list(model_features(model))
        assert rows[model].customer_ids == frame["customer_id"].tolist() == ids[:30]
        assert rows[model].features == tuple(features)
        stamps = pd.to_datetime(rows[model].snapshots, unit="s", utc=True)
        assert stamps.tolist() == frame["event_timestamp"].tolist()
        # Exactly the values LightGBM gets from the frame (NaN where the frame has NaN).
        expected = frame[features].to_numpy(dtype=np.float64)
        np.testing.assert_array_equal(rows[model].matrix, expected)


def test_a_batch_answers_field_by_field_what_single_requests_answer(client, prepared, service):
    """Values, bands, snapshots, send hours and reasons: the batch path is no approximation."""
    ids = [*prepared.known_ids[200:400], *prepared.unknown_ids[:3], "nobody"]
    body = {"customer_ids": ids, "explain": True}
    batch = client.post("/v1/scores", json=body).json()["results"]
    assert len(batch) == len(ids) and all(service.features._checked.values())
    assert service.features._checked, "the direct read is in use"
    for result in batch:
        single = client.post("/v1/scores", json={**body, "customer_ids": [result["customer_id"]]})
        assert single.json()["results"] == [result]
    assert any(r["scores"]["churn"]["reasons"] for r in batch)


def test_an_unknown_customer_gets_the_population_prior_never_an_error(client, prepared):
    priors = {m["name"]: m["population_prior"] for m in client.get("/v1/models").json()["models"]}
    known = prepared.known_ids[0]
    ids = [prepared.unknown_ids[0], known, "never-seen@example.com", known]
    results = scores(client, ids)

    assert [r["customer_id"] for r in results] == ids[:3]  # request order, duplicates once
    assert [r["known"] for r in results] == [False, True, False]
    for result in (results[0], results[2]):
        for model, score in result["scores"].items():
            assert score["known"] is False
            assert score["value"] == pytest.approx(priors[model])
            assert score["features_at"] is None and score["stale"] is False
            assert score["model_version"] == prepared.versions[model]
    # The prior is the mean score over the latest snapshot's population, so it sits inside
    # the range of real scores and is not a placeholder such as 0 or 0.5.
    population = [r["scores"]["churn"]["value"] for r in scores(client, prepared.known_ids[:300])]
    assert min(population) < priors["churn"] < max(population)
    assert priors["churn"] == pytest.approx(np.mean(population), abs=0.05)


def test_models_can_be_chosen_and_the_single_customer_route_gives_the_same_answer(client, prepared):
    customer = prepared.known_ids[3]
    both = scores(client, [customer], models=["ltv", "churn", "ltv"])[0]
    assert set(both["scores"]) == {"ltv", "churn"}

    single = client.get(f"/v1/customers/{customer}/scores", params={"models": ["ltv", "churn"]})
    assert single.status_code == 200
    assert single.json() == both
    unknown = client.get("/v1/customers/someone%20new/scores")
    assert unknown.status_code == 200 and unknown.json()["known"] is False


def test_stale_flag_follows_the_configured_age_and_bands_the_configured_thresholds(
    tight, client, prepared
):
    ids = prepared.known_ids[:5]  # the tight service's batch limit
    fresh = scores(tight, ids)
    assert all(not s["stale"] for r in fresh for s in r["scores"].values())
    assert all(r["scores"]["churn"]["band"] == "high" for r in fresh)  # thresholds [0, 0]
    stale = scores(client, ids)
    assert all(s["stale"] for r in stale for s in r["scores"].values())
    assert [r["scores"]["churn"]["value"] for r in fresh] == [
        r["scores"]["churn"]["value"] for r in stale
    ]


def test_explain_gives_the_top_lightgbm_contributions_with_feature_values(
    client, prepared, online, service
):
    from models.lgbm import feature_contributions

    ids = prepared.known_ids[200:210]
    results = {r["customer_id"]: r for r in scores(client, ids, explain=True)}
    for model in MODEL_NAMES:
        frame = online(model, ids)
        champion = service.champions.served()[model]
        contributions = feature_contributions(champion.model.estimator, frame)
        for i, customer in enumerate(frame["customer_id"]):
            reasons = results[customer]["scores"][model]["reasons"]
            row = contributions.iloc[i].drop("bias").sort_values(ascending=False)
            expected = [(f, c) for f, c in row.head(3).items() if c > 0]
            assert [r["feature"] for r in reasons] == [f for f, _ in expected]
            assert [r["contribution"] for r in reasons] == pytest.approx([c for _, c in expected])
            for reason in reasons:
                value = frame.iloc[i][reason["feature"]]
                assert reason["value"] == (None if pd.isna(value) else pytest.approx(value))
    assert any(results[c]["scores"]["churn"]["reasons"] for c in ids)
    unknown = scores(client, ["new-customer"], explain=True)[0]
    assert all(s["reasons"] == [] for s in unknown["scores"].values())


def test_explain_top_is_configurable(tight, prepared):
    result = scores(tight, prepared.known_ids[:5], explain=True)
    assert max(len(s["reasons"]) for r in result for s in r["scores"].values()) == 2


# -- the engine's client ---------------------------------------------------------------------------


def test_the_engines_score_client_reads_the_service(base_url, client, prepared):
    from engine.runtime.scoring import ScoreClient

    ids = [*prepared.known_ids[:4], prepared.unknown_ids[0]]
    direct = {r["customer_id"]: r for r in scores(client, ids)}
    engine = ScoreClient(base_url, api_key=API_KEY, retries=0)
    try:
        fetched = engine.fetch(ids, ["churn", "engagement"])
    finally:
        engine.close()
    assert engine.last_error is None
    for customer in ids:
        for model in ("churn", "engagement"):
            value = fetched[customer][model]
            assert value is not None
            assert value.value == pytest.approx(direct[customer]["scores"][model]["value"])
            assert value.model_version == prepared.versions[model]
            assert value.known is direct[customer]["known"]

    refused = ScoreClient(base_url, api_key="wrong", retries=0)
    try:
        assert refused.fetch(ids[:1], ["churn"]) == {ids[0]: {"churn": None}}
        assert "401" in (refused.last_error or "")
    finally:
        refused.close()


def test_the_engines_client_gets_snapshot_and_send_hour_and_survives_an_unknown_model(
    base_url, client, prepared, caplog
):
    """Against the real service, which answers a 422 for a model it does not know: the client
    asks only for served models, so the unknown one is None and the others arrive."""
    import logging

    from engine.runtime.scoring import ScoreClient

    ids = [*prepared.known_ids[:3], prepared.unknown_ids[0]]
    direct = {r["customer_id"]: r for r in scores(client, ids)}
    engine = ScoreClient(base_url, api_key=API_KEY, retries=0)
    try:
        with caplog.at_level(logging.WARNING, logger="engine.runtime.scoring"):
            fetched = engine.fetch(ids, ["churn", "engagement", "upsel"])
            engine.fetch(ids[:1], ["upsel"])
    finally:
        engine.close()
    assert engine.last_error is None and engine.breaker.state.value == "closed"
    assert sum("'upsel'" in r.getMessage() for r in caplog.records) == 1
    snapshot = datetime(2025, 8, 1, tzinfo=UTC).timestamp()
    for customer in ids:
        assert fetched[customer]["upsel"] is None
        churn, engagement = fetched[customer]["churn"], fetched[customer]["engagement"]
        answer = direct[customer]["scores"]["engagement"]
        assert engagement.best_send_hour == answer.get("best_send_hour")
        if direct[customer]["known"]:
            assert churn.features_at == engagement.features_at == snapshot
            assert 0 <= engagement.best_send_hour <= 23
        else:
            assert churn.features_at is None and churn.known is False


# -- models, health, metrics -----------------------------------------------------------------------


def test_models_lists_versions_training_time_metrics_and_priors(client, prepared):
    body = client.get("/v1/models").json()["models"]
    # The registry's models, in the definitions' order (files by name).
    assert [m["name"] for m in body] == sorted(MODEL_NAMES)
    for info in body:
        assert info["status"] == "serving" and info["alias"] == "champion"
        assert info["version"] == info["alias_version"] == prepared.versions[info["name"]]
        assert info["load_failure"] is None
        assert datetime.fromisoformat(info["trained_at"]) <= datetime.now(UTC)
    churn = body[0]
    assert 0.5 < churn["holdout_metrics"]["roc_auc"] <= 1
    assert "normalised_gini" in next(m for m in body if m["name"] == "ltv")["holdout_metrics"]


def test_health_and_readiness(client, base_url):
    assert httpx.get(f"{base_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{base_url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True and ready.json()["feature_store"] is True


def test_metrics_count_requests_by_route_and_show_served_versions(client, base_url, prepared):
    customer = prepared.known_ids[5]
    client.get(f"/v1/customers/{customer}/scores")
    scores(client, [customer, "nobody"])
    text = httpx.get(f"{base_url}/metrics").text

    assert (
        'nudge_scoring_requests_total{method="GET",route="/v1/customers/{customer_id}/scores",'
        'status="200"}' in text
    )
    assert 'nudge_scoring_request_duration_seconds_bucket{le="0.005",route="/v1/scores"}' in text
    assert 'nudge_scoring_scores_total{known="false",model="churn"}' in text
    for model, version in prepared.versions.items():
        assert f'nudge_scoring_model_version{{model="{model}"}} {float(version)}' in text
    assert customer not in text  # label values are route templates, never customer ids


# -- safety ----------------------------------------------------------------------------------------


def test_every_v1_route_needs_the_key(base_url, service):
    from serving.app import create_app

    paths = create_app(service=service).openapi()["paths"]
    routes = [
        (method.upper(), path.replace("{customer_id}", "c0000001"))
        for path, operations in paths.items()
        if path.startswith("/v1")
        for method in operations
    ]
    assert len(routes) == 4
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": API_KEY + "x"}, {"X-API-Key": ""}):
        for method, path in routes:
            response = httpx.request(method, base_url + path, headers=headers, content=b"{bad")
            assert response.status_code == 401, (method, path, headers)
            assert response.json() == {"detail": "missing or invalid API key"}
    assert httpx.get(f"{base_url}/healthz").status_code == 200
    assert httpx.get(f"{base_url}/metrics").status_code == 200


@pytest.mark.parametrize(
    ("body", "where", "words"),
    [
        ({"customer_ids": []}, ["body", "customer_ids"], "at least 1"),
        ({}, ["body", "customer_ids"], "required"),
        ({"customer_ids": ["a", " b"]}, ["body", "customer_ids", 1], "pattern"),
        ({"customer_ids": ["\x85b"]}, ["body", "customer_ids", 0], "pattern"),
        ({"customer_ids": ["a" * 129]}, ["body", "customer_ids", 0], "at most 128"),
        ({"customer_ids": ["a"], "models": ["upsell"]}, ["body", "models", 0], "churn"),
        ({"customer_ids": ["a"], "models": []}, ["body", "models"], "at least 1"),
        ({"customer_ids": ["a"], "explain": "maybe"}, ["body", "explain"], "boolean"),
        ({"customer_ids": ["a"], "colour": "red"}, ["body", "colour"], "not permitted"),
        ({"customer_ids": "a"}, ["body", "customer_ids"], "list"),
        ({"customer_ids": [f"c{i}" for i in range(1_001)]}, ["body", "customer_ids"], "1000"),
    ],
)
def test_bad_bodies_get_422_with_the_field_and_a_message(client, body, where, words):
    response = client.post("/v1/scores", json=body)
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert any(e["loc"] == where and words in e["msg"] for e in errors), errors


@pytest.mark.parametrize(
    "ids", [["\ud800"], ["c0000001", "a\udfff"], ["a\x00b"], ["\udc00\ud800", "ok"]]
)
def test_a_lone_surrogate_or_nul_in_customer_ids_is_a_422_not_a_500(client, ids):
    # \u escapes in the JSON text: what a client sends to put a lone surrogate in a string
    body = json.dumps({"customer_ids": ids}).encode()
    response = client.post("/v1/scores", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    bad = next(i for i, c in enumerate(ids) if c != "ok" and not c.startswith("c0"))
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "customer_ids", bad]
    assert "surrogate" in error["msg"] or "NUL" in error["msg"]
    single = client.get("/v1/customers/a%00b/scores")
    assert single.status_code == 422 and "NUL" in single.json()["detail"][0]["msg"]


def test_malformed_json_and_bad_query_parameters_get_422(client):
    response = client.post(
        "/v1/scores", content=b'{"customer_ids": [', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"
    response = client.get("/v1/customers/c0000001/scores", params={"models": "upsell"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "models", 0]


def test_the_configured_batch_and_body_limits(tight):
    too_many = tight.post("/v1/scores", json={"customer_ids": [f"c{i}" for i in range(6)]})
    assert too_many.status_code == 422
    assert too_many.json()["detail"][0]["loc"] == ["body", "customer_ids"]
    assert "at most 5" in too_many.json()["detail"][0]["msg"]
    assert tight.post("/v1/scores", json={"customer_ids": ["a"] * 5}).status_code == 200

    big = {"customer_ids": ["a"], "padding": "x" * 3_000}
    declared = tight.post("/v1/scores", json=big)
    assert declared.status_code == 413
    assert "2048 bytes" in declared.json()["detail"]

    def chunks():  # no Content-Length: the limit applies while the body streams in
        yield b'{"customer_ids": ["a"], "padding": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}'

    streamed = tight.post(
        "/v1/scores", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413

"""`nudge.security`: the one API key check of the engine's API and the scoring service."""

from __future__ import annotations

import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient

from nudge.security import NOT_CONFIGURED, api_key_dependency, key_matches


def _client(key, **options) -> TestClient:
    app = FastAPI()

    @app.get("/v1/thing", dependencies=[Depends(api_key_dependency(key, **options))])
    def thing() -> dict[str, bool]:
        return {"ok": True}

    return TestClient(app)


def test_the_right_key_passes_and_any_other_gets_401_with_a_challenge():
    client = _client("s3cret")
    assert client.get("/v1/thing", headers={"X-API-Key": "s3cret"}).json() == {"ok": True}
    for headers in ({}, {"X-API-Key": ""}, {"X-API-Key": "s3cre"}, {"X-API-Key": "s3cretx"}):
        response = client.get("/v1/thing", headers=headers)
        assert response.status_code == 401, headers
        assert response.json() == {"detail": "missing or invalid API key"}
        assert response.headers["www-authenticate"] == "ApiKey"


@pytest.mark.parametrize("key", [None, "", lambda request: None])
def test_without_a_configured_key_every_request_gets_503(key):
    response = _client(key).get("/v1/thing", headers={"X-API-Key": "anything"})
    assert (response.status_code, response.json()) == (503, {"detail": NOT_CONFIGURED})
    assert "NUDGE_API_KEY" in NOT_CONFIGURED


def test_the_header_and_message_are_configurable_and_may_be_read_per_request():
    client = _client("k", header="X-Token", invalid="wrong token")
    assert client.get("/v1/thing", headers={"X-Token": "k"}).status_code == 200
    wrong = client.get("/v1/thing", headers={"X-API-Key": "k"})
    assert (wrong.status_code, wrong.json()) == (401, {"detail": "wrong token"})

    def header(request: Request) -> str:
        return "X-Other"

    per_request = _client(lambda request: "k", header=header)
    assert per_request.get("/v1/thing", headers={"X-Other": "k"}).status_code == 200
    assert per_request.get("/v1/thing", headers={"X-API-Key": "k"}).status_code == 401


def test_keys_are_compared_whole():
    assert key_matches("abc", "abc")
    assert not key_matches(None, "abc")
    assert not key_matches("ab", "abc")
    assert not key_matches("abcd", "abc")
    assert key_matches("é", "é")

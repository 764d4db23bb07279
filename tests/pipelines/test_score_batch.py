"""The score-batch refresh over real HTTP: every known customer scored in requests of at most
1,000 ids, one `score_refreshed` event each into the inbox, crossings fired by the processor,
and a second refresh idempotent per refresh id."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response

from engine.dsl.triggers import TriggerIndex, load_trigger_text
from engine.errors import UserError
from engine.runtime.processor import Processor
from engine.store import EngineDB
from engine.store.customers import save_states, upsert_profiles
from engine.store.execution_log import list_decisions
from engine.store.inbox import pending_count
from pipelines.flows.score_batch import refresh_scores
from tests.support import LocalServer

CROSSING = """
id: vip_by_prediction
when: {score_crosses: {model: ltv, above: 500}}
actions: [{add_to_segment: {segment: vip}}]
"""


def scoring_service(values: dict[str, float], batches: list[int]) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    def models() -> dict:
        return {"models": [{"name": "ltv", "version": "4", "status": "serving"}]}

    @app.post("/v1/scores")
    async def scores(request: Request) -> Response:
        body = json.loads(await request.body())
        batches.append(len(body["customer_ids"]))
        results = [
            {"customer_id": c, "known": c in values,
             "scores": {"ltv": {"value": values.get(c, 100.0), "model_version": "4",
                                "features_at": "2026-11-30T00:00:00+00:00"}}}
            for c in body["customer_ids"]
        ]  # fmt: skip
        return Response(json.dumps({"results": results}), media_type="application/json")

    return app


def test_a_refresh_scores_every_known_customer_and_fires_crossings(tmp_path):
    store = EngineDB.open(f"sqlite:///{tmp_path / 'engine.db'}")
    customers = [f"c{i:04d}" for i in range(2_300)]
    store.write(upsert_profiles, {c: {"customer_id": c} for c in customers[:-1]}, 0.0)
    store.write(save_states, {customers[-1]: {}}, 0.0)  # known by its events only
    values = {c: (900.0 if i % 10 == 0 else 200.0) for i, c in enumerate(customers[:-5])}
    batches: list[int] = []
    with LocalServer(scoring_service(values, batches)) as service:
        url = f"sqlite:///{tmp_path / 'engine.db'}"
        outcome = refresh_scores(url, service.url, ["ltv"], refresh_id="r1")
        assert outcome["customers"] == len(customers)
        assert outcome["refreshed"] == len(customers) - 5  # the unknown ones get no event
        assert max(batches) <= 1000 and sum(batches) == len(customers)
        Processor(store, TriggerIndex(load_trigger_text(CROSSING).triggers)).run_until_empty()
        fired = {d.customer_id for d in store.read(list_decisions) if d.outcome == "fired"}
        assert fired == {c for c, v in values.items() if v > 500}
        # The same refresh again is the same events: nothing new, nothing fires twice.
        again = refresh_scores(url, service.url, ["ltv"], refresh_id="r1")
        assert again["refreshed"] == outcome["refreshed"]
        assert store.read(pending_count) == 0
    with pytest.raises(UserError, match="NUDGE_SCORING_URL"):
        refresh_scores(url, None, ["ltv"])

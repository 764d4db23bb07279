"""Engagement features count people: opens and clicks flagged ``properties.machine`` (image
proxies, link scanners — engine.channels.machine_events) are left out when the lake's
properties are read."""

from __future__ import annotations

import json

import pandas as pd

from features.compute.engagement import engagement_features


def frame(with_properties: bool) -> pd.DataFrame:
    rows = [
        ("c1", "email_sent", "2026-01-01T09:00:00Z", {}),
        ("c1", "email_opened", "2026-01-01T09:00:05Z", {"machine": True,
                                                        "machine_reason": "apple_mpp"}),
        ("c1", "email_opened", "2026-01-02T10:00:00Z", {"machine": False}),
        ("c1", "email_clicked", "2026-01-01T09:00:03Z", {"machine": True}),
        ("c1", "email_clicked", "2026-01-02T10:01:00Z", {}),
    ]  # fmt: skip
    data = {
        "customer_id": [r[0] for r in rows],
        "event_type": [r[1] for r in rows],
        "timestamp": pd.to_datetime([r[2] for r in rows], utc=True),
        "amount": [None] * len(rows),
    }
    if with_properties:
        data["properties"] = [json.dumps(r[3]) for r in rows]
    return pd.DataFrame(data)


def test_machine_opens_and_clicks_are_not_engagement() -> None:
    [people] = engagement_features(frame(True), ["2026-01-10"]).to_dict("records")
    assert (people["emails_opened_30d"], people["emails_clicked_30d"]) == (1, 1)
    # Without the properties column nothing can say what a machine did: every event counts.
    [everything] = engagement_features(frame(False), ["2026-01-10"]).to_dict("records")
    assert (everything["emails_opened_30d"], everything["emails_clicked_30d"]) == (2, 2)

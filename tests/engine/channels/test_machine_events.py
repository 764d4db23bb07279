"""Machine opens and clicks: Apple MPP, image proxies, bots, link scanners."""

from __future__ import annotations

import pytest

from engine.channels.machine_events import click_reason, open_reason

SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
GMAIL = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"


@pytest.mark.parametrize(
    ("agent", "ip", "reason"),
    [
        ("Mozilla/5.0", "17.58.63.12", "apple_mpp"),
        ("Mozilla/5.0", "203.0.113.9", "bare_user_agent"),
        (SAFARI, "17.58.63.12", None),  # a person on Apple's network with a real browser
        (SAFARI, "198.51.100.4", None),
        (GMAIL, "66.249.84.1", "image_proxy"),
        ("YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html", None,
         "image_proxy"),
        ("python-requests/2.32", "198.51.100.4", "bot"),
        ("", "198.51.100.4", "bot"),
        (None, None, "bot"),
        ("Mozilla/5.0", "not an address", "bare_user_agent"),
    ],
)  # fmt: skip
def test_open_reason(agent: str | None, ip: str | None, reason: str | None) -> None:
    assert open_reason(agent, ip) == reason


def test_click_reasons() -> None:
    base = {"method": "GET", "user_agent": SAFARI, "sent_at": 1000.0, "link": 0, "links": 3}
    assert click_reason(**base, clicked_at=5000.0) is None
    assert click_reason(**{**base, "method": "HEAD"}, clicked_at=5000.0) == "head_request"
    assert click_reason(**base, clicked_at=1003.0) == "too_soon"
    assert click_reason(**base, clicked_at=1003.0, scanner_seconds=2) is None
    assert click_reason(**base, clicked_at=5000.0, earlier_links=[1, 2]) == "all_links"
    assert click_reason(**base, clicked_at=5000.0, earlier_links=[1]) is None
    single = {**base, "links": 1}
    assert click_reason(**single, clicked_at=5000.0) is None  # one link: clicking it is normal
    assert click_reason(**{**base, "user_agent": "curl/8.5"}, clicked_at=5000.0) == "bot"
    assert click_reason(**{**base, "sent_at": None}, clicked_at=5000.0) is None

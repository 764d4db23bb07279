"""Telling machine opens and clicks from people's: flagged, never dropped.

A pixel load or a click reaches `engine.runtime.public_routes` from whoever fetched the URL —
often not the recipient. Such an event is kept (it proves delivery, and a later human event of
the same message is still counted) but gets ``properties.machine = true`` and a
``machine_reason``; engagement counting (features, engagement suppression, the funnel and
experiment metrics) counts humans by default. How each kind is recognised:

Opens (`open_reason`):

- ``apple_mpp`` — Apple Mail Privacy Protection prefetches every image of every message through
  Apple's proxies when the message arrives, whether or not it is read. As ESPs document it
  (SocketLabs, "Identifying Apple MPP opens"), those fetches come with the bare user agent
  ``Mozilla/5.0`` (nothing after it) from Apple's network 17.0.0.0/8. Both must hold: a bare
  ``Mozilla/5.0`` from elsewhere is flagged ``bare_user_agent`` instead (not Apple, still no
  browser sends only that), and a full Safari user agent from 17/8 is an Apple employee.
- ``image_proxy`` — webmail fetching images on the reader's behalf and caching them:
  ``GoogleImageProxy`` (Gmail, ``… (via ggpht.com GoogleImageProxy)``), ``YahooMailProxy``,
  Outlook.com / Microsoft's ``ms-office`` prefetch and the ``Outlook-iOS`` / ``Outlook-Android``
  image fetcher. Gmail fetches when the message is opened, so this is a real open whose time is
  right but whose repeat opens are hidden by the cache — flagged as a machine fetch all the same,
  as the contract asks; a count that wants Gmail opens can select on the reason.
- ``bot`` — a user agent that says it is a crawler or a library (``bot``, ``crawler``,
  ``spider``, ``curl``, ``python-requests``, ``Go-http-client``, …) or no user agent at all.

Clicks (`click_reason`):

- ``head_request`` — a HEAD is a link checker asking whether the URL exists; people GET.
- ``too_soon`` — within `scanner_seconds` (default 10) of the message being sent: security
  gateways (Microsoft Defender Safe Links, Mimecast, Proofpoint, Barracuda) follow every link
  as the message is delivered, before anyone can have read it.
- ``all_links`` — every tracked link of the message clicked within `burst_seconds` (default
  5): a scanner walking the links, a person clicks one or two.
- ``bot`` / ``bare_user_agent`` — as for opens.

Where they are left out: the customer state the decisions read (behaviour counts and
engagement suppression: `engine.decisions.decide` does not record them), experiment exposures
(`engine.store.exposures`, ``include_machine=True`` to keep them), the message reports
(`engine.store.reporting` counts human and machine apart) and lake features when the lake's
``properties`` are read (`features.compute.workspace`).

The functions are pure: the route passes the request's facts (method, user agent, client
address, times, the message's earlier clicks) and gets the reason or None.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection

from engine.events import ENGAGEMENT_EVENTS, is_machine_engagement

__all__ = [
    "APPLE_NETWORKS",
    "BURST_SECONDS",
    "ENGAGEMENT_EVENTS",
    "SCANNER_SECONDS",
    "click_reason",
    "is_machine_engagement",
    "open_reason",
]

SCANNER_SECONDS = 10.0
BURST_SECONDS = 5.0
APPLE_NETWORKS = (ipaddress.ip_network("17.0.0.0/8"),)  # Apple's own /8 (ARIN: APPLE-WWNET)
_BARE_MOZILLA = re.compile(r"\s*Mozilla/5\.0\s*")
_IMAGE_PROXIES = re.compile(
    r"GoogleImageProxy|ggpht\.com|YahooMailProxy|ms-office|Outlook-iOS|Outlook-Android|"
    r"Microsoft Office/\S+ \(Windows NT [^)]*Microsoft Outlook",
    re.IGNORECASE,
)
_BOTS = re.compile(
    r"bot\b|crawler|spider|scanner|preview|curl/|wget/|python-requests|python-urllib|aiohttp|"
    r"httpx|go-http-client|java/|okhttp|libwww|headless",
    re.IGNORECASE,
)


def open_reason(user_agent: str | None, client_ip: str | None) -> str | None:
    """Why a pixel load is a machine's (``apple_mpp``, ``image_proxy``, ``bot``,
    ``bare_user_agent``), or None when it looks like a person's mail client."""
    agent = (user_agent or "").strip()
    if _BARE_MOZILLA.fullmatch(agent):
        return "apple_mpp" if _is_apple(client_ip) else "bare_user_agent"
    if _IMAGE_PROXIES.search(agent):
        return "image_proxy"
    return _bot(agent)


def click_reason(
    *,
    method: str,
    user_agent: str | None,
    clicked_at: float,
    sent_at: float | None,
    link: int | None,
    links: int | None,
    earlier_links: Collection[int] = (),
    scanner_seconds: float = SCANNER_SECONDS,
) -> str | None:
    """Why a click is a machine's (see the module doc), or None when a person's.

    `sent_at` is when the message was rendered for sending (from its token); `link` the index
    of this link among the message's `links` tracked links; `earlier_links` the indexes of the
    message's clicks of the last `BURST_SECONDS` (the caller reads them from the log)."""
    if method.upper() == "HEAD":
        return "head_request"
    if sent_at is not None and 0 <= clicked_at - sent_at < scanner_seconds:
        return "too_soon"
    clicked = {*earlier_links, link}
    if links is not None and links > 1 and link is not None and clicked >= set(range(links)):
        return "all_links"
    agent = (user_agent or "").strip()
    if _BARE_MOZILLA.fullmatch(agent):
        return "bare_user_agent"
    return _bot(agent)


def _bot(agent: str) -> str | None:
    if not agent or _BOTS.search(agent):
        return "bot"
    return None


def _is_apple(client_ip: str | None) -> bool:
    try:
        address = ipaddress.ip_address((client_ip or "").strip())
    except ValueError:
        return False
    return any(address in network for network in APPLE_NETWORKS)

"""The public links of one email: its unsubscribe URL, tracked clicks and the open pixel.

Every link nudge puts in a message starts with ``NUDGE_PUBLIC_URL`` (where ``nudge engine
serve`` is reachable by recipients) and carries a signed token (`engine.channels.tokens`):

- ``{public}/u/<token>`` — unsubscribe (List-Unsubscribe, RFC 8058 one-click POST) and the
  preference page (GET); token ``{"c": customer, "a": action, "t": trigger}``;
- ``{public}/o/<token>`` — the 1×1 open pixel, put before ``</body>``; token ``{"c", "a", "t",
  "s": sent at}``;
- ``{public}/c/<token>`` — each ``<a href="http(s)://…">`` of the HTML except the unsubscribe
  link; the token holds the original URL (``"u"``), the link's index ``"l"`` among the
  message's ``"n"`` tracked links and the rest of the open token, so the redirect can only go
  where the message pointed (no open redirect) and a scanner clicking every link is visible.

Only the HTML part is rewritten (the text part, derived from the HTML before rewriting, keeps
the real URLs: a person reading plain text sees where a link goes). Tracking needs an action id
(previews and test sends are not tracked: nothing to match the event to) and a public URL.

Without a public URL, or with the deprecated ``NUDGE_UNSUBSCRIBE_URL`` set, the unsubscribe
link is the old ``BASE?c=<customer>&t=<hmac>`` form, which `engine.runtime.public_routes` also
serves at ``/unsubscribe`` so that links in mail already sent keep working.
"""

from __future__ import annotations

import hashlib
import hmac
import html as html_lib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from engine.channels import tokens

if TYPE_CHECKING:
    from engine.channels.email import EmailSettings

__all__ = ["PublicLinks", "legacy_unsubscribe_token", "public_base", "public_links"]

DEFAULT_UNSUBSCRIBE_URL = "https://nudge.example/unsubscribe"
# Characters a base URL keeps as they are; anything else is percent-encoded.
_URL_SAFE = ":/?#[]@!$&'()*+,;=%~-._"
_ANCHOR_HREF = re.compile(r"(<a\b[^>]*?\bhref\s*=\s*)(\"[^\"]*\"|'[^']*')", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
MAX_TRACKED_URL = 2048  # longer links stay as they are (the token would pass MAX_TOKEN_CHARS)


def public_base(url: str) -> str:
    """`url` as the base of public links: ASCII (percent-encoded), no trailing slash."""
    return quote(url.strip(), safe=_URL_SAFE).rstrip("/")


def legacy_unsubscribe_token(customer_id: str, secret: str) -> str:
    """The old unsubscribe links' ``t``: an HMAC of the customer id (32 hex characters)."""
    return hmac.new(secret.encode(), customer_id.encode(), hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True)
class PublicLinks:
    """The links of one rendered email (see the module doc)."""

    unsubscribe_url: str
    public_url: str | None  # None: not tracked
    secret: str
    base_token: dict[str, Any]  # customer, action, trigger, sent at

    @property
    def trackable(self) -> bool:
        """Whether opens and clicks of this email can be tracked."""
        return self.public_url is not None and self.base_token.get("a") is not None

    def track(self, html: str) -> str:
        """`html` with its web links through ``/c/<token>`` and the pixel before ``</body>``."""
        assert self.public_url is not None
        matches = [m for m in _ANCHOR_HREF.finditer(html) if self._target(m) is not None]
        count = len(matches)
        out: list[str] = []
        at = 0
        for index, match in enumerate(matches):
            target = self._target(match)
            assert target is not None
            token = tokens.sign("c", {**self.base_token, "u": target, "l": index, "n": count},
                                self.secret)  # fmt: skip
            out += [html[at : match.start(2)], f'"{self.public_url}/c/{token}"']
            at = match.end(2)
        out.append(html[at:])
        tracked = "".join(out)
        pixel = (
            f'<img src="{self.public_url}/o/{tokens.sign("o", self.base_token, self.secret)}" '
            'width="1" height="1" alt="" style="display:block;width:1px;height:1px;border:0">'
        )
        ends = list(_BODY_END.finditer(tracked))
        if not ends:
            return tracked + pixel
        cut = ends[-1].start()
        return tracked[:cut] + pixel + tracked[cut:]

    def _target(self, match: re.Match[str]) -> str | None:
        """The URL of an anchor when it is a web link to track, else None."""
        url = html_lib.unescape(match.group(2)[1:-1]).strip()
        if not url.lower().startswith(("http://", "https://")) or len(url) > MAX_TRACKED_URL:
            return None
        if url == self.unsubscribe_url or (self.public_url and url.startswith(self.public_url)):
            return None
        return url


def public_links(
    settings: EmailSettings,
    customer_id: str,
    action_id: int | str | None,
    trigger_id: str,
    sent_at: float,
) -> PublicLinks:
    """The links of an email to `customer_id` for `action_id` (None: a preview)."""
    secret = settings.unsubscribe_secret
    public = public_base(settings.public_url) if settings.public_url else None
    base: dict[str, Any] = {"c": customer_id, "t": trigger_id}
    if action_id is not None:
        base["a"] = action_id
    if settings.unsubscribe_base_url or public is None:
        query = urlencode({"c": customer_id, "t": legacy_unsubscribe_token(customer_id, secret)})
        legacy = quote(settings.unsubscribe_base_url or DEFAULT_UNSUBSCRIBE_URL, safe=_URL_SAFE)
        unsubscribe = f"{legacy}?{query}"  # percent-encoded: a non-ASCII id stays ASCII
    else:
        unsubscribe = f"{public}/u/{tokens.sign('u', base, secret)}"
    tracked = public if settings.tracking else None
    return PublicLinks(unsubscribe, tracked, secret, {**base, "s": int(sent_at)})

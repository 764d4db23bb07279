"""An email's bytes on the wire: headers written here, the MIME body by the email package.

Why not let the email package write every header: its default policy refolds any header line
over 78 characters, and a header with a long run that has no space (a long unsubscribe URL) is
"folded" by turning it into an RFC 2047 encoded-word — ``List-Unsubscribe: =?utf-8?q?=3Chttps…?=``,
which Gmail and Yahoo cannot read, so the one-click unsubscribe silently disappears. So:

- Plain ASCII headers (List-Unsubscribe, List-Unsubscribe-Post, List-Id, Message-ID, Date,
  X-Nudge-*) are folded here as RFC 5322 says: only at whitespace, lines of at most 78 characters
  where a space allows, and a run without a space (a URL) left whole on its line — a line may be
  up to 998 characters; anything longer is refused, never encoded. The List-* headers must be
  ASCII (URLs are percent-encoded before they get here).
- From, To and Subject go through the email package's header objects: a display name or subject
  with non-ASCII text is RFC 2047 encoded there, which is correct for those headers.
- The body is a MIME tree: text/plain alone, or multipart/alternative (text then HTML, the order
  clients prefer). Both parts of a multipart are quoted-printable and the boundary starts with
  ``=_``, which quoted-printable can never produce, so no content can end a part early; the
  boundary is derived from the Message-ID so the same email always has the same bytes.

DKIM (optional) signs the CRLF form of those bytes; a file outbox gets them with ``\\n`` instead.
"""

from __future__ import annotations

import email.policy
import hashlib
from collections.abc import Callable, Sequence
from email.message import EmailMessage

__all__ = ["ENCODED_HEADERS", "PLAIN_ONLY", "fold_plain", "message_bytes"]

MAX_LINE = 998  # RFC 5322 2.1.1: a line MUST be at most 998 characters, excluding CRLF
SOFT_LINE = 78  # … and SHOULD be at most 78
# Headers the email package writes (address lists, RFC 2047 for non-ASCII text).
ENCODED_HEADERS = frozenset({"from", "to", "subject", "reply-to", "cc"})
# Headers that must be plain ASCII on the wire: mail clients do not decode encoded-words in them.
PLAIN_ONLY = frozenset(
    {"list-unsubscribe", "list-unsubscribe-post", "list-id", "message-id", "date"}
)  # fmt: skip
_POLICY = email.policy.SMTP  # CRLF, 78 columns, RFC 2047 where needed


def fold_plain(name: str, value: str) -> str:
    """``Name: value`` CRLF-terminated, folded at spaces only; ValueError when `value` is not
    printable ASCII or a run without a space makes a line longer than 998 characters."""
    if any(not (" " <= char <= "~") and char != "\t" for char in value):
        raise ValueError(f"{name} must be plain ASCII (got {value!r:.80})")
    words = value.split()
    lines: list[str] = []
    line = f"{name}:"
    for word in words:
        if len(line) + 1 + len(word) > SOFT_LINE and line != f"{name}:":
            lines.append(line)
            line = ""
        line += f" {word}"
    lines.append(line)
    for text in lines:
        if len(text) > MAX_LINE:
            raise ValueError(
                f"{name} has a run of {len(max(words, key=len))} characters without a space: "
                f"a header line may be at most {MAX_LINE} characters"
            )
    return "\r\n".join(lines) + "\r\n"


def _fold_encoded(name: str, value: str) -> str:
    try:
        header = _POLICY.header_factory(name, value)
        defects = [d for d in header.defects if "InvalidHeaderDefect" in type(d).__name__]
        if defects:
            raise ValueError(f"{name} is not valid: {defects[0]}")
        return str(header.fold(policy=_POLICY))
    except (ValueError, TypeError, IndexError, AttributeError) as exc:
        raise ValueError(f"{name} cannot be encoded: {exc}") from None


def _fold(name: str, value: str) -> str:
    lower = name.lower()
    if lower in ENCODED_HEADERS:
        return _fold_encoded(name, value)
    if lower in PLAIN_ONLY or value.isascii():
        return fold_plain(name, value)
    return _fold_encoded(name, value)  # an X- header with non-ASCII text: RFC 2047 is right there


def _body(text: str, html: str | None, message_id: str) -> bytes:
    part = EmailMessage(policy=_POLICY)
    if html is None:
        part.set_content(text, charset="utf-8")
    else:
        part.set_content(text, charset="utf-8", cte="quoted-printable")
        part.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
        digest = hashlib.sha256(message_id.encode()).hexdigest()[:24]
        part.set_boundary(f"=_nudge_{digest}")
    for sub in part.walk():
        del sub["MIME-Version"]  # once, at the top, with the other headers
    return part.as_bytes(policy=_POLICY)


def message_bytes(
    headers: Sequence[tuple[str, str]],
    text: str,
    html: str | None,
    *,
    message_id: str,
    linesep: str = "\r\n",
    sign: Callable[[bytes], bytes] | None = None,
) -> bytes:
    """The whole message: `headers` in order, then MIME-Version and the body; signed by `sign`
    (which returns a header to put first) when given. ValueError when a header cannot be
    written."""
    if linesep not in ("\r\n", "\n"):
        raise ValueError(f"linesep must be CRLF or LF, got {linesep!r}")
    lines = [_fold(name, value) for name, value in headers]
    head = ("".join(lines) + "MIME-Version: 1.0\r\n").encode("ascii")
    raw = head + _body(text, html, message_id)
    if sign is not None:
        raw = sign(raw) + raw
    return raw if linesep == "\r\n" else raw.replace(b"\r\n", b"\n")

"""An email's bytes on the wire, written here for the one structure nudge sends.

Why not let the email package write every header: its default policy refolds any header line
over 78 characters, and a header with a long run that has no space (a long unsubscribe URL) is
"folded" by turning it into an RFC 2047 encoded-word — ``List-Unsubscribe: =?utf-8?q?=3Chttps…?=``,
which Gmail and Yahoo cannot read, so the one-click unsubscribe silently disappears. So:

- Plain ASCII headers (List-Unsubscribe, List-Unsubscribe-Post, List-Id, Message-ID, Date,
  X-Nudge-*) are folded here as RFC 5322 says: only at whitespace, lines of at most 78 characters
  where a space allows, and a run without a space (a URL) left whole on its line — a line may be
  up to 998 characters; anything longer is refused, never encoded. The List-* headers must be
  ASCII (URLs are percent-encoded before they get here).
- From, To and Subject need RFC 2047 only for non-ASCII text (and address lists need quoting
  rules): plain ASCII ones — a bare address, a subject of printable ASCII with single spaces, no
  ``=?`` and no run near 998 characters — are folded here like the others; anything else goes
  through the email package's header objects, which encode correctly (and are cached: the From
  of every email of a sender is the same).
- The body is written here, not by the email package's MIME classes and generator: text/plain
  alone (7bit when it is ASCII with lines of at most 78 characters, else quoted-printable — never
  unannounced 8bit), or multipart/alternative (text then HTML, the order clients prefer), both
  parts quoted-printable. The boundary starts with ``=_``, which quoted-printable can never
  produce, so no content can end a part early; it is derived from the Message-ID so the same
  email always has the same bytes. Quoted-printable is `binascii.b2a_qp` (C): lines of at most
  76 characters, ``=`` and non-ASCII as ``=XX``, trailing whitespace encoded.

Building the bytes with `email.message.EmailMessage` and its generator took ~2.3 ms an email
(the 3.4 kB ``payment_failed``, loaded machine) — most of a kept SMTP connection's cost; written
here it is ~0.1 ms. Tests parse the output with the email package and compare it with what the
package itself writes.

DKIM (optional) signs the CRLF form of those bytes; a file outbox gets them with ``\\n`` instead.
"""

from __future__ import annotations

import binascii
import email.policy
import functools
import hashlib
import re
from collections.abc import Callable, Sequence

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
# A bare addr-spec of atext and dots: written as it is, as the email package would.
_BARE_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")
_NOT_PLAIN = re.compile(r"[^\t -~]")  # a character other than printable ASCII and tab
_LONGEST_PLAIN_RUN = 900  # a longer run in a subject: the email package decides (it encodes)


def fold_plain(name: str, value: str) -> str:
    """``Name: value`` CRLF-terminated, folded at spaces only; ValueError when `value` is not
    printable ASCII or a run without a space makes a line longer than 998 characters."""
    if _NOT_PLAIN.search(value):
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


@functools.lru_cache(maxsize=1024)
def _fold_encoded(name: str, value: str) -> str:
    try:
        header = _POLICY.header_factory(name, value)
        defects = [d for d in header.defects if "InvalidHeaderDefect" in type(d).__name__]
        if defects:
            raise ValueError(f"{name} is not valid: {defects[0]}")
        return str(header.fold(policy=_POLICY))
    except (ValueError, TypeError, IndexError, AttributeError) as exc:
        raise ValueError(f"{name} cannot be encoded: {exc}") from None


def _plain_enough(lower: str, value: str) -> bool:
    """Whether an encoded header's value is written as it is: a bare address (To, Cc), or a
    subject of printable ASCII with single spaces and no encoded-word look-alike."""
    if not value.isascii() or not value.isprintable() or "=?" in value:
        return False
    if lower in ("to", "cc"):
        return _BARE_ADDRESS.fullmatch(value) is not None
    if lower == "subject":
        words = value.split(" ")
        return all(words) and max(map(len, words)) <= _LONGEST_PLAIN_RUN
    return False


def _fold(name: str, value: str) -> str:
    lower = name.lower()
    if lower in ENCODED_HEADERS:
        if _plain_enough(lower, value):
            return fold_plain(name, value)
        return _fold_encoded(name, value)
    if lower in PLAIN_ONLY or value.isascii():
        return fold_plain(name, value)
    return _fold_encoded(name, value)  # an X- header with non-ASCII text: RFC 2047 is right there


def _lines(text: str) -> list[bytes]:
    """The text's lines as UTF-8 (any of CR, LF, CRLF ends one), as the email package splits."""
    return text.encode("utf-8").splitlines() or [b""]  # an empty body is one empty line


def _quoted_printable(lines: list[bytes]) -> bytes:
    """The lines, CRLF-terminated, quoted-printable (soft breaks keep lines within 76)."""
    encoded: bytes = binascii.b2a_qp(b"\r\n".join(lines) + b"\r\n", istext=True)
    if not encoded.endswith(b"\r\n"):  # b2a_qp keeps the input's ends; be sure of the last
        encoded += b"\r\n"
    return encoded


def _text_part(text: str, subtype: str, force_qp: bool) -> bytes:
    lines = _lines(text)
    head = f'Content-Type: text/{subtype}; charset="utf-8"\r\n'.encode("ascii")
    seven_bit = not force_qp and text.isascii() and max(map(len, lines), default=0) <= SOFT_LINE
    if seven_bit:
        body = b"".join(line + b"\r\n" for line in lines)
        return head + b"Content-Transfer-Encoding: 7bit\r\n\r\n" + body
    return head + b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + _quoted_printable(lines)


def _body(text: str, html: str | None, message_id: str) -> bytes:
    """The MIME headers and body: text/plain alone, or multipart/alternative text + HTML."""
    if html is None:
        return _text_part(text, "plain", force_qp=False)
    digest = hashlib.sha256(message_id.encode()).hexdigest()[:24]
    boundary = f"=_nudge_{digest}".encode("ascii")
    return b"".join(
        (
            b'Content-Type: multipart/alternative;\r\n boundary="' + boundary + b'"\r\n\r\n',
            b"--" + boundary + b"\r\n",
            _text_part(text, "plain", force_qp=True),
            b"\r\n--" + boundary + b"\r\n",
            _text_part(html, "html", force_qp=True),
            b"\r\n--" + boundary + b"--\r\n",
        )
    )


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

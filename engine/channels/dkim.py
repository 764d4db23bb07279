"""DKIM signing of outgoing email (dkimpy), configured once at start-up.

Gmail and Yahoo require bulk senders to authenticate with DKIM aligned with the From domain;
most relays (SES, SendGrid, Postmark, Mailgun) sign for you once the domain is verified there, so
signing here is optional: it is for relays that do not sign, or for signing with your own key
beside theirs. Set ``NUDGE_DKIM_DOMAIN``, ``NUDGE_DKIM_SELECTOR`` and ``NUDGE_DKIM_KEY_FILE`` (an
RSA private key in PEM, PKCS#1 or PKCS#8) together; the public key goes into DNS as the TXT record
``<selector>._domainkey.<domain>`` = ``v=DKIM1; k=rsa; p=<base64 of the DER public key>``.

The signature covers From, To, Subject, Date, Message-ID, List-Unsubscribe and
List-Unsubscribe-Post with relaxed/relaxed canonicalisation (relaxed survives the header
re-folding and trailing-space changes that relays make). A header that a message does not carry
(a transactional email has no List-Unsubscribe) is signed as absent, so nobody can add one later
without breaking the signature.

A missing, unreadable or unparsable key is a `DkimConfigError` (a UserError: one line, exit 2)
when the settings are loaded — at start, never per message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import dkim
from dkim.crypto import UnparsableKeyError, parse_pem_private_key

from engine.errors import UserError

__all__ = ["SIGNED_HEADERS", "DkimConfigError", "DkimSigner", "load_dkim_signer"]

SIGNED_HEADERS: tuple[bytes, ...] = (
    b"From",
    b"To",
    b"Subject",
    b"Date",
    b"Message-ID",
    b"List-Unsubscribe",
    b"List-Unsubscribe-Post",
)
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?")


class DkimConfigError(UserError):
    """The DKIM settings cannot be used (a variable missing, the key unreadable)."""


@dataclass(frozen=True)
class DkimSigner:
    """Signs messages for `domain` with the key published under `selector`."""

    domain: str
    selector: str
    key: bytes = field(repr=False)  # the PEM private key

    def signature(self, message: bytes) -> bytes:
        """The ``DKIM-Signature: …`` header (CRLF-terminated, folded) for `message` (CRLF)."""
        try:
            signature: bytes = dkim.sign(
                message,
                self.selector.encode(),
                self.domain.encode(),
                self.key,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=list(SIGNED_HEADERS),
                linesep=b"\r\n",
            )
        except dkim.DKIMException as exc:
            raise ValueError(f"DKIM signing failed: {exc}") from None
        return signature


def load_dkim_signer(
    domain: str | None, selector: str | None, key_file: Path | None
) -> DkimSigner | None:
    """The signer the three settings describe; None when none is set; DkimConfigError when only
    some are set, a name is not a DNS label, or the key file is missing or not an RSA PEM key."""
    given = {
        "NUDGE_DKIM_DOMAIN": domain,
        "NUDGE_DKIM_SELECTOR": selector,
        "NUDGE_DKIM_KEY_FILE": key_file,
    }
    if not any(given.values()):
        return None
    missing = [name for name, value in given.items() if not value]
    if missing:
        raise DkimConfigError(
            "DKIM signing needs NUDGE_DKIM_DOMAIN, NUDGE_DKIM_SELECTOR and NUDGE_DKIM_KEY_FILE "
            f"together; missing: {', '.join(missing)}"
        )
    assert domain and selector and key_file  # for mypy: checked just above
    labels = domain.rstrip(".").split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        raise DkimConfigError(
            f"NUDGE_DKIM_DOMAIN: expected a domain such as example.com, got {domain!r}"
        )
    if not all(_LABEL.fullmatch(label) for label in selector.split(".")):
        raise DkimConfigError(
            f"NUDGE_DKIM_SELECTOR: expected a DNS label such as s1, got {selector!r}"
        )
    try:
        key = Path(key_file).read_bytes()
    except OSError as exc:
        raise DkimConfigError(
            f"NUDGE_DKIM_KEY_FILE: cannot read {key_file}: {exc.strerror or exc}"
        ) from None
    try:
        parse_pem_private_key(key)
    except (UnparsableKeyError, ValueError, IndexError) as exc:
        raise DkimConfigError(
            f"NUDGE_DKIM_KEY_FILE: {key_file} is not an RSA private key in PEM ({exc or 'unparsable'})"
        ) from None
    return DkimSigner(domain.rstrip("."), selector, key)

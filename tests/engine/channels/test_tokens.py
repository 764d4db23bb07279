"""Signed link tokens: round trip, purpose binding, tampering, rotation, malformed input."""

from __future__ import annotations

import base64
import json

import pytest

from engine.channels import tokens
from engine.channels.tokens import TokenError, sign, verify

SECRET = "s" * 40
OLD = "o" * 40


def test_round_trip_is_url_safe_and_compact() -> None:
    token = sign("u", {"c": "customer-123", "a": 42, "t": "cart_recovery"}, SECRET)
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert len(token) < 90
    assert verify("u", token, [SECRET]) == {"c": "customer-123", "a": 42, "t": "cart_recovery"}


def test_non_ascii_payload_stays_ascii() -> None:
    token = sign("c", {"c": "é客", "u": "https://shop.example/ü?x=1&y=2"}, SECRET)
    assert token.isascii()
    assert verify("c", token, [SECRET])["u"] == "https://shop.example/ü?x=1&y=2"


def test_purpose_is_bound() -> None:
    token = sign("c", {"c": "c1"}, SECRET)
    with pytest.raises(TokenError) as caught:
        verify("u", token, [SECRET])
    assert caught.value.status == 403


def test_tampered_payload_is_refused() -> None:
    token = sign("c", {"c": "c1", "u": "https://shop.example/"}, SECRET)
    body, mac = token.split(".")
    forged = (
        base64.urlsafe_b64encode(json.dumps({"c": "c1", "u": "https://evil.example/"}).encode())
        .rstrip(b"=")
        .decode()
    )
    with pytest.raises(TokenError) as caught:
        verify("c", f"{forged}.{mac}", [SECRET])
    assert caught.value.status == 403
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    with pytest.raises(TokenError):
        verify("c", f"{body}.{flipped}", [SECRET])


def test_foreign_secret_is_refused() -> None:
    with pytest.raises(TokenError) as caught:
        verify("u", sign("u", {"c": "c1"}, "another-deployment-secret"), [SECRET, OLD])
    assert caught.value.status == 403


def test_rotation_accepts_old_secrets_and_signs_with_the_current_one() -> None:
    old_token = sign("o", {"c": "c1"}, OLD)
    assert verify("o", old_token, [SECRET, OLD]) == {"c": "c1"}
    with pytest.raises(TokenError):
        verify("o", old_token, [SECRET])  # the old secret dropped: its links stop working
    assert sign("o", {"c": "c1"}, SECRET) != old_token


@pytest.mark.parametrize(
    "bad",
    ["", "nodot", ".", "abc.", ".abc", "a b.c", "abc.%%%", "x" * (tokens.MAX_TOKEN_CHARS + 1),
     "abcde.AAAA", "a.AAAAAAAAAAAAAAAAAAAAAA"],
)  # fmt: skip
def test_malformed_is_400(bad: str) -> None:
    with pytest.raises(TokenError) as caught:
        verify("u", bad, [SECRET])
    assert caught.value.status in (400, 403)
    if "." not in bad or bad.startswith(".") or bad.endswith(".") or " " in bad:
        assert caught.value.status == 400


def test_signed_non_object_is_400() -> None:
    body = base64.urlsafe_b64encode(b"[1,2]").rstrip(b"=").decode()
    mac = base64.urlsafe_b64encode(tokens._mac("u", body, SECRET)).rstrip(b"=").decode()
    with pytest.raises(TokenError) as caught:
        verify("u", f"{body}.{mac}", [SECRET])
    assert caught.value.status == 400


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        sign("", {"c": "c1"}, SECRET)
    with pytest.raises(ValueError):
        sign("u", {"c": "c1"}, "")

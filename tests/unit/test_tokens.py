"""Tracking tokens: what one endpoint accepts is exactly what the sender signed."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.config import load_settings
from bot.engine.tokens import MAC_SIZE, Click, PreviewGrant, TokenSigner

SIGNER = TokenSigner("test-tracking-secret")
URL_SAFE = set(string.ascii_letters + string.digits + "-_")

log_ids = st.integers(min_value=0, max_value=2**63 - 1)
urls = st.text(min_size=1, max_size=300).map(lambda s: "https://example.com/" + s)


def alter(token: str, index: int, replacement: str) -> str:
    return token[:index] + replacement + token[index + 1 :]


# ---------------------------------------------------------------- round trips


@given(log_ids)
def test_open_token_round_trips(log_id: int) -> None:
    assert SIGNER.read_open(SIGNER.open_token(log_id)) == log_id


@given(log_ids)
def test_unsubscribe_token_round_trips(log_id: int) -> None:
    assert SIGNER.read_unsubscribe(SIGNER.unsubscribe_token(log_id)) == log_id


@given(log_ids, urls)
def test_click_token_round_trips_with_the_url(log_id: int, url: str) -> None:
    assert SIGNER.read_click(SIGNER.click_token(log_id, url)) == Click(log_id, url)


@given(log_ids, st.integers(min_value=0, max_value=2**64 - 1))
def test_preview_token_round_trips_with_its_expiry(delivery_id: int, expires: int) -> None:
    token = SIGNER.preview_token(delivery_id, expires)
    assert SIGNER.read_preview(token) == PreviewGrant(delivery_id, expires)
    assert set(token) <= URL_SAFE


def test_a_preview_token_reads_only_as_a_preview() -> None:
    """Its expiry is signed with the delivery: no other kind of token reads it, and a
    view-online token of the same number is no preview."""
    token = SIGNER.preview_token(7, 1_800_000_000)
    for read in (SIGNER.read_open, SIGNER.read_unsubscribe, SIGNER.read_view, SIGNER.read_click):
        assert read(token) is None
    assert SIGNER.read_preview(SIGNER.view_token(7)) is None
    assert SIGNER.read_preview(SIGNER.open_token(2**70)) is None, "long enough, wrong kind"
    assert TokenSigner("another-secret").read_preview(token) is None


def test_a_preview_token_without_its_delivery_is_refused() -> None:
    import base64

    payload = b"p" + (1_800_000_000).to_bytes(8, "big")  # an expiry and no delivery id
    mac = SIGNER._mac(payload)
    forged = base64.urlsafe_b64encode(payload + mac).rstrip(b"=").decode()
    assert SIGNER.read_preview(forged) is None


def test_a_preview_expiry_is_a_unix_time() -> None:
    with pytest.raises(ValueError):
        SIGNER.preview_token(1, -1)
    with pytest.raises(ValueError):
        SIGNER.preview_token(1, 2**64)


def test_tokens_are_compact_and_url_safe() -> None:
    token = SIGNER.open_token(1_234_567)
    assert len(token) <= 28
    assert set(token) <= URL_SAFE
    click = SIGNER.click_token(1_234_567, "https://example.com/spring?utm_source=mail")
    assert set(click) <= URL_SAFE
    assert SIGNER.open_token(42) == SIGNER.open_token(42)  # deterministic


def test_a_token_of_one_kind_is_refused_by_the_others() -> None:
    """A pixel token cannot unsubscribe anyone, an unsubscribe token counts no open."""
    open_token = SIGNER.open_token(7)
    unsub = SIGNER.unsubscribe_token(7)
    click = SIGNER.click_token(7, "https://example.com/")
    assert SIGNER.read_unsubscribe(open_token) is None
    assert SIGNER.read_click(open_token) is None
    assert SIGNER.read_open(unsub) is None
    assert SIGNER.read_open(click) is None
    assert SIGNER.read_unsubscribe(click) is None


def test_another_secret_reads_nothing() -> None:
    other = TokenSigner("another-secret")
    assert other.read_open(SIGNER.open_token(7)) is None
    assert other.read_click(SIGNER.click_token(7, "https://example.com/")) is None


def test_bytes_and_str_secrets_agree() -> None:
    assert TokenSigner(b"test-tracking-secret").open_token(9) == SIGNER.open_token(9)


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="TRACKING_SECRET"):
        TokenSigner("")


def test_from_settings_names_the_missing_setting() -> None:
    with pytest.raises(ValueError, match="TRACKING_SECRET is not set"):
        TokenSigner.from_settings(load_settings(_env_file=None, tracking_secret=None))
    signer = TokenSigner.from_settings(
        load_settings(_env_file=None, tracking_secret="test-tracking-secret")
    )
    assert signer.read_open(SIGNER.open_token(5)) == 5


def test_negative_log_id_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        SIGNER.open_token(-1)


# ------------------------------------------------------------------- forgery


@given(log_ids, urls, st.data())
def test_any_altered_character_is_refused(log_id: int, url: str, data: st.DataObject) -> None:
    for token, read in (
        (SIGNER.open_token(log_id), SIGNER.read_open),
        (SIGNER.unsubscribe_token(log_id), SIGNER.read_unsubscribe),
        (SIGNER.click_token(log_id, url), SIGNER.read_click),
        (SIGNER.preview_token(log_id, 1_800_000_000), SIGNER.read_preview),
    ):
        index = data.draw(st.integers(0, len(token) - 1), label="index")
        replacement = data.draw(st.characters().filter(lambda c, t=token[index]: c != t))
        assert read(alter(token, index, replacement)) is None


@given(log_ids, st.data())
def test_any_altered_byte_is_refused(log_id: int, data: st.DataObject) -> None:
    """Flipping bits of the decoded bytes (payload or MAC) and re-encoding is refused."""
    import base64

    token = SIGNER.click_token(log_id, "https://example.com/a")
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    index = data.draw(st.integers(0, len(raw) - 1), label="index")
    flip = data.draw(st.integers(1, 255), label="flip")
    raw[index] ^= flip
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    assert SIGNER.read_click(forged) is None


@given(log_ids, st.data())
def test_truncated_or_extended_tokens_are_refused(log_id: int, data: st.DataObject) -> None:
    token = SIGNER.open_token(log_id)
    cut = data.draw(st.integers(0, len(token) - 1), label="cut")
    assert SIGNER.read_open(token[:cut]) is None
    extra = data.draw(st.text(min_size=1, max_size=5), label="extra")
    assert SIGNER.read_open(token + extra) is None
    assert SIGNER.read_open(extra + token) is None


@given(st.text(max_size=200))
def test_arbitrary_input_never_crashes(junk: str) -> None:
    assert SIGNER.read_open(junk) is None
    assert SIGNER.read_click(junk) is None
    assert SIGNER.read_unsubscribe(junk) is None
    assert SIGNER.read_preview(junk) is None


@pytest.mark.parametrize("junk", [None, 12, b"bytes", "=", "====", "a" * 100_000, "é" * 30])
def test_odd_inputs_read_as_none(junk: object) -> None:
    assert SIGNER.read_open(junk) is None
    assert SIGNER.read_click(junk) is None


def test_padding_and_stray_characters_are_refused() -> None:
    token = SIGNER.open_token(123)
    assert SIGNER.read_open(token + "=" * (-len(token) % 4 or 4)) is None
    assert SIGNER.read_open(token[:5] + "\n" + token[5:]) is None
    assert SIGNER.read_open(token[:5] + "." + token[5:]) is None


def test_a_forged_mac_of_the_right_length_is_refused() -> None:
    import base64

    payload = b"o" + (99).to_bytes(1, "big")
    forged = base64.urlsafe_b64encode(payload + b"\0" * MAC_SIZE).rstrip(b"=").decode()
    assert SIGNER.read_open(forged) is None


def test_tag_is_keyed_and_sized() -> None:
    assert SIGNER.tag(b"x") == SIGNER.tag(b"x")
    assert len(SIGNER.tag(b"x", 10)) == 10
    assert SIGNER.tag(b"x") != TokenSigner("other").tag(b"x")


@pytest.mark.parametrize("secret", ["short", "k" * 64, "long" * 40])
def test_mac_is_hmac_sha256_truncated(secret: str) -> None:
    """The precomputed-state HMAC equals the standard library's, whatever the key size."""
    import base64
    import hmac

    token = TokenSigner(secret).open_token(300)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    payload, mac = raw[:-MAC_SIZE], raw[-MAC_SIZE:]
    assert payload == b"o" + (300).to_bytes(2, "big")
    assert mac == hmac.digest(secret.encode(), payload, "sha256")[:MAC_SIZE]

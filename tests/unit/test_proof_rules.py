"""The proof's rules (`domain.proofs`) and its message (`engine.proof`)."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from bot.domain.proofs import (
    PROOFS_PER_WINDOW,
    parse_proof_addresses,
    proof_refusal,
    proof_subject,
)
from bot.domain.roles import Permission, Role, allows
from bot.engine.proof import build_proof, envelope_sender

NOW = datetime(2026, 12, 1, 18, 0, tzinfo=UTC)


def test_three_a_minute_then_refused_with_when_to_try_again() -> None:
    assert PROOFS_PER_WINDOW == 3
    assert [proof_refusal(n) for n in range(3)] == [None, None, None]
    refusal = proof_refusal(3)
    assert refusal is not None and "try again in a minute" in refusal
    assert proof_refusal(7) == refusal


def test_proof_addresses_are_split_trimmed_and_deduplicated() -> None:
    assert parse_proof_addresses("") == ()
    assert parse_proof_addresses(" qa@x.example, ,Lead@x.example,QA@x.example,") == (
        "qa@x.example",
        "Lead@x.example",
    )


def test_prepare_deliveries_and_start_deliveries_may_send_proofs() -> None:
    assert allows([Role.PREPARE_DELIVERIES], Permission.SEND_PROOF)
    assert allows([Role.START_DELIVERIES], Permission.SEND_PROOF)
    assert not allows([Role.ADMINISTRATION], Permission.SEND_PROOF)
    assert not allows([], Permission.SEND_PROOF)


def parse(data: bytes) -> EmailMessage:
    msg = message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_a_proof_carries_nothing_that_ties_it_to_a_sending_log() -> None:
    data = build_proof(
        sender="Shop <news@shop.example>",
        reply_to="help@shop.example",
        ref="promo",
        to_addr="qa@x.example",
        subject=proof_subject("Hi Ann ✨"),
        text="Hi Ann\nhttps://shop.example/sale\n",
        html='<p>Hi Ann</p><a href="https://shop.example/sale">Sale</a>',
        now=NOW,
    )
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    msg = parse(data)
    assert msg["Subject"] == "[Proof] Hi Ann ✨"
    assert (msg["From"], msg["Reply-To"], msg["To"]) == (
        "Shop <news@shop.example>",
        "help@shop.example",
        "qa@x.example",
    )
    assert msg["X-Greenlight-Proof"] == "promo"
    assert msg["Message-ID"].endswith(".proof@shop.example>")
    for header in ("X-Greenlight-Log", "X-Greenlight-Delivery", "List-Unsubscribe"):
        assert msg[header] is None
    html = msg.get_body(("html",))
    assert html is not None
    assert 'href="https://shop.example/sale"' in str(html.get_content())  # type: ignore[attr-defined]
    assert "/t/o/" not in str(html.get_content())  # type: ignore[attr-defined]


def test_a_text_only_or_html_only_proof_is_one_part() -> None:
    common = {"sender": "news@shop.example", "reply_to": None, "ref": "r", "now": NOW}
    text = parse(build_proof(to_addr="a@x.example", subject="s", text="t", html=None, **common))  # type: ignore[arg-type]
    assert text.get_content_type() == "text/plain"
    html = parse(
        build_proof(to_addr="a@x.example", subject="s", text=None, html="<p>h</p>", **common)
    )  # type: ignore[arg-type]
    assert html.get_content_type() == "text/html"
    with pytest.raises(ValueError):
        build_proof(to_addr="a@x.example", subject="s", text=None, html=None, **common)  # type: ignore[arg-type]


def test_the_envelope_sender_is_the_from_address() -> None:
    assert envelope_sender("Shop <news@shop.example>") == ("news@shop.example", "shop.example")
    with pytest.raises(ValueError):
        envelope_sender("a@x.example, b@x.example")

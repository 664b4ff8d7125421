"""Proofs: a delivery's message sent to the people preparing it, before it is confirmed.

A proof is a test message, never one of the delivery's: its subject says so, and it is
never counted (no sending log, no KPI, no tracking, no quarantine). Each person may send
a few a minute, counted from the audit trail (`proof.sent`), so the limit holds across
processes and restarts; it is there to stop a loop of clicks from flooding a mailbox
or the relay, not to meter anyone.
"""

from __future__ import annotations

from datetime import timedelta

PROOF_PREFIX = "[Proof] "
PROOF_SENT = "proof.sent"  # the audit action
PROOFS_PER_WINDOW = 3
PROOF_WINDOW = timedelta(minutes=1)


def proof_subject(subject: str) -> str:
    """The subject a proof carries: the message's own, marked as a proof."""
    return PROOF_PREFIX + subject


def proof_refusal(sent_in_window: int) -> str | None:
    """Why another proof is refused now (None: it may go), given the person's proofs
    of the last `PROOF_WINDOW`."""
    if sent_in_window < PROOFS_PER_WINDOW:
        return None
    return (
        f"You sent {PROOFS_PER_WINDOW} proofs in the last minute, the most allowed: "
        "try again in a minute."
    )


def parse_proof_addresses(value: str) -> tuple[str, ...]:
    """PROOF_ADDRESSES: comma-separated addresses, blanks and repeats dropped."""
    seen: dict[str, str] = {}  # lower case -> the first spelling given
    for part in value.split(","):
        address = part.strip()
        if address:
            seen.setdefault(address.lower(), address)
    return tuple(seen.values())

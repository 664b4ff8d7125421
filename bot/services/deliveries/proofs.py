"""Proofs: **Send me a proof** on the card and `/campaign proof REF [EMAIL]`.

The delivery's message rendered for a profile of its audience (its first, or the one
asked for: the same rendering as the card and the Preview page, `preview.render_for`),
marked `[Proof] ` in its subject and relayed through MAIL_URL's transport to the
person's own address, or to PROOF_ADDRESSES. A proof is no message of the delivery: it
writes no sending log, touches no counter, its links are left as written (nothing is
tracked) and its Message-ID matches no log, so no feedback about it counts or
quarantines anyone (`engine.proof`). What records it is the audit trail (`proof.sent`,
with the delivery, the profile and the addresses), which also counts each person's
proofs of the last minute (`domain.proofs`).

The count is read before the relay is asked and the entry written once the relay has
accepted, so a proof the relay refused is not held against anyone; two proofs asked in
the same instant by one person may both pass the count.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bot.context import Context, Session
from bot.domain.addresses import address_problem
from bot.domain.errors import DomainError
from bot.domain.proofs import (
    PROOF_SENT,
    PROOF_WINDOW,
    parse_proof_addresses,
    proof_refusal,
    proof_subject,
)
from bot.domain.roles import Actor, Permission
from bot.engine.proof import build_proof, envelope_sender
from bot.engine.transports import Envelope, RelayResult, Transport, TransportError
from bot.services.deliveries.preview import render_for
from bot.store import audit, deliveries

MAX_PROOF_ADDRESSES = 10


@dataclass(frozen=True)
class ProofSent:
    """A proof the relay accepted: which delivery, rendered for whom, sent to whom."""

    ref: str
    profile: str
    subject: str
    to: tuple[str, ...]
    refused: tuple[str, ...] = ()  # "address: 550 reason", when the relay took only some


def configured_addresses(ctx: Context) -> tuple[str, ...]:
    """PROOF_ADDRESSES, when set: they take every proof, whoever asks."""
    return parse_proof_addresses(ctx.settings.proof_addresses)


def may_send_proof(ctx: Context, actor: Actor) -> None:
    """Raises unless `actor` may send a proof now: the role, then the minute's count.

    Asked before the person's own address is looked up, so a refusal costs no call.
    """
    actor.require(Permission.SEND_PROOF)
    with ctx.sessions() as s:
        _check_rate(ctx, s, actor)


def _check_rate(ctx: Context, session: Session, actor: Actor) -> None:
    since = ctx.clock.now() - PROOF_WINDOW
    sent = audit.count_since(session, actor=actor.id, action=PROOF_SENT, since=since)
    refusal = proof_refusal(sent)
    if refusal is not None:
        raise DomainError(refusal)


def _check_addresses(to: Sequence[str]) -> tuple[str, ...]:
    if not to:
        raise DomainError("a proof needs an address to go to")
    if len(to) > MAX_PROOF_ADDRESSES:
        raise DomainError(f"a proof goes to at most {MAX_PROOF_ADDRESSES} addresses")
    for address in to:
        problem = address_problem(address)
        if problem is not None:
            raise DomainError(f"a proof cannot go to {address!r}: {problem}")
    return tuple(to)


async def _relay(transports: Callable[[], Transport], batch: list[Envelope]) -> list[RelayResult]:
    transport = transports()
    try:
        return await transport.send(batch)
    finally:
        await transport.close()


def send_proof(
    ctx: Context,
    actor: Actor,
    transports: Callable[[], Transport],
    ref: str,
    email: str | None,
    to: Sequence[str],
) -> ProofSent:
    """Render `ref` for `email`'s profile (the first without one) and relay it to `to`.

    Called from a worker thread (`HandlerDeps.call`): the relay runs on a loop of its
    own, on a transport made for this proof and closed after it.
    """
    actor.require(Permission.SEND_PROOF)
    recipients = _check_addresses(to)
    with ctx.sessions() as s:
        _check_rate(ctx, s, actor)
        d = deliveries.get(s, ref)
        shown = render_for(s, d, email)
        sender, reply_to = d.sender, d.reply_to
    subject = proof_subject(shown.subject)
    now = ctx.clock.now()
    try:
        mail_from, _ = envelope_sender(sender)
        batch = [
            Envelope(
                i,
                mail_from,
                address,
                build_proof(
                    sender=sender,
                    reply_to=reply_to,
                    ref=ref,
                    to_addr=address,
                    subject=subject,
                    text=shown.text,
                    html=shown.html,
                    now=now,
                ),
            )
            for i, address in enumerate(recipients)
        ]
    except ValueError as exc:
        raise DomainError(f"the proof of {ref!r} cannot be built: {exc}") from None
    try:
        results = asyncio.run(_relay(transports, batch))
    except TransportError as exc:
        raise DomainError(f"the relay (MAIL_URL) did not take the proof: {exc.reason}") from None
    accepted = tuple(recipients[r.log_id] for r in results if r.outcome == "accepted")
    refused = tuple(
        f"{recipients[r.log_id]}: {r.smtp_code} {r.smtp_message}"
        for r in results
        if r.outcome != "accepted"
    )
    if not accepted:
        raise DomainError(f"the relay refused the proof: {'; '.join(refused)}")
    with ctx.sessions.begin() as s:
        audit.record(
            s,
            ctx.clock.now(),
            actor=actor.id,
            action=PROOF_SENT,
            subject_kind="delivery",
            subject_ref=ref,
            detail={"profile": shown.email, "addresses": list(accepted)},
        )
    return ProofSent(ref, shown.email, subject, accepted, refused)

"""Each signed request is acted on once: a captured request replayed is refused.

A signature proves who sent a request and, with its timestamp, that it is recent; it
does not prove that it is the first time it arrives. Slack's requests and Mailgun's
signed tokens are remembered here (by a digest of the signature) for their freshness
window and a margin, in the database, so a replay is refused by whichever process it
reaches: a captured click replayed after someone undid it, a grant replayed after
the role was revoked, a Mailgun signature block reused to carry forged events.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from bot.context import Context, Session
from bot.store import replays


class Replayed(Exception):
    """This signature was used before: refuse the request (401), change nothing."""


@dataclass(frozen=True, slots=True)
class SingleUse:
    """A signature that may be acted on once, remembered for twice its window."""

    source: str
    signature: str
    window: timedelta

    @property
    def key(self) -> str:
        digest = hashlib.sha256(self.signature.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{self.source}:{digest}"


def first_use(ctx: Context, source: str, signature: str, window: timedelta) -> bool:
    """True the first time this signature of `source` is seen; False for a replay."""
    with ctx.sessions.begin() as s:
        return take(s, ctx, SingleUse(source, signature, window))


def take(session: Session, ctx: Context, once: SingleUse) -> bool:
    """`first_use` inside the caller's transaction: the signature is spent only if it commits."""
    return replays.first_use(session, once.key, ctx.clock.now(), 2 * once.window)


def give_back(session: Session, once: SingleUse) -> None:
    """Forget a signature taken in this transaction: its request is to be retried."""
    replays.forget(session, once.key)

"""Each signed request is acted on once: a captured request replayed is refused.

A signature proves who sent a request and, with its timestamp, that it is recent; it
does not prove that it is the first time it arrives. Slack's requests and Mailgun's
signed tokens are remembered here (by a digest of the signature) for their freshness
window and a margin, in the database, so a replay is refused by whichever process it
reaches: a captured click replayed after someone undid it, a grant replayed after
the role was revoked.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from bot.context import Context
from bot.store import replays


def first_use(ctx: Context, source: str, signature: str, window: timedelta) -> bool:
    """True the first time this signature of `source` is seen; False for a replay."""
    digest = hashlib.sha256(signature.encode("utf-8", "surrogatepass")).hexdigest()
    with ctx.sessions.begin() as s:
        return replays.first_use(s, f"{source}:{digest}", ctx.clock.now(), 2 * window)

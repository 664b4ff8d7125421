"""Signed requests already acted on: the replay guard, shared by every process."""

from __future__ import annotations

import zlib
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session

from bot.store.db import insert_ignoring_conflicts
from bot.store.models import SeenRequest

PRUNE_EVERY = 32


def first_use(session: Session, key: str, at: datetime, keep: timedelta) -> bool:
    """True the first time `key` is seen in `keep`; False for a replay.

    The unique key decides, also between two processes that see the same request at
    once. Keys older than `keep` (the signature's freshness window, and a margin)
    are forgotten: a request that old is refused for its timestamp anyway. One request
    in `PRUNE_EVERY` does the forgetting (a statement less on the others, which wait
    for Slack's 3-second acknowledgement); the keys are signatures, so which ones is
    spread evenly, and a key kept a little longer changes nothing.
    """
    if zlib.crc32(key.encode()) % PRUNE_EVERY == 0:
        session.execute(delete(SeenRequest).where(SeenRequest.seen_at < at - keep))
    new = session.execute(
        insert_ignoring_conflicts(session, SeenRequest)
        .values(key=key, seen_at=at)
        .returning(SeenRequest.key)
    ).first()
    return new is not None


def forget(session: Session, key: str) -> None:
    session.execute(delete(SeenRequest).where(SeenRequest.key == key))

"""The fleet's token bucket: SEND_RATE_LIMIT held across every worker and machine.

One row per bucket. A worker takes `n` tokens in one UPDATE that first adds what the
rate earned since the last take (capped at the bucket's capacity), with the database's
clock, so workers on machines whose clocks differ agree. The answer may be negative:
the worker then owes that many tokens and waits `-tokens / rate` seconds before
sending them (`engine.rate_limit.SharedBucket`).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from bot.store.db import bound_idle

FLEET = "fleet"

_TAKE = text(
    """
    UPDATE send_rate
       SET tokens = LEAST(:capacity,
                          tokens + EXTRACT(EPOCH FROM (clock_timestamp() - refilled_at)) * :rate)
                    - :n,
           refilled_at = clock_timestamp()
     WHERE name = :name
    RETURNING tokens
    """
)
_CREATE = text(
    """
    INSERT INTO send_rate (name, tokens, refilled_at)
    VALUES (:name, :capacity, clock_timestamp())
    ON CONFLICT (name) DO NOTHING
    """
)


def take(session: Session, n: float, rate: float, capacity: float, name: str = FLEET) -> float:
    """Take `n` tokens (PostgreSQL); the bucket's balance after it (negative: a debt).

    The row is the whole fleet's: a worker stopped between this UPDATE and its commit
    would stop every worker, so the transaction is ended by the server when idle."""
    bound_idle(session)
    balance = session.execute(
        _TAKE, {"n": n, "rate": rate, "capacity": capacity, "name": name}
    ).scalar()
    if balance is None:
        session.execute(_CREATE, {"name": name, "capacity": capacity})
        balance = session.execute(
            _TAKE, {"n": n, "rate": rate, "capacity": capacity, "name": name}
        ).scalar()
    if balance is None:
        raise LookupError(f"no send_rate row {name!r}")
    return float(balance)

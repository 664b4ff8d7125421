"""What the sending needs to know of the job engine's state, and the claims of its jobs.

procrastinate owns its tables (`procrastinate_jobs`, applied by migration 0009); the one
question asked of them here is whether a job attempt is still the live one, which is
what a worker's fence asks when its confirmation has grown old (`bot.engine.claims`).
"""

from __future__ import annotations

from sqlalchemy import text, update
from sqlalchemy.orm import Session

from bot.store.db import affected
from bot.store.models import SendingLog

_ATTEMPT = text("SELECT attempts, status::text FROM procrastinate_jobs WHERE id = :id")


def attempt_is_live(session: Session, job_id: int, attempts: int) -> bool:
    """The job still runs, and as this attempt (a retry after a stall makes a new one)."""
    row = session.execute(_ATTEMPT, {"id": job_id}).first()
    return row is not None and row[1] == "doing" and int(row[0]) == attempts


def release_attempt(session: Session, token: str) -> int:
    """Free the logs one job attempt still claims; they will be sent (again)."""
    return affected(
        session.execute(
            update(SendingLog)
            .where(SendingLog.claim_token == token)
            .values(claim_token=None, claimed_at=None)
            .execution_options(synchronize_session=False)
        )
    )

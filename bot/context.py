"""What a use case is given: the settings, the unit of work and the clock.

Every use case takes a `Context` and the ports it talks through (a `Transport`, the
`Notifications`), never the composition root: what a function may touch is in its
signature. `sessions.begin()` is the unit of work (one use case, one transaction, one
commit); `sessions()` a read. The clock is injected so that schedules, validity
periods and hourly jobs are tested, and run by `jobs run-due --at`, without waiting.

A Context is immutable: a command that runs "as of" another instant makes a new one
(`at`), and nothing changes the one other code holds.

`Session` is the unit of work's handle: use cases open it and pass it, unopened, to
the functions of `bot.store`, the only code that writes SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from bot.clock import Clock, FixedClock
from bot.config import Settings

__all__ = ["Context", "Session"]


@dataclass(frozen=True)
class Context:
    settings: Settings
    sessions: sessionmaker[Session]
    clock: Clock

    def with_clock(self, clock: Clock) -> Context:
        return replace(self, clock=clock)

    def at(self, instant: Any) -> Context:
        """The same context with the clock stopped at `instant` (an aware datetime)."""
        return replace(self, clock=FixedClock(instant))

    def with_settings(self, **changes: Any) -> Context:
        """The same context with some settings changed (tests, and nothing else)."""
        return replace(self, settings=self.settings.model_copy(update=changes))

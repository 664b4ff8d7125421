"""The numbers `/metrics` shows that live in the database."""

from __future__ import annotations

from bot.context import Context
from bot.store import metrics


def gauges(ctx: Context) -> dict[str, float]:
    with ctx.sessions() as s:
        return metrics.gauges(s, ctx.clock.now())

"""KPI formulas of the Deployment block (SPEC section 6).

Counters are counts of sending logs per status plus unique openers and clickers;
every rate is derived from them. A rate whose denominator is zero is None (shown
as "—"), never an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace

from bot.domain.logs import LogStatus

DASH = "—"


@dataclass(frozen=True)
class Counters:
    to_deliver: int = 0
    queued: int = 0
    pending: int = 0
    sent: int = 0  # logs in status Sent
    failed: int = 0
    ignored: int = 0
    unique_opens: int = 0
    unique_clicks: int = 0

    def apply(self, deltas: Mapping[LogStatus, int]) -> Counters:
        """Counters after a log transition's deltas."""
        changes = {status.value: getattr(self, status.value) + d for status, d in deltas.items()}
        return replace(self, **changes)

    def __add__(self, other: Counters) -> Counters:
        """Counters of several executions together (a recurring delivery's total)."""
        return Counters(**{k: v + getattr(other, k) for k, v in self.as_dict().items()})

    @property
    def relayed(self) -> int:
        """The "Sent" KPI: messages relayed to the MTA."""
        return self.pending + self.sent + self.failed

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def ratio(numerator: int, denominator: int) -> float | None:
    """A percentage rounded to 2 places, or None when there is nothing to divide by."""
    if denominator <= 0:
        return None
    return round(100.0 * numerator / denominator, 2)


@dataclass(frozen=True)
class Kpis:
    to_deliver: int
    sent: int
    delivered_pct: float | None
    bounces_errors_pct: float | None
    open_rate: float | None
    click_through_rate: float | None

    def as_dict(self) -> dict[str, int | float | None]:
        return asdict(self)


def kpis(c: Counters) -> Kpis:
    return Kpis(
        to_deliver=c.to_deliver,
        sent=c.relayed,
        delivered_pct=ratio(c.sent, c.relayed),
        bounces_errors_pct=ratio(c.failed, c.relayed),
        open_rate=ratio(c.unique_opens, c.sent),
        click_through_rate=ratio(c.unique_clicks, c.sent),
    )


def format_pct(value: float | None) -> str:
    """How a rate reads in Slack and the CLI: "97.5 %" or "—"."""
    if value is None:
        return DASH
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{text} %"

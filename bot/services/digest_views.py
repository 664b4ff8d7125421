"""What the hourly KPI digest shows: pages of rows, and a chart of the largest deliveries.

A digest is built once, at its first attempt, and stored as these views (JSON) so
that a retry after a Slack failure posts exactly what was built, never a recomputed
variant. `to_json` and `from_json` are that storage; the Slack implementation of the
Notifications port draws them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from bot.domain.digest import KpiChange
from bot.domain.kpi import Kpis


def _at(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def _maybe_at(value: Any) -> datetime | None:
    return None if value is None else _at(value)


@dataclass(frozen=True)
class DigestRow:
    """One delivery or execution still inside its validity period."""

    ref: str
    name: str
    execution: str  # MAIN_KEY for a one-off delivery
    validity_ends_at: datetime
    kpis: Kpis
    change: KpiChange | None  # None: not in the previous digest
    new: bool  # marked "new": there was a previous digest, and it was not in it

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "name": self.name,
            "execution": self.execution,
            "validity_ends_at": self.validity_ends_at.isoformat(),
            "kpis": self.kpis.as_dict(),
            "change": asdict(self.change) if self.change else None,
            "new": self.new,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DigestRow:
        change = data.get("change")
        return cls(
            ref=str(data["ref"]),
            name=str(data["name"]),
            execution=str(data["execution"]),
            validity_ends_at=_at(data["validity_ends_at"]),
            kpis=Kpis(**data["kpis"]),
            change=KpiChange(**change) if change else None,
            new=bool(data.get("new")),
        )


@dataclass(frozen=True)
class DigestPage:
    """One message of a digest: `part` of `parts`, some of its `total` rows.

    `prebuilt` is a message stored as Block Kit by an earlier version of Greenlight,
    still to be posted as it was built.
    """

    slot_at: datetime
    tz: str
    previous_at: datetime | None
    total: int
    part: int
    parts: int
    rows: Sequence[DigestRow] = ()
    prebuilt: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "slot_at": self.slot_at.isoformat(),
            "tz": self.tz,
            "previous_at": self.previous_at.isoformat() if self.previous_at else None,
            "total": self.total,
            "part": self.part,
            "parts": self.parts,
            "rows": [row.to_json() for row in self.rows],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DigestPage:
        return cls(
            slot_at=_at(data["slot_at"]),
            tz=str(data["tz"]),
            previous_at=_maybe_at(data.get("previous_at")),
            total=int(data["total"]),
            part=int(data["part"]),
            parts=int(data["parts"]),
            rows=[DigestRow.from_json(row) for row in data.get("rows") or []],
        )


@dataclass(frozen=True)
class ChartPoint:
    at: datetime
    delivered_pct: float | None
    bounces_errors_pct: float | None
    open_rate: float | None
    click_through_rate: float | None

    @property
    def rates(self) -> tuple[float | None, float | None, float | None, float | None]:
        """The four rates, in the order of the chart's panels."""
        return (
            self.delivered_pct,
            self.bounces_errors_pct,
            self.open_rate,
            self.click_through_rate,
        )

    @classmethod
    def of(cls, at: datetime, k: Kpis) -> ChartPoint:
        return cls(at, k.delivered_pct, k.bounces_errors_pct, k.open_rate, k.click_through_rate)


@dataclass(frozen=True)
class ChartSeries:
    label: str
    points: Sequence[ChartPoint] = field(default_factory=tuple)


@dataclass(frozen=True)
class DigestChart:
    """The four rates over time (one point per digest) of the largest deliveries."""

    title: str
    tz: str
    series: Sequence[ChartSeries]
    comment: str
    filename: str

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "tz": self.tz,
            "series": [
                {
                    "label": s.label,
                    "points": [[p.at.isoformat(), *p.rates] for p in s.points],
                }
                for s in self.series
            ],
            "comment": self.comment,
            "filename": self.filename,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DigestChart:
        return cls(
            title=str(data.get("title") or "KPIs over time"),
            tz=str(data.get("tz") or "UTC"),
            series=[
                ChartSeries(
                    str(s["label"]),
                    [ChartPoint(_at(p[0]), p[1], p[2], p[3], p[4]) for p in s["points"]],
                )
                for s in data.get("series") or []
            ],
            comment=str(data.get("comment") or ""),
            filename=str(data.get("filename") or "kpi-digest.png"),
        )

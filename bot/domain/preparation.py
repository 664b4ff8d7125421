"""What a preparation found that a person must read: critical errors and warnings.

Both are stored with the delivery (as JSON) and shown by the CLI, the card and the
`/campaign prepare` reply, each through `describe()`, so a problem reads the same
wherever it is seen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_STORED_ERRORS = 20
SAMPLE_EMAILS = 3  # addresses kept per aggregated warning, to show who is concerned


@dataclass(frozen=True)
class PreparationError:
    """A message that does not render: for whom (None: a syntax error, for everyone),
    in which part and line, and why. The last stored entry may instead say how many
    more were left out (`omitted` of `total`)."""

    email: str | None
    part: str | None
    line: int | None
    reason: str
    omitted: int | None = None
    total: int | None = None

    def describe(self) -> str:
        if self.omitted:
            return self.reason
        where = f"{self.part} line {self.line}" if self.line else str(self.part or "")
        who = f"{self.email}: " if self.email else ""
        return f"{who}{where}: {self.reason}" if where else f"{who}{self.reason}"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "email": self.email,
            "part": self.part,
            "line": self.line,
            "reason": self.reason,
        }
        if self.omitted is not None:
            data |= {"omitted": self.omitted, "total": self.total}
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PreparationError:
        return cls(
            email=data.get("email"),
            part=data.get("part"),
            line=data.get("line"),
            reason=str(data.get("reason") or ""),
            omitted=data.get("omitted"),
            total=data.get("total"),
        )


@dataclass(frozen=True)
class PreparationWarning:
    """A variable some profiles lack: it renders empty. Counted, with a few addresses."""

    name: str
    count: int
    emails: Sequence[str] = field(default_factory=tuple)
    kind: str = "missing variable"

    def describe(self) -> str:
        emails = ", ".join(self.emails)
        more = f" (e.g. {emails})" if emails else ""
        return f"{self.kind} {self.name!r} for {self.count} profile(s){more}"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "count": self.count,
            "emails": list(self.emails),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PreparationWarning:
        return cls(
            name=str(data.get("name", "")),
            count=int(data.get("count") or 0),
            emails=tuple(data.get("emails") or ()),
            kind=str(data.get("kind") or "missing variable"),
        )


def stored_errors(errors: Sequence[PreparationError], total: int) -> list[PreparationError]:
    """The first errors, and one closing entry saying how many were left out."""
    stored = list(errors[:MAX_STORED_ERRORS])
    omitted = total - len(stored)
    if omitted > 0:
        stored.append(
            PreparationError(
                email=None,
                part=None,
                line=None,
                reason=f"… and {omitted} more ({total} in all)",
                omitted=omitted,
                total=total,
            )
        )
    return stored

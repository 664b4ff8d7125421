"""What is wrong with an input file, shaped so every front end can show it whole."""

from __future__ import annotations

from dataclasses import dataclass

from bot.domain.errors import DomainError


@dataclass(frozen=True)
class Problem:
    """One bad line or entry of an input file: where, which field, and why."""

    file: str
    where: str  # "line 12" or "entry 2 (ref spring-sale, line 14)"
    field: str | None
    reason: str

    def __str__(self) -> str:
        field = f", field {self.field}" if self.field else ""
        return f"{self.file}: {self.where}{field}: {self.reason}"

    def as_dict(self) -> dict[str, str | None]:
        return {"file": self.file, "where": self.where, "field": self.field, "reason": self.reason}


MAX_LISTED = 100  # problems kept and shown; a file of a million bad lines says so in one


class InputRejected(DomainError):
    """A file had bad lines: nothing of it was applied. The first `MAX_LISTED` problems are
    listed (in file order), with how many there are in all: `total`, when a reader that
    streams kept only the first ones."""

    def __init__(self, problems: list[Problem], total: int | None = None) -> None:
        self.total = len(problems) if total is None else total
        self.problems = problems[:MAX_LISTED]
        lines = "\n".join(f"  {p}" for p in self.problems)
        if self.total > MAX_LISTED:
            lines += f"\n  … and {self.total - MAX_LISTED} more; fix these first"
        noun = "problem" if self.total == 1 else "problems"
        super().__init__(f"nothing was imported; fix {self.total} {noun}:\n{lines}")

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


class InputRejected(DomainError):
    """A file had bad lines: nothing of it was applied. Every problem is listed."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"nothing was imported; fix {len(problems)} {noun}:\n{lines}")

"""What a preparation found that a person must read: critical errors and warnings.

Both are stored with the delivery (as JSON) and shown by the CLI, the card and the
`/campaign prepare` reply, each through `describe()`, so a problem reads the same
wherever it is seen.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import unescape
from typing import Any

MAX_STORED_ERRORS = 20
SAMPLE_EMAILS = 3  # addresses kept per aggregated warning, to show who is concerned

MISSING_VARIABLE = "missing variable"
NO_UNSUBSCRIBE_LINK = "no unsubscribe link"
FEW_RETRIES = "few retries for the last wave"  # a recipient-local send's (domain.waves)
UNSUBSCRIBE_VARIABLE = "unsubscribe_url"


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
    """A variable some profiles lack: it renders empty. Counted, with a few addresses.

    Or a message without its unsubscribe link (NO_UNSUBSCRIBE_LINK), or the last wave of
    a recipient-local send left with less validity than its retries take (FEW_RETRIES,
    said in `detail`)."""

    name: str
    count: int
    emails: Sequence[str] = field(default_factory=tuple)
    kind: str = MISSING_VARIABLE  # or NO_UNSUBSCRIBE_LINK (`name`: "unsubscribe_url")
    detail: str | None = None

    def describe(self) -> str:
        if self.detail:
            return self.detail
        emails = ", ".join(self.emails)
        more = f" (e.g. {emails})" if emails else ""
        if self.kind == NO_UNSUBSCRIBE_LINK:
            return (
                f"no unsubscribe link in the message of {self.count} profile(s){more}: "
                f'place <a href="{{{{ {self.name} }}}}">…</a> in the HTML'
            )
        return f"{self.kind} {self.name!r} for {self.count} profile(s){more}"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "count": self.count,
            "emails": list(self.emails),
            **({"detail": self.detail} if self.detail else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PreparationWarning:
        return cls(
            name=str(data.get("name", "")),
            count=int(data.get("count") or 0),
            emails=tuple(data.get("emails") or ()),
            kind=str(data.get("kind") or MISSING_VARIABLE),
            detail=data.get("detail"),
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


# An `<a>` or `<area>` element's href, quoted either way or bare.
_HREF = re.compile(
    r"""<(?:a|area)\b[^>]*?\shref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>"']+))""",
    re.IGNORECASE,
)


def has_unsubscribe_link(html: str | None, text: str | None, unsubscribe_url: str) -> bool:
    """Whether one rendered message carries its unsubscribe link.

    What counts (README, "The unsubscribe link check"): with an HTML part, an `<a>` or
    `<area>` element whose `href` is exactly the message's `unsubscribe_url` (the
    template writes `href="{{ unsubscribe_url }}"`), whatever the link says; without
    one, the text part holding that URL. A `mailto:` or another site's unsubscribe
    page does not count: Greenlight cannot tell that it works, while its own target
    is the `List-Unsubscribe` one-click that denylists the address.
    """
    if html is None:
        return text is not None and unsubscribe_url in text
    if unsubscribe_url not in html:  # the cheap test first: most messages stop here
        return False
    for match in _HREF.finditer(html):
        href = next(g for g in match.groups() if g is not None)
        if unescape(href).strip() == unsubscribe_url:
            return True
    return False


def no_unsubscribe_link_error(email: str | None, part: str) -> PreparationError:
    """REQUIRE_UNSUBSCRIBE_LINK: a message without its unsubscribe link blocks the send."""
    return PreparationError(
        email=email,
        part=part,
        line=None,
        reason=(
            f'no unsubscribe link: place <a href="{{{{ {UNSUBSCRIBE_VARIABLE} }}}}">…</a> in '
            "the HTML (REQUIRE_UNSUBSCRIBE_LINK is on)"
        ),
    )

"""The send guard's rule: when the relay's answers say a send is hurting the sender.

A relay that refuses many recipients, or early hard bounces, usually mean a stale
list or a reputation problem: going on makes it worse. So while an execution sends,
its latest relayed logs are read after each batch; when more than `rate` of the last
`window` of them were refused or hard-bounced, once at least `minimum` were relayed,
the send is paused (`services.deliveries.guard`) and a person decides.

Pure: the caller reads the answers (newest first, only those since the guard's
window started) and this module says whether they cross the threshold, and what to
tell people about them (the top reasons and recipient domains).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TOP = 3  # reasons and domains an alert names


@dataclass(frozen=True)
class GuardPolicy:
    """When the guard pauses: more than `rate` failed of the last `window` relayed,
    once `minimum` were relayed since the window started. `enabled` False: never."""

    rate: float = 0.05
    window: int = 500
    minimum: int = 200
    enabled: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "rate": self.rate,
            "window": self.window,
            "minimum": self.minimum,
        }


def policy_for(override: Mapping[str, Any] | None, default: GuardPolicy) -> GuardPolicy:
    """A delivery's policy: its own settings (`guard:` in its definition, stored as
    written) over the global ones; `{"off": true}` turns it off."""
    if not override:
        return default
    if override.get("off"):
        return GuardPolicy(default.rate, default.window, default.minimum, enabled=False)
    return GuardPolicy(
        rate=float(override.get("rate", default.rate)),
        window=int(override.get("window", default.window)),
        minimum=int(override.get("minimum", default.minimum)),
    )


@dataclass(frozen=True)
class Answer:
    """One relayed log as the guard sees it: refused or hard-bounced, why, to where."""

    failed: bool
    reason: str | None
    domain: str


@dataclass(frozen=True)
class Reading:
    """What the window holds: how many relayed, how many failed, the top causes."""

    counted: int
    failed: int
    reasons: tuple[tuple[str, int], ...]
    domains: tuple[tuple[str, int], ...]

    @property
    def rate(self) -> float:
        return self.failed / self.counted if self.counted else 0.0


def read(answers: Sequence[Answer], policy: GuardPolicy) -> Reading:
    """The window: the newest `policy.window` answers given."""
    window = answers[: policy.window]
    failed = [a for a in window if a.failed]
    reasons = Counter(a.reason or "unknown" for a in failed)
    domains = Counter(a.domain for a in failed)
    return Reading(
        counted=len(window),
        failed=len(failed),
        reasons=tuple(reasons.most_common(TOP)),
        domains=tuple(domains.most_common(TOP)),
    )


def trips(reading: Reading, policy: GuardPolicy) -> bool:
    """More than the rate failed, over enough answers to mean something."""
    if not policy.enabled or reading.counted < policy.minimum:
        return False
    return reading.failed > policy.rate * reading.counted


def domain_of(email: str) -> str:
    """The recipient's domain, as the alert groups them (lower case)."""
    return email.rpartition("@")[2].lower() or "unknown"

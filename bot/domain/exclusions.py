"""Why a targeted profile gets no message (SPEC section 1, exclusion logs)."""

from __future__ import annotations

from enum import StrEnum


class ExclusionReason(StrEnum):
    """Checked at preparation in this order: the first that applies is recorded."""

    INVALID_ADDRESS = "invalid address"
    DUPLICATE_ADDRESS = "duplicate address"
    DENYLISTED = "denylisted"
    QUARANTINED = "quarantined"

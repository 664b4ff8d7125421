"""Transports: where relayed messages go, chosen by MAIL_URL.

`make_transport(settings)` is the only constructor the engine needs; the SMTP module
(and aiosmtplib) is imported only when MAIL_URL is smtp:// or smtps://.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.engine.transports.base import (
    Envelope,
    Fence,
    FenceLost,
    OnResult,
    Outcome,
    RelayResult,
    RelayUnavailable,
    Transport,
    TransportError,
)
from bot.engine.transports.maildir import MaildirTransport
from bot.engine.transports.memory import MemoryTransport

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.engine.transports.smtp import Limiter

__all__ = [
    "Envelope",
    "Fence",
    "FenceLost",
    "MaildirTransport",
    "MemoryTransport",
    "OnResult",
    "Outcome",
    "RelayResult",
    "RelayUnavailable",
    "Transport",
    "TransportError",
    "make_transport",
]


def make_transport(settings: Settings, limiter: Limiter | None = None) -> Transport:
    """The transport MAIL_URL names: Maildir folder, or SMTP pool with its settings
    (`limiter` paces it instead of its own SEND_RATE_LIMIT bucket: the fleet's)."""
    target = settings.mail_target
    if target.scheme == "maildir":
        assert target.path is not None  # parse_mail_url guarantees a folder
        return MaildirTransport(target.path)
    from bot.engine.transports.smtp import SmtpTransport

    return SmtpTransport.from_settings(settings, target, limiter)

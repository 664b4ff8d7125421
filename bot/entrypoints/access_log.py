"""The HTTP access log, without the secrets that travel in URLs.

Tracking, unsubscribe, view-online and preview links carry signed tokens in their path
(``/t/o/…``, ``/t/c/…``, ``/u/…``, ``/v/…``, ``/p/…``), and the click token holds the URL
clicked. A log line is read by more people than the database is, so those paths are
logged with the token cut, wherever they appear in the line (the request, and the
Referer of the unsubscribe form).
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp.web_log import AccessLogger

_TOKEN_PATH = re.compile(r"(/t/[oc]/|/u/|/v/|/p/)[^\s\"?#/]+")


def redact(text: str) -> str:
    """Token paths with the token replaced by "…"."""
    return _TOKEN_PATH.sub(r"\1…", text)


class RedactingAccessLogger(AccessLogger):
    """aiohttp's access log, each field passed through `redact`."""

    def _format_line(self, request: Any, response: Any, time: float) -> Any:
        return [
            (key, redact(value) if isinstance(value, str) else value)
            for key, value in super()._format_line(request, response, time)
        ]


# How every runner of the app is made: `serve` and the tests' live app.
RUNNER_OPTIONS: dict[str, Any] = {"access_log_class": RedactingAccessLogger}

"""Amazon SNS signing certificates, fetched once per URL and kept a day.

`bot.feedback.ses` checks every cheap thing (the URL's host, the topic, the signature's
shape) before it asks for a certificate; this module is the one place that then goes
to the network. A fetch that fails raises `CertificateUnavailable`, which the endpoint
answers 503 so SNS delivers the notification again later: Amazon being unreachable is
no reason to lose a bounce, and no reason to answer 500.

The fetch does not follow redirects (a redirect could lead away from the host that
was checked) and reads at most `MAX_CERTIFICATE_BYTES`. The cache is bounded both in
entries and in age; only certificates that were fetched are kept, so a failure is
tried again at the next notification.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timedelta

from bot.clock import Clock, SystemClock

MAX_CERTIFICATE_BYTES = 64 * 1024
MAX_ENTRIES = 64
KEEP = timedelta(hours=24)
TIMEOUT_SECONDS = 10.0


class CertificateUnavailable(Exception):
    """The certificate could not be fetched now: answer 503, the sender retries."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # urllib then raises HTTPError for the 3xx answer


_OPENER = urllib.request.build_opener(_NoRedirects)


def fetch_over_https(url: str) -> bytes:
    """GET `url` (already checked to be Amazon's), bounded in time and size."""
    with _OPENER.open(url, timeout=TIMEOUT_SECONDS) as resp:
        data: bytes = resp.read(MAX_CERTIFICATE_BYTES + 1)
    if len(data) > MAX_CERTIFICATE_BYTES:
        raise ValueError(f"the certificate at {url} is larger than {MAX_CERTIFICATE_BYTES} bytes")
    return data


class SnsCertificates:
    """`fetch_cert` for `bot.feedback.ses.verify_and_parse`, cached; safe across threads."""

    def __init__(
        self,
        fetch: Callable[[str], bytes] = fetch_over_https,
        clock: Clock | None = None,
        max_entries: int = MAX_ENTRIES,
        keep: timedelta = KEEP,
    ) -> None:
        self._fetch = fetch
        self._clock = clock or SystemClock()
        self._max_entries = max_entries
        self._keep = keep
        self._cache: OrderedDict[str, tuple[datetime, bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self.fetches = 0  # how often the network was asked (the metrics show it)

    def __call__(self, url: str) -> bytes:
        now = self._clock.now()
        with self._lock:
            hit = self._cache.get(url)
            if hit is not None and now - hit[0] < self._keep:
                self._cache.move_to_end(url)
                return hit[1]
        try:
            self.fetches += 1
            pem = self._fetch(url)
        except (OSError, ValueError, urllib.error.URLError) as exc:
            raise CertificateUnavailable(f"cannot fetch the SNS certificate {url}: {exc}") from exc
        with self._lock:
            self._cache[url] = (now, pem)
            self._cache.move_to_end(url)
            while len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
        return pem

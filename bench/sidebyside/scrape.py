"""/metrics the way Prometheus fetches it, timed.

Prometheus keeps one HTTP keep-alive connection per target between scrapes
and sends its own Accept (OpenMetrics preferred) and ``Accept-Encoding:
gzip``; both exporters are asked exactly that way. The time is from sending
the request to having read the whole body.
"""

from __future__ import annotations

import gzip
import http.client
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
HEADERS = {"Accept": ACCEPT, "Accept-Encoding": "gzip", "User-Agent": "Prometheus/2.42.0"}
HOW = "keep-alive on (one connection per target, as Prometheus), Prometheus' Accept (OpenMetrics) + gzip"


@dataclass
class Scraper:
    name: str
    port: int
    timeout: float = 10.0
    times: list[float] = field(default_factory=list)
    body_bytes: int = 0
    last_body: bytes = b""
    reconnects: int = 0
    """Kept-alive connections the server had closed by the next scrape."""
    _conn: http.client.HTTPConnection | None = None

    def scrape(self) -> float:
        """One GET /metrics; its seconds are recorded in ``times`` and returned.

        A kept-alive connection the server has closed meanwhile is replaced
        and the request sent again, as Prometheus' HTTP client does; the time
        is that of the request that succeeded.
        """
        reused = self._conn is not None
        try:
            elapsed, status, body = self._get()
        except (ConnectionError, http.client.RemoteDisconnected):
            self.close()
            if not reused:
                raise
            self.reconnects += 1
            elapsed, status, body = self._get()
        if status != 200:
            raise RuntimeError(f"{self.name}: /metrics answered HTTP {status}")
        self.times.append(elapsed)
        self.body_bytes = len(body)
        self.last_body = body
        return elapsed

    def _get(self) -> tuple[float, int, bytes]:
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        started = time.perf_counter()
        try:
            self._conn.request("GET", "/metrics", headers=HEADERS)
            response = self._conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        elapsed = time.perf_counter() - started
        if response.getheader("Connection", "").lower() == "close":
            self.close()
        return elapsed, response.status, body

    def series(self) -> int:
        """Samples in the last body (lines that are not comments)."""
        body = self.last_body
        return count_series(gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def count_series(text: bytes) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))


def interleaved(scrapers: Sequence[Scraper], count: int, warmup: int) -> None:
    """``warmup`` then ``count`` sequential scrapes of each, taking turns so machine noise hits all alike."""
    for _ in range(warmup):
        for scraper in scrapers:
            scraper.scrape()
    for scraper in scrapers:
        scraper.times.clear()
    for _ in range(count):
        for scraper in scrapers:
            scraper.scrape()


def fetch_text(port: int, timeout: float = 5.0) -> str | None:
    """/metrics on a fresh connection, decoded, or None when nothing answers yet (readiness polls).

    It asks exactly as Prometheus does: watchdogd keeps every format a
    client has asked for freshly rendered, so one classic-text request here
    would double the daemon's rendering work for the rest of the run.
    """
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request("GET", "/metrics", headers=HEADERS)
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
    except (OSError, http.client.HTTPException):
        return None
    if response.status != 200:
        return None
    if response.getheader("Content-Encoding", "") == "gzip":
        body = gzip.decompress(body)
    return body.decode(errors="replace")


_PROBE_SUCCESS = re.compile(r'^watchdogd_probe_success\{(?P<labels>[^}]*)\} (?P<value>\S+)$', re.MULTILINE)
_RULE_LABEL = re.compile(r'(?:^|,)rule="(?P<rule>[^"]*)"')


def probe_success(text: str) -> dict[str, float]:
    """rule -> value of ``watchdogd_probe_success`` (absent until a rule's first run)."""
    found: dict[str, float] = {}
    for match in _PROBE_SUCCESS.finditer(text):
        rule = _RULE_LABEL.search(match["labels"])
        if rule is not None:
            found[rule["rule"]] = float(match["value"])
    return found

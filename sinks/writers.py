"""Writers: one per protocol, each a small class that encodes a record's points into a body
fragment (pure) and sends a joined body (`send`, the one method at the network edge that a
test can replace).

Errors, one tree:
- `StoreUnavailable` (retry later, with backoff; the batch stays): connection refused or
  reset, timeouts, 5xx, 408, 429, and the answers that mean the sink is misconfigured rather
  than the data bad (401, 403, 404, 405): sending the data to the DLQ would lose it for a typo.
- `StoreRejected` (the data is bad for good: split the batch, dead-letter what stays
  rejected): 400, 413, 422 and any other 4xx, with the store's answer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

import httpx

from contracts.errors import ConfigError, KppError
from sinks.encode import encode_influx, encode_prometheus_text, encode_remote_write, snappy_compress
from sinks.series import Point

log = logging.getLogger("kpp.sink")

RETRYABLE_STATUS = frozenset({401, 403, 404, 405, 408, 425, 429})


class SinkError(KppError):
    """Base of the sink's errors."""


class StoreUnavailable(SinkError):
    """Backpressure: the store cannot take the batch now; keep it, pause, retry later."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class StoreRejected(SinkError):
    """The store refused the data for good (4xx); `status` and `answer` are its reply."""

    def __init__(self, status: int, answer: str) -> None:
        super().__init__(f"store answered {status}: {answer}")
        self.status = status
        self.answer = answer


@dataclass(kw_only=True)
class WriterSettings:
    url: str
    timeout_s: float = 10.0
    headers: Mapping[str, str] = field(default_factory=dict)
    verify: bool | str = True


class Writer:
    """Base: `encode(points) -> (fragment, skipped)` and `send(body)`."""

    name: ClassVar[str] = ""
    default_path: ClassVar[str] = ""
    content_type: ClassVar[str] = "text/plain"
    extra_query: ClassVar[dict[str, str]] = {}
    extra_headers: ClassVar[dict[str, str]] = {}

    def __init__(self, settings: WriterSettings, client: httpx.Client | None = None) -> None:
        self.settings = settings
        self.url = self.endpoint(settings.url)
        self._client = client or httpx.Client(timeout=settings.timeout_s, verify=settings.verify)
        self._headers = {"Content-Type": self.content_type, **self.extra_headers, **dict(settings.headers)}

    @classmethod
    def endpoint(cls, url: str) -> str:
        """A base URL gets the protocol's default path; a URL with a path is used as given.
        The query string is kept (e.g. `?db=` for InfluxDB) and `extra_query` is added."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"sink URL {url!r} is not an http(s) URL")
        path = parts.path if parts.path not in ("", "/") else cls.default_path
        query = parts.query
        for key, value in cls.extra_query.items():
            if f"{key}=" not in query:
                query = f"{query}&{key}={value}" if query else f"{key}={value}"
        return urlunsplit((parts.scheme, parts.netloc, path, query, ""))

    # -- pure -------------------------------------------------------------------------------

    def encode(self, points: Sequence[Point]) -> tuple[bytes, int]:
        raise NotImplementedError

    def body(self, fragments: Sequence[bytes]) -> bytes:
        return b"".join(fragments)

    # -- the network edge -------------------------------------------------------------------

    def send(self, body: bytes) -> None:
        """POST one body; returns on 2xx, raises StoreUnavailable or StoreRejected."""
        try:
            response = self._client.post(self.url, content=body, headers=self._headers)
        except httpx.TimeoutException as exc:
            raise StoreUnavailable(f"{self.url}: timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise StoreUnavailable(f"{self.url}: {type(exc).__name__}: {exc}") from None
        status = response.status_code
        if 200 <= status < 300:
            return
        answer = response.text.strip()[:2000]
        if status >= 500 or status in RETRYABLE_STATUS:
            if status in (401, 403, 404, 405):
                log.error("%s answered %d (check --url and credentials): %s", self.url, status, answer[:200])
            raise StoreUnavailable(f"{self.url}: {status} {answer[:300]}", status=status)
        raise StoreRejected(status, answer)

    def close(self) -> None:
        self._client.close()


class VictoriaMetricsWriter(Writer):
    """VictoriaMetrics' Prometheus text import. NaN is written but VictoriaMetrics drops it
    on ingestion (it reads NaN as "no value"); ±Inf is stored."""

    name = "victoriametrics"
    default_path = "/api/v1/import/prometheus"
    content_type = "text/plain; charset=utf-8"

    def encode(self, points: Sequence[Point]) -> tuple[bytes, int]:
        return encode_prometheus_text(points), 0

    @property
    def base_url(self) -> str:
        parts = urlsplit(self.url)
        return urlunsplit((parts.scheme, parts.netloc, "", "", ""))

    def flags_page(self) -> str | None:
        """VictoriaMetrics' /flags page (its command-line flags, `-retentionPeriod` among them),
        or None when it does not answer with one."""
        try:
            response = self._client.get(self.base_url + "/flags", headers=dict(self.settings.headers))
        except httpx.HTTPError as exc:
            log.debug("%s/flags: %s", self.base_url, exc)
            return None
        return response.text if response.status_code == 200 else None


class RemoteWriteWriter(Writer):
    """Prometheus remote write 1.0: protobuf WriteRequest, snappy block compression."""

    name = "remote-write"
    default_path = "/api/v1/write"
    content_type = "application/x-protobuf"
    extra_headers = {"Content-Encoding": "snappy", "X-Prometheus-Remote-Write-Version": "0.1.0",
                     "User-Agent": "kpp-sink"}

    def encode(self, points: Sequence[Point]) -> tuple[bytes, int]:
        return encode_remote_write(points), 0

    def body(self, fragments: Sequence[bytes]) -> bytes:
        return snappy_compress(b"".join(fragments))


class InfluxWriter(Writer):
    """Influx line protocol with precision=ms; NaN and ±Inf are skipped (no spelling)."""

    name = "influx"
    default_path = "/write"
    content_type = "text/plain; charset=utf-8"
    extra_query = {"precision": "ms"}

    def encode(self, points: Sequence[Point]) -> tuple[bytes, int]:
        return encode_influx(points)


WRITERS: dict[str, type[Writer]] = {w.name: w for w in (VictoriaMetricsWriter, RemoteWriteWriter, InfluxWriter)}

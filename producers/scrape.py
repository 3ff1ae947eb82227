"""Fetching one target's /metrics with httpx, the way Prometheus would, with the security
options kube-proxy deployments use (TLS client certificates, kube-rbac-proxy bearer tokens,
unix sockets). Returns the body or a classified failure; never raises for target trouble.
"""

from __future__ import annotations

import os
import ssl
import time
from dataclasses import dataclass, field
from typing import Mapping

import httpx

from contracts.errors import ConfigError

DEFAULT_TARGET = "http://127.0.0.1:10249/metrics"
ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"


@dataclass(frozen=True, kw_only=True)
class TargetSettings:
    url: str = DEFAULT_TARGET
    timeout_s: float = 10.0
    max_body_bytes: int = 16 * 1024 * 1024
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure_skip_verify: bool = False
    bearer_token_file: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    unix_socket: str | None = None

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"target {self.url!r} must be an http:// or https:// URL")
        if self.key_file and not self.cert_file:
            raise ConfigError("--key-file needs --cert-file")
        for what in ("ca_file", "cert_file", "key_file", "bearer_token_file"):
            path = getattr(self, what)
            if path and not os.path.isfile(path):
                raise ConfigError(f"{what.replace('_', ' ')} {path!r} does not exist")
        if self.timeout_s <= 0:
            raise ConfigError("the scrape timeout must be positive")


@dataclass(frozen=True, slots=True)
class ScrapeOutcome:
    """What Prometheus records per scrape, plus the body when there is one."""

    body: str | None
    duration_s: float
    body_bytes: int
    reason: str  # "ok", or why not: timeout, refused, http_status, too_large, tls, transport
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.body is not None


class _BodyTooLarge(Exception):
    pass


class _BearerToken:
    """A token file re-read whenever it changes (kube-rbac-proxy tokens rotate)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[float, int] | None = None
        self._token = ""

    def current(self) -> str:
        stat = os.stat(self.path)
        stamp = (stat.st_mtime, stat.st_size)
        if stamp != self._stamp:
            with open(self.path, encoding="utf-8") as fh:
                self._token = fh.read().strip()
            self._stamp = stamp
        return self._token


def ssl_context(settings: TargetSettings) -> ssl.SSLContext | bool:
    """An SSLContext carrying CA and client certificate together: httpx drops `cert=` when
    `verify` is a path, so both must travel in one context."""
    if settings.insecure_skip_verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=settings.ca_file)
    if settings.cert_file:
        try:
            context.load_cert_chain(settings.cert_file, settings.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load client certificate {settings.cert_file!r}: {exc}") from None
    return context


class Scraper:
    """One target. `scrape()` is the only method that touches the network."""

    def __init__(self, settings: TargetSettings, *, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        self._token = _BearerToken(settings.bearer_token_file) if settings.bearer_token_file else None
        if transport is None and settings.unix_socket:
            transport = httpx.HTTPTransport(uds=settings.unix_socket)
        self._client = httpx.Client(
            verify=ssl_context(settings) if settings.url.startswith("https://") else True,
            timeout=settings.timeout_s,
            headers={"Accept": ACCEPT, "User-Agent": "kube-proxy-pipeline", **settings.headers},
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._client.close()

    def scrape(self) -> ScrapeOutcome:
        headers = {}
        if self._token is not None:
            try:
                headers["Authorization"] = f"Bearer {self._token.current()}"
            except OSError as exc:
                return ScrapeOutcome(None, 0.0, 0, "token", f"cannot read bearer token file: {exc.strerror}")
        started = time.monotonic()
        size = 0
        try:
            with self._client.stream("GET", self.settings.url, headers=headers) as response:
                if response.status_code != 200:
                    return ScrapeOutcome(None, time.monotonic() - started, 0, "http_status",
                                         f"HTTP {response.status_code} {response.reason_phrase}")
                chunks: list[bytes] = []
                for chunk in response.iter_bytes():  # decompressed: the cap bounds our memory
                    size += len(chunk)
                    if size > self.settings.max_body_bytes:
                        raise _BodyTooLarge()
                    chunks.append(chunk)
                body = b"".join(chunks)
        except _BodyTooLarge:
            return ScrapeOutcome(None, time.monotonic() - started, size, "too_large",
                                 f"body larger than the limit of {self.settings.max_body_bytes} bytes")
        except httpx.TimeoutException:
            return ScrapeOutcome(None, time.monotonic() - started, size, "timeout",
                                 f"no complete answer within {self.settings.timeout_s:g} s")
        except httpx.ConnectError as exc:
            reason = "tls" if "SSL" in str(exc) or "CERTIFICATE" in str(exc) else "refused"
            return ScrapeOutcome(None, time.monotonic() - started, size, reason, f"cannot connect: {exc}")
        except httpx.HTTPError as exc:
            return ScrapeOutcome(None, time.monotonic() - started, size, "transport",
                                 f"{type(exc).__name__}: {exc}")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return ScrapeOutcome(None, time.monotonic() - started, size, "encoding", f"body is not UTF-8: {exc}")
        return ScrapeOutcome(text, time.monotonic() - started, size, "ok")

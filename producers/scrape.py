"""Fetching one target's /metrics with httpx, the way Prometheus would, with the security
options kube-proxy deployments use (TLS client certificates, kube-rbac-proxy bearer tokens,
unix sockets). Returns the body or a classified failure; never raises for target trouble.

Bounded whatever the target does: the timeout is a deadline for the whole request from its
start (a target trickling one byte a second times out like a silent one), the body cap applies
to the decoded size across all content-encodings (see `producers.decoding`), and no secret
(header values, bearer token, URL credentials) appears in an outcome's error.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import httpx

from contracts.errors import ConfigError
from producers.decoding import BodyDecoder, BodyError, BodyTooLarge, content_codings
from producers.secrets import SecretError, SecretFile, redact, redact_url, url_secrets

DEFAULT_TARGET = "http://127.0.0.1:10249/metrics"
ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"
ACCEPT_ENCODING = "gzip"  # what kube-proxy (promhttp) offers; decoded under the body cap


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
    header_files: Mapping[str, str] = field(default_factory=dict)  # header name -> file with its value
    unix_socket: str | None = None

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"target {redact_url(self.url)!r} must be an http:// or https:// URL")
        if self.key_file and not self.cert_file:
            raise ConfigError("--key-file needs --cert-file")
        files = {what.replace("_", " "): getattr(self, what)
                 for what in ("ca_file", "cert_file", "key_file", "bearer_token_file")}
        files.update({f"file of header {name}": path for name, path in self.header_files.items()})
        for what, path in files.items():
            if path and not os.path.isfile(path):
                raise ConfigError(f"{what} {path!r} does not exist")
        if self.timeout_s <= 0:
            raise ConfigError("the scrape timeout must be positive")


@dataclass(frozen=True, slots=True)
class ScrapeOutcome:
    """What Prometheus records per scrape, plus the body when there is one."""

    body: str | None
    duration_s: float
    body_bytes: int
    reason: str  # "ok", or why not: timeout, refused, http_status, body_too_large, encoding, tls, transport,
    #              token, header
    error: str | None = None
    started_ms: int | None = None  # wall clock (epoch ms) when the request started

    @property
    def ok(self) -> bool:
        return self.body is not None


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
    """One target. `fetch()` is the only method that touches the network."""

    def __init__(self, settings: TargetSettings, *, transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.target = redact_url(settings.url)  # the form shown in records, metrics and logs
        self._clock = clock
        self._token = SecretFile(settings.bearer_token_file, "bearer token") if settings.bearer_token_file else None
        self._header_files = {name: SecretFile(path, f"header {name}") for name, path in settings.header_files.items()}
        self._static_secrets = [*settings.headers.values(), *url_secrets(settings.url)]
        if transport is None and settings.unix_socket:
            transport = httpx.AsyncHTTPTransport(uds=settings.unix_socket)
        self._transport = transport
        self._verify = ssl_context(settings) if settings.url.startswith("https://") else True
        self._client: httpx.AsyncClient | None = None

    def _make_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            verify=self._verify,
            timeout=self.settings.timeout_s,  # per operation; the deadline below bounds the whole request
            headers={"Accept": ACCEPT, "Accept-Encoding": ACCEPT_ENCODING, "User-Agent": "kube-proxy-pipeline",
                     **self.settings.headers},
            transport=self._transport,
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def scrape(self) -> ScrapeOutcome:
        """One scrape from synchronous code (its own event loop and connection)."""
        async def once() -> ScrapeOutcome:
            try:
                return await self.fetch()
            finally:
                await self.aclose()
        return asyncio.run(once())

    async def fetch(self) -> ScrapeOutcome:
        """Scrape now. The outcome carries the wall-clock start; the timeout runs from it."""
        started_ms = int(self._clock() * 1000)
        started = time.monotonic()
        secrets = list(self._static_secrets)
        size = 0

        def outcome(reason: str, error: str | None = None, body: str | None = None) -> ScrapeOutcome:
            return ScrapeOutcome(body, time.monotonic() - started, size, reason, redact(error, secrets), started_ms)

        headers = {}
        if self._token is not None:
            try:
                token = self._token.current()
            except SecretError as exc:
                return outcome("token", str(exc))
            secrets.append(token)
            headers["Authorization"] = f"Bearer {token}"
        for name, source in self._header_files.items():
            try:
                headers[name] = source.current()
            except SecretError as exc:
                return outcome("header", str(exc))
            secrets.append(headers[name])
        if self._client is None:
            self._client = self._make_client()
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                async with self._client.stream("GET", self.settings.url, headers=headers) as response:
                    if response.status_code != 200:
                        return outcome("http_status", f"HTTP {response.status_code} {response.reason_phrase}")
                    decoder = BodyDecoder(content_codings(response.headers.get("content-encoding")),
                                          self.settings.max_body_bytes)
                    async for raw in response.aiter_raw():
                        decoder.feed(raw)
                        size = decoder.size
                    body = decoder.finish()
                    size = decoder.size
        except BodyTooLarge as exc:
            size = exc.seen
            return outcome("body_too_large", str(exc))
        except BodyError as exc:
            return outcome("encoding", str(exc))
        except (TimeoutError, httpx.TimeoutException):
            return outcome("timeout", f"no complete answer within {self.settings.timeout_s:g} s")
        except httpx.ConnectError as exc:
            reason = "tls" if "SSL" in str(exc) or "CERTIFICATE" in str(exc) else "refused"
            return outcome(reason, f"cannot connect: {exc}")
        except httpx.HTTPError as exc:
            return outcome("transport", f"{type(exc).__name__}: {exc}")
        except ssl.SSLError as exc:  # the async TLS stream lets a TLS 1.3 alert after the handshake through
            return outcome("tls", f"TLS error: {exc}")
        except OSError as exc:
            return outcome("transport", f"{type(exc).__name__}: {exc}")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return outcome("encoding", f"body is not UTF-8: {exc}")
        return outcome("ok", body=text)

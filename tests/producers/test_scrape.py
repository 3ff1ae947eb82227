"""Scraping over real sockets: HTTPS with a required client certificate and bearer token,
token rotation, unix sockets, gzip, body limit, timeouts and HTTP errors."""

from __future__ import annotations

import gzip
import os
import socketserver
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from producers.scrape import Scraper, TargetSettings
from tests.conftest import FIXTURES

pytestmark = pytest.mark.integration
BODY = (FIXTURES / "v1.28.0-iptables.txt").read_bytes()


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=kpp-test-ca",
            "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"), ("client", "extendedKeyUsage=clientAuth")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(d / f"{name}.key"),
                "-out", str(d / f"{name}.csr"))
        (d / f"{name}.ext").write_text(ext + "\n")
        openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
                "-CAcreateserial", "-days", "1", "-out", str(d / f"{name}.pem"), "-extfile", str(d / f"{name}.ext"))
    return {n: d / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


class Handler(BaseHTTPRequestHandler):
    token: str | None = None
    delay: float = 0.0
    status: int = 200
    body: bytes = BODY
    seen_auth: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802
        self.seen_auth.append(self.headers.get("Authorization"))
        if self.token is not None and self.headers.get("Authorization") != f"Bearer {self.token}":
            self.send_response(401)
            self.end_headers()
            return
        time.sleep(self.delay)
        body = self.body
        self.send_response(self.status)
        if "gzip" in (self.headers.get("Accept-Encoding") or ""):
            body = gzip.compress(body)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def start(server: socketserver.BaseServer) -> socketserver.BaseServer:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def handler(**attrs) -> type[Handler]:
    return type("H", (Handler,), {"seen_auth": [], **attrs})


def http_server(**attrs) -> tuple[HTTPServer, str]:
    server = start(HTTPServer(("127.0.0.1", 0), handler(**attrs)))
    return server, f"http://127.0.0.1:{server.server_address[1]}/metrics"


def test_https_with_client_certificate_and_rotating_bearer_token(pki, tmp_path: Path) -> None:
    h = handler(token="first-token")
    server = HTTPServer(("127.0.0.1", 0), h)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki["ca.pem"]))
    context.load_cert_chain(pki["server.pem"], pki["server.key"])
    context.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no TLS handshake
    server.socket = context.wrap_socket(server.socket, server_side=True)
    start(server)
    url = f"https://127.0.0.1:{server.server_address[1]}/metrics"
    token = tmp_path / "token"
    token.write_text("first-token\n")
    try:
        scraper = Scraper(TargetSettings(url=url, ca_file=str(pki["ca.pem"]), cert_file=str(pki["client.pem"]),
                                         key_file=str(pki["client.key"]), bearer_token_file=str(token)))
        outcome = scraper.scrape()
        assert outcome.ok, outcome.error
        assert outcome.body.encode() == BODY and outcome.body_bytes == len(BODY)

        h.token = "second-token"  # the server rotates; until the file does, we are refused
        assert scraper.scrape().reason == "http_status"
        time.sleep(0.01)
        token.write_text("second-token-v2\n")
        h.token = "second-token-v2"
        os.utime(token, (time.time() + 5, time.time() + 5))
        assert scraper.scrape().ok
        assert h.seen_auth[-1] == "Bearer second-token-v2"

        no_cert = Scraper(TargetSettings(url=url, ca_file=str(pki["ca.pem"]), bearer_token_file=str(token)))
        failed = no_cert.scrape()
        assert not failed.ok and failed.reason in ("tls", "refused", "transport")
        wrong_ca = Scraper(TargetSettings(url=url, cert_file=str(pki["client.pem"]), key_file=str(pki["client.key"])))
        assert wrong_ca.scrape().reason == "tls"
    finally:
        server.shutdown()


def test_gzip_body_limit_status_and_timeout() -> None:
    server, url = http_server()
    try:
        outcome = Scraper(TargetSettings(url=url)).scrape()
        assert outcome.ok and outcome.body_bytes == len(BODY)  # decompressed size
        too_small = Scraper(TargetSettings(url=url, max_body_bytes=1000)).scrape()
        assert too_small.reason == "body_too_large" and "1000 bytes" in too_small.error
    finally:
        server.shutdown()
    server, url = http_server(status=500)
    try:
        failed = Scraper(TargetSettings(url=url)).scrape()
        assert failed.reason == "http_status" and "500" in failed.error
    finally:
        server.shutdown()
    server, url = http_server(delay=1.5)
    try:
        slow = Scraper(TargetSettings(url=url, timeout_s=0.3)).scrape()
        assert slow.reason == "timeout" and slow.duration_s < 1.4
    finally:
        server.shutdown()


def test_refused_connection() -> None:
    from tests.conftest import free_port

    outcome = Scraper(TargetSettings(url=f"http://127.0.0.1:{free_port()}/metrics")).scrape()
    assert outcome.reason == "refused" and not outcome.ok


def test_unix_socket_target(tmp_path: Path) -> None:
    path = str(tmp_path / "kube-proxy.sock")

    class UnixHTTPServer(socketserver.UnixStreamServer):
        def get_request(self):  # http.server wants a (host, port) client address
            request, _ = super().get_request()
            return request, ("local", 0)

    server = start(UnixHTTPServer(path, handler()))
    try:
        outcome = Scraper(TargetSettings(url="http://localhost/metrics", unix_socket=path)).scrape()
        assert outcome.ok and outcome.body.encode() == BODY
    finally:
        server.shutdown()

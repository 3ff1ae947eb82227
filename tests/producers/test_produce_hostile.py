"""`kpp produce` against bad targets and with secrets, as users run it: a real producer process
scraping a local HTTP server that trickles, serves a nested gzip bomb, serves 20,000 series or
wants credentials, publishing to the real broker."""

from __future__ import annotations

import base64
import gzip
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from kafka_io.admin import TopicSpec, ensure_topics
from kafka_io.connection import KafkaConnection
from contracts.records import ScrapeRecord
from tests.conftest import FIXTURES, consume, free_port, wait_until

pytestmark = pytest.mark.integration
KPP = [sys.executable, "-m", "kpp"]
PEAK_RSS = [sys.executable, str(Path(__file__).resolve().parents[1] / "peak_rss.py"), "kpp"]
BODY = (FIXTURES / "v1.28.0-iptables.txt").read_bytes()
WIDE_SERIES = 20_000
TOKEN = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2Vu.sig-4711"
PASSWORD = "pa55-w0rd-XYZ"
TENANT = "tenant-secret-42"


def nested_gzip_bomb(decoded_size: int) -> bytes:
    """`Content-Encoding: gzip, gzip`: a few hundred bytes that decode to `decoded_size` zeros."""
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1024 * 1024)
    inner = b"".join([*(z.compress(block) for _ in range(decoded_size // len(block))), z.flush()])
    return gzip.compress(inner)


def wide_body(series: int) -> bytes:
    """About 1.25 MB of kubeproxy_* series: under the body cap, over what Kafka takes."""
    lines = ["# TYPE kubeproxy_sync_proxy_rules_iptables_total gauge"]
    lines += [f'kubeproxy_sync_proxy_rules_iptables_total{{table="filter",chain="KUBE-SEP-{i:016X}"}} {i}'
              for i in range(series)]
    return ("\n".join(lines) + "\n").encode()


class Target(BaseHTTPRequestHandler):
    """/good, /trickle (headers, then one byte every 0.2 s), /bomb, /wide; /auth and /basic
    record the credentials they were sent."""

    protocol_version = "HTTP/1.1"
    trickle_started: list[float] = []
    seen: list[dict[str, str | None]] = []
    bomb = b""
    wide = b""

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?")[0]
        if path == "/trickle":
            self.trickle_started.append(time.monotonic())
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            for i in range(600):  # at most two minutes
                try:
                    self.wfile.write(BODY[i:i + 1])
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.2)
            return
        if path in ("/auth", "/basic"):
            self.seen.append({"path": path, **{h: self.headers.get(h) for h in ("Authorization", "X-Scope-OrgID")}})
        encoding, body = None, BODY
        if path == "/bomb":
            encoding, body = "gzip, gzip", self.bomb
        elif path == "/wide":
            body = self.wide
        self.send_response(200)
        if encoding:
            self.send_header("Content-Encoding", encoding)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def target():
    handler = type("T", (Target,), {"trickle_started": [], "seen": [], "bomb": nested_gzip_bomb(256 * 1024 * 1024),
                                    "wide": wide_body(WIDE_SERIES)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def url(server: ThreadingHTTPServer, path: str, userinfo: str = "") -> str:
    return f"http://{userinfo}127.0.0.1:{server.server_address[1]}{path}"


def produce(kafka: KafkaConnection, tmp_path: Path, prefix: str, *args: str,
            env: dict[str, str] | None = None, launcher: list[str] | None = None) -> subprocess.Popen:
    argv = (launcher or KPP) + ["produce", "--node", "node-h", "--cluster", "hostile", "--topic-prefix", prefix,
                  "--spool-dir", str(tmp_path / "spool"), "--kafka-bootstrap", kafka.bootstrap, *args]
    return subprocess.Popen(argv, stdout=open(tmp_path / "produce.log", "ab"), stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})


def prefix() -> str:
    return f"hostile{uuid.uuid4().hex[:10]}"


def metrics(port: int) -> str:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return ""


def scrapes(port: int, target: str, outcome: str, reason: str) -> float:
    needle = f'kpp_producer_scrapes_total{{outcome="{outcome}",reason="{reason}",target="{target}"}} '
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics(port).splitlines() if line.startswith(needle))


def records(kafka: KafkaConnection, topic: str, expected: int) -> list[ScrapeRecord]:
    return [ScrapeRecord.decode(value) for _, value in consume(kafka, topic, expected, timeout=30)]


def stop(proc: subprocess.Popen, within: float = 15.0) -> float:
    """SIGTERM; the seconds until the producer exited (it must exit with 0)."""
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=within)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"the producer ignored SIGTERM for {within} s")
    assert code == 0, f"producer exited {code}"
    return time.monotonic() - sent


def test_a_trickling_target_times_out_delays_no_other_and_does_not_hold_up_sigterm(target, kafka, tmp_path) -> None:
    good, trickle = url(target, "/good"), url(target, "/trickle")
    port, topic = free_port(), prefix()
    proc = produce(kafka, tmp_path, topic, "--interval", "1", "--timeout", "0.8", "--target", good,
                   "--target", trickle, "--listen", f"127.0.0.1:{port}")
    try:
        assert wait_until(lambda: scrapes(port, trickle, "error", "timeout") >= 3, timeout=20), metrics(port)
        assert scrapes(port, good, "ok", "ok") >= 3
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        started = len(target.RequestHandlerClass.trickle_started)
        assert wait_until(lambda: len(target.RequestHandlerClass.trickle_started) > started, timeout=5)
        took = stop(proc)  # a trickling scrape is in flight now
    finally:
        if proc.poll() is None:
            proc.kill()
    assert took < 10.0, f"SIGTERM took {took:.1f} s, more than the 10 s grace"
    log = (tmp_path / "produce.log").read_text()
    assert f"abandoning the scrape(s) in flight of {trickle}" in log and "Traceback" not in log
    got = records(kafka, f"{topic}.samples", expected=6)
    slow = [r for r in got if r.target == trickle]
    fine = [r for r in got if r.target == good]
    assert len(slow) >= 3 and len(fine) >= 3
    assert all(r.up == 0 and r.error == "no complete answer within 0.8 s" and r.scrape_duration_s < 1.5
               for r in slow), [(r.error, r.scrape_duration_s) for r in slow]
    # The good target is scraped every tick, just after it, whatever the trickling one does.
    assert all(r.up == 1 for r in fine)
    ticks = [r.scrape_ts_ms // 1000 for r in fine]
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks)))
    assert all(r.scrape_ts_ms % 1000 < 500 for r in fine), [r.scrape_ts_ms for r in fine]


def test_healthz_fails_when_a_target_completes_no_scrape_for_n_intervals(target, kafka, tmp_path) -> None:
    good, trickle = url(target, "/good"), url(target, "/trickle")
    port = free_port()
    proc = produce(kafka, tmp_path, prefix(), "--interval", "0.5", "--timeout", "5", "--unhealthy-after", "2",
                   "--target", good, "--target", trickle, "--listen", f"127.0.0.1:{port}")

    def health() -> httpx.Response | None:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
        except httpx.HTTPError:
            return None

    try:
        assert wait_until(lambda: (h := health()) is not None and h.status_code == 503, timeout=15)
        answer = health()
        assert answer.status_code == 503
        assert answer.text.startswith(f"no scrape of {trickle} completed for ")
        assert "more than 2 intervals of 0.5 s" in answer.text
        # the other target goes on meanwhile
        ok_before = scrapes(port, good, "ok", "ok")
        assert wait_until(lambda: scrapes(port, good, "ok", "ok") >= ok_before + 2, timeout=5)
        stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_nested_gzip_bomb_is_body_too_large_without_inflating(target, kafka, tmp_path) -> None:
    bomb, topic = url(target, "/bomb"), prefix()
    peak_file = tmp_path / "peak-rss"
    # the producer's own peak memory (tests/peak_rss.py; the DaemonSet allows 128 MiB)
    proc = produce(kafka, tmp_path, topic, "--once", "--max-body-bytes", "1MiB", "--target", bomb, "--listen", "",
                   env={"PEAK_RSS_FILE": str(peak_file)}, launcher=PEAK_RSS)
    proc.wait(120)
    log = (tmp_path / "produce.log").read_text()
    assert proc.returncode == 0, log
    peak_mib = int(peak_file.read_text()) / (1 << 20)
    assert peak_mib < 120, f"the producer peaked at {peak_mib:.0f} MiB decoding a 256 MiB bomb"
    (record,) = records(kafka, f"{topic}.samples", expected=1)
    assert record.up == 0 and record.samples == ()
    assert record.error.startswith("body larger than the limit of 1048576 bytes (decoded")
    assert "failed (body_too_large)" in log and "Traceback" not in log and "MemoryError" not in log


def test_a_scrape_too_large_for_kafka_is_published_as_up0_too_large(target, kafka, tmp_path) -> None:
    wide, topic, port = url(target, "/wide"), prefix(), free_port()
    proc = produce(kafka, tmp_path, topic, "--interval", "1", "--target", wide, "--listen", f"127.0.0.1:{port}")
    try:
        assert wait_until(lambda: scrapes(port, wide, "error", "too_large") >= 2, timeout=30), metrics(port)
        text = metrics(port)
        assert f'kpp_producer_up{{target="{wide}"}} 0' in text
        assert 'outcome="ok"' not in text
        stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    got = records(kafka, f"{topic}.samples", expected=2)
    assert len(got) >= 2 and all(r.up == 0 and r.samples == () and r.body_bytes == len(target.RequestHandlerClass.wide)
                                 for r in got)
    assert f"samples, more than the limit (--max-record-bytes) of 1000000 bytes" in got[0].error
    assert f"with {WIDE_SERIES} samples" in got[0].error
    assert "Kafka refuses" not in (tmp_path / "produce.log").read_text()


def test_a_record_the_broker_refuses_is_replaced_by_an_up0_too_large_record(target, kafka, tmp_path) -> None:
    """The topic takes at most 4,000 bytes; an uncompressed scrape record is ~13 kB."""
    topic = prefix()
    ensure_topics(kafka, [TopicSpec(f"{topic}.samples", 1, config={"max.message.bytes": "4000"})])
    good = url(target, "/good")
    proc = produce(kafka, tmp_path, topic, "--once", "--compression", "none", "--target", good, "--listen", "")
    assert proc.wait(timeout=60) == 0, (tmp_path / "produce.log").read_text()
    (record,) = records(kafka, f"{topic}.samples", expected=1)
    assert record.up == 0 and record.target == good and record.samples == ()
    assert "refused by Kafka (MessageSizeTooLargeError" in record.error
    log = (tmp_path / "produce.log").read_text()
    assert "published it with up=0" in log or "publishing it with up=0" in log


def test_secrets_stay_out_of_argv_records_metrics_and_logs(target, kafka, tmp_path) -> None:
    token_file = tmp_path / "authorization"
    token_file.write_text(f"Bearer {TOKEN}\n")  # as mounted from a Secret: with a trailing newline
    bearer = url(target, "/auth")
    with_credentials = url(target, "/basic", userinfo=f"kpp:{PASSWORD}@")  # sent as basic auth
    shown = url(target, "/basic", userinfo="***@")
    topic, port = prefix(), free_port()
    proc = produce(kafka, tmp_path, topic, "--interval", "0.5", "--target", bearer, "--target", with_credentials,
                   "--header", f"Authorization=@{token_file}", "--header", "X-Scope-OrgID=env:KPP_TEST_TENANT",
                   "--listen", f"127.0.0.1:{port}", env={"KPP_TEST_TENANT": TENANT})
    try:
        assert wait_until(lambda: min(scrapes(port, shown, "ok", "ok"), scrapes(port, bearer, "ok", "ok")) >= 2,
                          timeout=20), metrics(port)
        argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
        text = metrics(port)
        stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert TOKEN not in argv and TENANT not in argv
    basic = "Basic " + base64.b64encode(f"kpp:{PASSWORD}".encode()).decode()
    seen = {s["path"]: s for s in target.RequestHandlerClass.seen}
    assert seen["/auth"] == {"path": "/auth", "Authorization": f"Bearer {TOKEN}", "X-Scope-OrgID": TENANT}
    assert seen["/basic"] == {"path": "/basic", "Authorization": basic, "X-Scope-OrgID": TENANT}
    got = records(kafka, f"{topic}.samples", expected=4)
    assert {r.target for r in got} == {bearer, shown} and all(r.up == 1 for r in got)
    log = (tmp_path / "produce.log").read_text()
    for where, content in (("metrics", text), ("log", log), ("records", repr(got))):
        for secret in (PASSWORD, TOKEN, TENANT, basic.split()[1]):
            assert secret not in content, f"{secret} in the {where}"
    assert shown in log


def test_a_broken_token_file_is_named_without_showing_the_token(target, kafka, tmp_path) -> None:
    first, second = "first-part-of-the-SECRET", "second-part-of-the-SECRET"
    token_file = tmp_path / "token"
    token_file.write_text(f"{first}\n{second}\n")  # a token split over two lines
    topic = prefix()
    proc = produce(kafka, tmp_path, topic, "--once", "--target", url(target, "/good"),
                   "--bearer-token-file", str(token_file), "--listen", "")
    assert proc.wait(timeout=60) == 0, (tmp_path / "produce.log").read_text()
    (record,) = records(kafka, f"{topic}.samples", expected=1)
    assert record.up == 0 and str(token_file) in record.error and "line break" in record.error
    log = (tmp_path / "produce.log").read_text()
    assert "failed (token)" in log
    for content in (record.error, log):
        assert "SECRET" not in content

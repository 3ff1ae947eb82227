"""Secured cluster, end to end with real processes: a private Kafka with a SASL_SSL listener
(SCRAM-SHA-512 user created at format time, private CA), a kube-proxy endpoint behind HTTPS
that wants a bearer token and a client certificate, and `kpp produce` → `kpp stream` →
`kpp sink` → the main VictoriaMetrics through it.

Wrong credentials, per stage (each logs ONE line naming the cause, then):
  * `kpp produce` keeps running: scrapes go to the spool (nothing is lost), the sender
    retries with capped back-off (5 s) without logging again; a refused bearer token is one
    WARNING (HTTP 401), logged again only when the reason changes;
  * `kpp stream` and `kpp sink` exit with status 4 (`kpp <stage>: error: Kafka at ...:
    authentication failed: ...`): a worker cannot do anything useful without Kafka, and the
    orchestrator's restart back-off is the quiet retry.
No log line of any stage, nor the broker's log, contains the password or the bearer token.
"""

from __future__ import annotations

import os
import secrets
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from contracts.derived import DerivedRecord
from kafka_io.connection import KafkaConnection
from contracts.records import ScrapeRecord
from contracts.topics import Topics
from stack.kafka import KafkaService
from stack.settings import StackSettings
from stack.tls import make_ca, make_certificate
from tests.conftest import FIXTURES, REPO, consume, free_port, running_kafka
from tests.sinks.helpers import vm_export, wait_for
from tests.streams.harness import Collector, create_topics

pytestmark = pytest.mark.integration

BODY = (FIXTURES / "v1.28.0-iptables.txt").read_bytes()


# -- the secured broker ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secured_kafka(tmp_path_factory, stack_settings: StackSettings):  # noqa: ANN201
    state = tmp_path_factory.mktemp("secured-state")
    settings = StackSettings.from_env({
        "KPP_STATE_DIR": str(state),
        "KPP_KAFKA_PORT": str(free_port()),
        "KPP_KAFKA_CONTROLLER_PORT": str(free_port()),
        "KPP_KAFKA_SASL_SSL": "1",
        "KPP_KAFKA_SASL_SSL_PORT": str(free_port()),
    })
    with running_kafka(settings, stack_settings) as service:
        yield service


# -- the HTTPS kube-proxy endpoint -------------------------------------------------------------


class _Endpoint:
    def __init__(self, directory: Path) -> None:
        ca = make_ca(directory, name="kpp-test-https-ca")
        server_cert, server_key = make_certificate(directory, "kube-proxy", ca)
        self.client_cert, self.client_key = make_certificate(directory, "producer", ca, server=False)
        self.ca_file = ca[0]
        self.token = "tok-" + secrets.token_hex(16)
        self.token_file = directory / "token"
        self.token_file.write_text(self.token + "\n")
        self.wrong_token_file = directory / "wrong-token"
        self.wrong_token_file.write_text("tok-" + secrets.token_hex(16) + "\n")
        self.requests: list[int] = []  # status codes answered
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.headers.get("Authorization") != f"Bearer {endpoint.token}":
                    endpoint.requests.append(401)
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                endpoint.requests.append(200)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                self.wfile.write(BODY)

            def log_message(self, *args) -> None:
                pass

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.ca_file))
        context.load_cert_chain(server_cert, server_key)
        context.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no handshake
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}/metrics"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):  # noqa: ANN201
    ep = _Endpoint(tmp_path_factory.mktemp("https"))
    try:
        yield ep
    finally:
        ep.close()


# -- stage processes ---------------------------------------------------------------------------


class Stage:
    """One `kpp` subprocess with its own log file."""

    def __init__(self, log_path: Path, env: dict[str, str], *args: str) -> None:
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "kpp", "--log-level", "INFO", *args], cwd=REPO,
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self, timeout: float = 25.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        return self.proc.returncode

    def lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()


def client_env(kafka: KafkaService, tmp: Path, password_file: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "KPP_"))}
    env.update(kafka.secured_client_env())
    if password_file is not None:
        env["KAFKA_SASL_PASSWORD_FILE"] = str(password_file)
    env.update(PYTHONUNBUFFERED="1", KPP_STATE_DIR=str(tmp / "state"))
    return env


def produce_args(endpoint: _Endpoint, prefix: str, cluster: str, tmp: Path, token_file: Path) -> list[str]:
    return ["produce", "--target", endpoint.url, "--node", "secured-node-1", "--cluster", cluster,
            "--interval", "1", "--timeout", "2", "--ca-file", str(endpoint.ca_file),
            "--cert-file", str(endpoint.client_cert), "--key-file", str(endpoint.client_key),
            "--bearer-token-file", str(token_file), "--topic-prefix", prefix,
            "--spool-dir", str(tmp / f"spool-{uuid.uuid4().hex[:6]}"), "--listen", ""]


def stream_args(prefix: str, tmp: Path) -> list[str]:
    return ["stream", "--topic-prefix", prefix, "--partitions", "1", "--window", "10",
            "--allowed-lateness", "2", "--idle-timeout", "5", "--cluster-timeout", "10",
            "--data-dir", str(tmp / f"stream-{uuid.uuid4().hex[:6]}")]


def sink_args(prefix: str, vm_url: str) -> list[str]:
    return ["sink", "--topic-prefix", prefix, "--url", vm_url, "--group", f"sink-{prefix}",
            "--batch-interval", "0.5", "--listen", ""]


LOGS: list[Path] = []  # every stage log of this module, for the secret check at the end
WRONG_PASSWORDS: list[str] = []


# -- tests -------------------------------------------------------------------------------------


def test_secured_listener_takes_the_scram_user_only(secured_kafka: KafkaService) -> None:
    password = secured_kafka.password_file.read_text().strip()
    assert oct(secured_kafka.password_file.stat().st_mode & 0o777) == "0o600"
    good = secured_kafka.secured_connection()
    good.check(timeout_s=15)
    bad = KafkaConnection.from_env(secured_kafka.secured_client_env() | {
        "KAFKA_SASL_PASSWORD_FILE": "", "KAFKA_SASL_PASSWORD": "not-" + password})
    started = time.monotonic()
    with pytest.raises(Exception) as refused:
        bad.check(timeout_s=15)
    assert "authentication failed" in str(refused.value)
    assert time.monotonic() - started < 10, "a refused login is final: no waiting out the timeout"
    assert password not in str(refused.value)
    # the PLAINTEXT listener (controller, inter-broker, health) is still there, on loopback only
    KafkaConnection(bootstrap=secured_kafka.address).check(timeout_s=15)
    # the password is on no command line and in no configuration file
    pid = secured_kafka.process.pid()
    assert pid is not None
    assert password not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    for path in secured_kafka.home.glob("*.properties"):
        assert password not in path.read_text()


def test_pipeline_flows_over_sasl_ssl_and_https(secured_kafka: KafkaService, endpoint: _Endpoint,
                                                 vm_url: str, tmp_path: Path) -> None:
    prefix = f"sec{uuid.uuid4().hex[:8]}"
    cluster = f"secured-{uuid.uuid4().hex[:8]}"
    topics = Topics(prefix)
    env = client_env(secured_kafka, tmp_path)
    connection = secured_kafka.secured_connection()
    # the stage's topics with the worker's partition count, before the producer's first send
    # would auto-create <prefix>.samples with the broker's default (4)
    create_topics(connection, prefix, 1)
    started = time.monotonic()
    stream = Stage(tmp_path / "stream.log", env, *stream_args(prefix, tmp_path))
    sink = Stage(tmp_path / "sink.log", env, *sink_args(prefix, vm_url))
    produce = Stage(tmp_path / "produce.log", env,
                    *produce_args(endpoint, prefix, cluster, tmp_path, endpoint.token_file))
    LOGS.extend(s.log_path for s in (stream, sink, produce))
    collector = None
    try:
        # scrapes arrive, authenticated (bearer token + client certificate) and complete
        scrapes = [ScrapeRecord.decode(v) for _, v in consume(connection, topics.samples, 3, timeout=40)]
        assert len(scrapes) >= 3, produce.lines()[-10:]
        assert all(s.up == 1 and s.cluster == cluster and s.samples for s in scrapes), scrapes[0].error
        assert 200 in endpoint.requests and 401 not in endpoint.requests

        # derived records of closed 10 s windows
        collector = Collector(connection, [topics.quantiles, topics.health])

        def derived() -> list:
            collector.poll()
            return [DerivedRecord.decode(v) for _, _, v, _ in collector.messages]

        records = wait_for(lambda: [r for r in derived() if r.cluster == cluster and r.scope == "cluster"],
                           timeout=60, interval=0.5)
        assert records, ("no derived record", stream.lines()[-15:])
        assert {r.kind for r in derived()} >= {"quantiles", "health"}

        # and points in VictoriaMetrics
        series = wait_for(lambda: vm_export(vm_url, f'{{cluster="{cluster}"}}'), timeout=30, interval=1.0)
        assert series, ("nothing in VictoriaMetrics", sink.lines()[-15:])
        names = {s["metric"]["__name__"] for s in series}
        assert any(n.startswith("kubeproxy:") for n in names), names
        assert any(s["metric"].get("node") == "secured-node-1" for s in series)
    finally:
        if collector is not None:
            collector.close()
        codes = {name: stage.stop() for name, stage in (("produce", produce), ("stream", stream), ("sink", sink))}
    print(f"secured pipeline: first VictoriaMetrics points after {time.monotonic() - started:.1f} s; exits {codes}")
    for stage in (produce, stream, sink):
        problems = [line for line in stage.lines() if " ERROR " in line or "Traceback" in line]
        assert not problems, (stage.log_path.name, problems[:5])


def test_wrong_credentials_one_clear_line_per_stage(secured_kafka: KafkaService, endpoint: _Endpoint,
                                                    vm_url: str, tmp_path: Path) -> None:
    prefix = f"secbad{uuid.uuid4().hex[:8]}"
    wrong = tmp_path / "wrong-password"
    wrong.write_text("wrong-" + secrets.token_hex(12) + "\n")
    env = client_env(secured_kafka, tmp_path, password_file=wrong)
    # the producer also presents a refused bearer token: two causes, one line each
    produce = Stage(tmp_path / "bad-produce.log", env,
                    *produce_args(endpoint, prefix, "secured-bad", tmp_path, endpoint.wrong_token_file))
    stream = Stage(tmp_path / "bad-stream.log", env, *stream_args(prefix, tmp_path))
    sink = Stage(tmp_path / "bad-sink.log", env, *sink_args(prefix, vm_url))
    LOGS.extend(s.log_path for s in (stream, sink, produce))
    WRONG_PASSWORDS.append(wrong.read_text().strip())
    observed_from = time.monotonic()
    try:
        # stream and sink give up at once: one error line, exit status 4 (authentication)
        assert stream.proc.wait(30) == 4, stream.lines()
        assert sink.proc.wait(30) == 4, sink.lines()
        # the producer keeps running and keeps quiet for ~10 s of retries (a scrape every second)
        time.sleep(max(0.0, 11.0 - (time.monotonic() - observed_from)))
        assert produce.proc.poll() is None, produce.lines()
        refused_requests = endpoint.requests.count(401)
    finally:
        codes = {name: stage.stop() for name, stage in (("produce", produce), ("stream", stream), ("sink", sink))}

    def auth_lines(stage: Stage) -> list[str]:
        return [line for line in stage.lines() if "authentication failed" in line]

    for name, stage in (("stream", stream), ("sink", sink)):
        lines = auth_lines(stage)
        assert len(lines) == 1, (name, stage.lines())
        assert lines[0].startswith(f"kpp {name}: error: Kafka at {secured_kafka.settings.kafka_secured_bootstrap}")
        assert "SCRAM-SHA-512 user 'kpp'" in lines[0]
        assert len(stage.lines()) <= 2, (name, stage.lines())  # at most the start line and the error
    assert codes["stream"] == 4 and codes["sink"] == 4, codes

    produce_lines = produce.lines()
    assert len(auth_lines(produce)) == 1, produce_lines
    assert "spooling" in auth_lines(produce)[0], produce_lines
    refused_scrapes = [line for line in produce_lines if "HTTP 401" in line]
    assert len(refused_scrapes) == 1, produce_lines
    warnings = [line for line in produce_lines if " WARNING " in line or " ERROR " in line]
    assert len(warnings) == 2, warnings  # the 401 and the refused login, nothing per retry
    assert len(produce_lines) <= 7, produce_lines  # start, 2 warnings, 3 stop lines
    assert refused_requests >= 8, endpoint.requests  # it did keep scraping every second
    print("wrong credentials:")
    for stage in (produce, stream, sink):
        for line in stage.lines():
            if "authentication failed" in line or "HTTP 401" in line:
                print("   ", line)


def test_no_secret_in_any_log(secured_kafka: KafkaService, endpoint: _Endpoint) -> None:
    assert LOGS, "run with the pipeline tests"
    secrets_ = {
        "kafka password": secured_kafka.password_file.read_text().strip(),
        "bearer token": endpoint.token,
        "refused bearer token": endpoint.wrong_token_file.read_text().strip(),
    }
    secrets_.update((f"wrong kafka password {i}", value) for i, value in enumerate(WRONG_PASSWORDS))
    logs = [*LOGS, secured_kafka.process.log_file, *secured_kafka.home.glob("*.properties")]
    checked = 0
    for path in logs:
        text = path.read_text(errors="replace")
        checked += len(text.splitlines())
        for what, value in secrets_.items():
            assert value and value not in text, f"the {what} appears in {path.name}"
    assert checked > 20


# -- no broker needed ---------------------------------------------------------------------------


def test_secured_mode_configuration_and_default_unchanged(tmp_path: Path) -> None:
    from stack.kafka import server_properties

    plain = StackSettings.from_env({"KPP_STATE_DIR": str(tmp_path)})
    assert not plain.kafka_sasl_ssl and plain.kafka_secured_bootstrap is None
    text = server_properties(plain, tmp_path / "data")
    assert "SASL" not in text and "ssl" not in text
    assert "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093\n" in text

    secured = StackSettings.from_env({"KPP_STATE_DIR": str(tmp_path), "KPP_KAFKA_SASL_SSL": "1"})
    assert secured.kafka_secured_bootstrap == "127.0.0.1:9094"
    text = server_properties(secured, tmp_path / "data", tmp_path / "broker.keystore.pem")
    assert "SASL_SSL://127.0.0.1:9094" in text and "inter.broker.listener.name=PLAINTEXT" in text
    assert "listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512" in text
    assert "ssl.keystore.type=PEM" in text
    # an external broker is never "secured" by the local stack
    external = StackSettings.from_env({"KPP_KAFKA_SASL_SSL": "1", "KAFKA_BOOTSTRAP": "kafka:9092"})
    assert external.kafka_secured_bootstrap is None


def test_explain_names_the_cause_and_never_the_password() -> None:
    from kafka.errors import KafkaTimeoutError, SaslAuthenticationFailedError

    from kafka_io.connection import Secret, classify_exception

    connection = KafkaConnection(bootstrap="127.0.0.1:1", security_protocol="SASL_SSL",
                                 sasl_mechanism="SCRAM-SHA-512", sasl_username="kpp",
                                 sasl_password=Secret("hunter2-secret"))
    refused = SaslAuthenticationFailedError(
        "SaslAuthenticationFailedError: Authentication failed (password hunter2-secret?)")
    line = connection.explain(refused)
    assert line.startswith("authentication failed: the broker refused SCRAM-SHA-512 user 'kpp'")
    assert "hunter2-secret" not in line and "***" in line
    assert classify_exception(ssl.SSLCertVerificationError("certificate verify failed"))[0] == "tls"
    assert classify_exception(KafkaTimeoutError("Unable to bootstrap")) is None
    # a refused login seen only in the client's log records is found through them
    from kafka_io.connection import CLIENT_FAILURES
    import logging

    CLIENT_FAILURES.clear()
    since = time.monotonic()
    record = logging.LogRecord("kafka.net.manager", logging.WARNING, __file__, 1,
                               "Bootstrap connection to %s failed: %s", ("bootstrap-0", refused), None)
    CLIENT_FAILURES.emit(record)
    assert connection.explain(KafkaTimeoutError("Unable to bootstrap"), since=since).startswith(
        "authentication failed")
    CLIENT_FAILURES.clear()
    assert connection.explain(KafkaTimeoutError("Unable to bootstrap")) == "KafkaTimeoutError: Unable to bootstrap"


def test_range_reader_and_publisher_over_sasl_ssl(secured_kafka: KafkaService) -> None:
    """kafka_io's publisher (kafka-python) and range reader (aiokafka, with its admin client)
    over SCRAM-SHA-512 and TLS: what `kpp import`, `replay`, `tail` and `archive` use."""
    from kafka_io.admin import TopicSpec, ensure_topics
    from kafka_io.publish import kafka_python_producer
    from kafka_io.reader import BEGINNING, END, SyncRangeReader

    connection = secured_kafka.secured_connection()
    topic = f"secured.reader.{uuid.uuid4().hex[:8]}"
    ensure_topics(connection, [TopicSpec(topic, 2)])
    producer = kafka_python_producer(connection, client_id="kpp-test-secured", acks="all")
    try:
        for i in range(10):
            producer.send(topic, key=b"k%d" % i, value=b"v%d" % i).get(30)
    finally:
        producer.close(10)
    got = []
    with SyncRangeReader(connection, topic, start=BEGINNING, stop=END) as reader:
        deadline = time.monotonic() + 30
        while not reader.done and time.monotonic() < deadline:
            got.extend(reader.read(0.5))
    assert sorted(r.value for r in got) == sorted(b"v%d" % i for i in range(10))


def test_range_reader_with_refused_credentials_is_the_one_line_error(secured_kafka: KafkaService) -> None:
    from kafka_io.connection import KafkaAuthenticationError
    from kafka_io.reader import SyncRangeReader

    password = secured_kafka.password_file.read_text().strip()
    bad = KafkaConnection.from_env(secured_kafka.secured_client_env() | {
        "KAFKA_SASL_PASSWORD_FILE": "", "KAFKA_SASL_PASSWORD": "not-" + password, "KAFKA_TIMEOUT": "10"})
    started = time.monotonic()
    with pytest.raises(KafkaAuthenticationError) as refused:
        SyncRangeReader(bad, "any").open()
    assert time.monotonic() - started < 10 + 5
    assert "authentication failed" in str(refused.value) and password not in str(refused.value)

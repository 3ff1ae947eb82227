"""Every command that talks to Kafka, run as a real `kpp` process against a bootstrap address
nobody listens on: one line naming the broker, the cause and the fix, exit 3, within
--kafka-timeout — never a traceback or "internal error". `kpp produce` is the exception by
design: it keeps scraping and spooling, and says so in one warning line.

These need no broker (the address is a closed local port), so they are not integration
tests; the missing-topic ones at the end use the real broker and are."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from kafka_io.connection import KafkaConnection
from tests.conftest import free_port, wait_until

KPP = [sys.executable, "-m", "kpp"]
KAFKA_TIMEOUT_S = 3.0
# interpreter start-up and imports on a busy two-core machine, plus one TCP probe
MARGIN_S = 12.0


def run_kpp(args: list[str], tmp_path: Path, bootstrap: str,
            timeout_s: float = KAFKA_TIMEOUT_S + MARGIN_S) -> tuple[subprocess.CompletedProcess, float]:
    env = os.environ | {"KPP_STATE_DIR": str(tmp_path / "state"), "KPP_LOG_LEVEL": "INFO"}
    started = time.monotonic()
    proc = subprocess.run([*KPP, *args, "--kafka-bootstrap", bootstrap, "--kafka-timeout", str(KAFKA_TIMEOUT_S)],
                          capture_output=True, text=True, timeout=timeout_s + 30, env=env, cwd=tmp_path)
    return proc, time.monotonic() - started


def assert_one_kafka_error(proc: subprocess.CompletedProcess, command: str, bootstrap: str,
                           elapsed_s: float) -> str:
    errors = [line for line in proc.stderr.splitlines() if line.startswith(f"kpp {command}: error:")]
    assert proc.returncode == 3, proc.stderr
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    line = errors[0]
    assert f"Kafka at {bootstrap}" in line  # the broker
    assert "connection refused" in line  # the cause
    assert "--kafka-bootstrap" in line  # the fix
    assert elapsed_s < KAFKA_TIMEOUT_S + MARGIN_S, elapsed_s
    return line


@pytest.fixture
def closed_bootstrap() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest.mark.parametrize("command, args", [
    ("stream", ["stream", "--listen", ""]),
    ("sink", ["sink", "--listen", ""]),
    ("tail", ["tail", "rates", "--idle-exit", "60"]),
    ("replay", ["replay", "--from", "1h"]),
    ("archive", ["archive", "--until-now", "--dir", "archive"]),
    ("topics", ["topics", "ensure"]),
])
def test_unreachable_kafka_is_one_line_and_exit_3(command: str, args: list[str], tmp_path: Path,
                                                  closed_bootstrap: str) -> None:
    proc, elapsed = run_kpp(args, tmp_path, closed_bootstrap)
    assert_one_kafka_error(proc, command, closed_bootstrap, elapsed)


def test_import_unreachable_kafka_is_one_line_and_exit_3(tmp_path: Path, closed_bootstrap: str) -> None:
    (tmp_path / "history.prom").write_text("kubeproxy_sync_proxy_rules_last_timestamp_seconds 1 1700000000000\n")
    proc, elapsed = run_kpp(["import", "history.prom", "--node", "n1"], tmp_path, closed_bootstrap)
    assert_one_kafka_error(proc, "import", closed_bootstrap, elapsed)


def test_demo_unreachable_kafka_starts_nothing(tmp_path: Path, closed_bootstrap: str) -> None:
    proc, elapsed = run_kpp(["demo", "--nodes", "1", "--duration", "5", "--sim-port", str(free_port())],
                            tmp_path, closed_bootstrap)
    line = assert_one_kafka_error(proc, "demo", closed_bootstrap, elapsed)
    assert "kpp stack up" in line
    assert not (tmp_path / "state" / "demo" / "logs").exists()  # no simulator, producer or stage started


def test_produce_keeps_spooling_with_one_warning(tmp_path: Path, closed_bootstrap: str) -> None:
    """A node producer must lose nothing while Kafka is away: it does not stop, it spools,
    and says so once."""
    from producers.spool import Spool

    stderr_path = tmp_path / "stderr"
    spool_dir = tmp_path / "spool"
    env = os.environ | {"KPP_STATE_DIR": str(tmp_path / "state"), "KPP_LOG_LEVEL": "INFO"}
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen([*KPP, "produce", "--node", "n1", "--interval", "0.5", "--listen", "",
                                 "--target", f"http://127.0.0.1:{free_port()}/metrics", "--spool-dir", str(spool_dir),
                                 "--kafka-bootstrap", closed_bootstrap, "--kafka-timeout", str(KAFKA_TIMEOUT_S)],
                                stdout=subprocess.DEVNULL, stderr=stderr, env=env, cwd=tmp_path)
    try:
        def warned() -> bool:
            return "unreachable" in stderr_path.read_text()

        assert wait_until(warned, KAFKA_TIMEOUT_S + MARGIN_S), stderr_path.read_text()
        assert proc.poll() is None, stderr_path.read_text()  # still running, not exit 3
        # keeps scraping into the spool while Kafka is away
        assert wait_until(lambda: Spool(spool_dir).depth >= 3, 15), stderr_path.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(40)
    text = stderr_path.read_text()
    warnings = [line for line in text.splitlines() if f"Kafka at {closed_bootstrap}" in line]
    assert code == 0, text
    assert len(warnings) == 1 and "spooling" in warnings[0], text
    assert "Traceback" not in text and "error:" not in text, text
    assert Spool(spool_dir).depth >= 3  # nothing lost: still there for the next start


# -- a missing topic (real broker) ------------------------------------------------------------

@pytest.mark.integration
@pytest.mark.parametrize("command, args", [
    ("tail", lambda prefix: ["tail", "rates", "--topic-prefix", prefix, "--idle-exit", "60"]),
    ("replay", lambda prefix: ["replay", "--from", "1h", "--topic-prefix", prefix]),
    ("archive", lambda prefix: ["archive", "--until-now", "--dir", "archive", "--topic-prefix", prefix]),
])
def test_missing_topic_is_one_line_and_exit_3(command: str, args, tmp_path: Path, kafka: KafkaConnection) -> None:
    prefix = f"missing{uuid.uuid4().hex[:8]}"
    proc, elapsed = run_kpp(args(prefix), tmp_path, kafka.bootstrap)
    errors = [line for line in proc.stderr.splitlines() if line.startswith(f"kpp {command}: error:")]
    assert proc.returncode == 3, proc.stderr
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"Kafka at {kafka.bootstrap}" in errors[0] and f"'{prefix}." in errors[0]  # broker and topic
    assert "does not exist" in errors[0] and "kpp topics ensure" in errors[0]  # cause and fix
    assert elapsed < KAFKA_TIMEOUT_S + MARGIN_S


# -- a client error that escapes a command ----------------------------------------------------

@pytest.mark.parametrize("exc, code, words", [
    ("TopicAuthorizationFailedError", 3, "not authorized"),
    ("KafkaTimeoutError", 3, "no broker answered"),
])
def test_a_kafka_client_error_escaping_a_command_is_not_an_internal_error(
        exc: str, code: int, words: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import kafka.errors

    import kpp.tail
    from kpp.cli import main

    def run(_args):  # noqa: ANN001, ANN202 - stands in for a command whose client gave up mid-way
        raise getattr(kafka.errors, exc)("kube-proxy.rates")

    monkeypatch.setattr(kpp.tail, "run", run)
    bootstrap = f"127.0.0.1:{free_port()}"
    assert main(["tail", "rates", "--kafka-bootstrap", bootstrap, "--kafka-timeout", "1"]) == code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("kpp tail: error:")]
    assert len(lines) == 1 and f"Kafka at {bootstrap}" in lines[0] and words in lines[0], err
    assert "internal error" not in err

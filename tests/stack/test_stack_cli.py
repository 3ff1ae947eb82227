"""`kpp stack` across the process boundary: idempotent up, down stops exactly what it
started, and every failure is one clear message with a non-zero exit and no traceback."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from stack.settings import StackSettings
from tests.conftest import free_port

pytestmark = pytest.mark.integration

KPP = str(Path(sys.executable).parent / "kpp")


def kpp(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KPP, *args], env=env, capture_output=True, text=True, timeout=timeout)


def isolated_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP", "VM_URL")}
    env.update(
        KPP_STATE_DIR=str(tmp_path / "state"),
        KPP_KAFKA_PORT=str(free_port()),
        KPP_KAFKA_CONTROLLER_PORT=str(free_port()),
        KPP_VM_PORT=str(free_port()),
    )
    env.update(overrides)
    return env


def assert_clean_failure(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_up_is_idempotent_and_down_stops_only_its_own(tmp_path: Path, kafka, vm_url) -> None:
    env = isolated_env(tmp_path)
    first = kpp("stack", "up", env=env)
    assert first.returncode == 0, first.stderr
    assert "kafka: started" in first.stdout and "victoriametrics: started" in first.stdout
    settings = StackSettings.from_env(env)
    kafka_pid = int((settings.run_dir / "kafka.pid").read_text())
    vm_pid = int((settings.run_dir / "victoriametrics.pid").read_text())

    again = kpp("stack", "up", env=env)
    assert again.returncode == 0, again.stderr
    assert f"kafka: already running (pid {kafka_pid})" in again.stdout
    assert f"victoriametrics: already running (pid {vm_pid})" in again.stdout

    status = kpp("stack", "status", env=env)
    assert status.returncode == 0 and status.stdout.count("healthy") == 2

    down = kpp("stack", "down", env=env)
    assert down.returncode == 0, down.stderr
    for pid in (kafka_pid, vm_pid):
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert kpp("stack", "status", env=env).returncode == 3
    # The session's own stack (other state folder) is untouched.
    from stack.kafka import broker_answers_metadata

    assert broker_answers_metadata(kafka.bootstrap, timeout=5)


def test_taken_port_is_one_clear_error(tmp_path: Path, kafka) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        env = isolated_env(tmp_path, KAFKA_BOOTSTRAP=kafka.bootstrap, KPP_VM_PORT=str(port))
        result = kpp("stack", "up", env=env)
    assert_clean_failure(result, f"port 127.0.0.1:{port} is taken", "KPP_VM_PORT")


def _fake_binary(folder: Path, name: str, script: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_service_that_dies_reports_its_log(tmp_path: Path, kafka) -> None:
    fake = tmp_path / "bin"
    _fake_binary(fake, "victoria-metrics", 'echo "FATAL: cannot open storage: disk on fire" >&2; exit 2')
    env = isolated_env(tmp_path, KAFKA_BOOTSTRAP=kafka.bootstrap, PATH=f"{fake}:{os.environ['PATH']}")
    result = kpp("stack", "up", env=env)
    assert_clean_failure(result, "victoriametrics exited during start-up", "disk on fire")


def test_service_never_healthy_times_out_with_log(tmp_path: Path, kafka) -> None:
    fake = tmp_path / "bin"
    _fake_binary(fake, "victoria-metrics", 'echo "still starting, forever"; sleep 60')
    env = isolated_env(tmp_path, KAFKA_BOOTSTRAP=kafka.bootstrap, PATH=f"{fake}:{os.environ['PATH']}",
                       KPP_VM_START_TIMEOUT="2")
    result = kpp("stack", "up", env=env)
    assert_clean_failure(result, "did not answer /health within 2 s", "still starting, forever")
    # up stopped what it started and could not bring up.
    assert "victoriametrics: was not running" in kpp("stack", "down", env=env).stdout


def test_missing_java_is_named(tmp_path: Path, vm_url) -> None:
    # A PATH with only the venv: no java, no mvn.
    env = isolated_env(tmp_path, VM_URL=vm_url, PATH=str(Path(sys.executable).parent))
    result = kpp("stack", "up", env=env)
    assert_clean_failure(result, "Java 17 or newer is needed", "KAFKA_BOOTSTRAP")


def test_external_services_that_do_not_answer(tmp_path: Path) -> None:
    env = isolated_env(tmp_path, KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}")
    result = kpp("stack", "up", env=env)
    assert_clean_failure(result, "does not answer a metadata request")


def test_help_lists_actions() -> None:
    result = subprocess.run([KPP, "stack", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for word in ("up", "down", "status", "KAFKA_BOOTSTRAP", "VM_URL", "KPP_STATE_DIR"):
        assert word in result.stdout

"""The container image without a Docker engine: the Dockerfile's Python environment built the
way the Dockerfile builds it (the files it copies, its own `pip install` line, in a fresh
venv), `kpp --help` run in it, the compression extras importable; and its HEALTHCHECK
(kpp/healthcheck.py) against a real stage process."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

import pytest

from kpp.healthcheck import LISTEN, health_url
from tests.conftest import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def dockerfile_instructions(keyword: str) -> list[str]:
    return [line.split(None, 1)[1] for line in DOCKERFILE.splitlines() if line.startswith(keyword + " ")]


def pip_install_args() -> list[str]:
    """The arguments of the Dockerfile's `pip install` (the part of its RUN line up to `&&`)."""
    (run,) = [r for r in dockerfile_instructions("RUN") if "pip install" in r]
    command = shlex.split(run.split("&&")[0])
    return command[command.index("install") + 1:]


# -- the Dockerfile's promises, read from it -------------------------------------------------------

def test_image_installs_the_lz4_and_zstd_extras_pyproject_declares() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"lz4", "zstd"} <= set(extras)
    (target,) = [a for a in pip_install_args() if not a.startswith("-")]
    match = re.fullmatch(r"\.\[([a-z0-9,]+)\]", target)
    assert match, f"the image installs {target!r}, without extras"
    assert set(match[1].split(",")) == {"lz4", "zstd"}  # run-time extras only: not test


def test_image_copies_every_package_pyproject_installs() -> None:
    """A package the image lacks fails only when a command imports it, in the cluster."""
    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include}
    copied = {source.rstrip("/") for copy in dockerfile_instructions("COPY") for source in copy.split()[:-1]}
    assert packages - copied == set()


def test_image_has_a_healthcheck_that_needs_no_curl() -> None:
    (check,) = dockerfile_instructions("HEALTHCHECK")
    assert 'CMD ["python", "-m", "kpp.healthcheck"]' in check
    instructions = "\n".join(line for line in DOCKERFILE.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"\b(curl|wget)\b", instructions)


def test_healthcheck_knows_every_stage_listen_option() -> None:
    """kpp/healthcheck.py keeps the stages' --listen defaults and variables without importing
    the stages (it runs every 30 s): they must stay the stages' own."""
    from producers.cli_produce import OPTIONS as PRODUCE
    from sinks.cli import OPTIONS as SINK
    from streams.cli import OPTIONS as STREAM

    for stage, options in (("produce", PRODUCE), ("sink", SINK), ("stream", STREAM)):
        (listen,) = [o for o in options if o.name == "listen"]
        assert LISTEN[stage] == (listen.env, listen.default), stage


@pytest.mark.parametrize("cmdline, env, url", [
    (["/usr/local/bin/python", "/usr/local/bin/kpp", "produce", "--listen", "0.0.0.0:9811"], {},
     "http://127.0.0.1:9811/healthz"),
    (["python", "/venv/bin/kpp", "--log-level", "DEBUG", "sink", "--listen=10.0.0.7:19812"], {},
     "http://10.0.0.7:19812/healthz"),
    (["kpp", "stream", "--partitions", "4"], {}, "http://127.0.0.1:9813/healthz"),
    (["kpp", "stream"], {"KPP_STREAM_LISTEN": "0.0.0.0:7000"}, "http://127.0.0.1:7000/healthz"),
    (["kpp", "sink", "--listen", "[::]:9812"], {}, "http://[::1]:9812/healthz"),
    (["kpp", "produce", "--listen", ""], {}, None),  # switched off: nothing to check
    (["kpp", "simulate", "--nodes", "3"], {}, None),
    (["sh", "-c", "sleep 1"], {}, None),
])
def test_health_url_from_the_main_process_command_line(cmdline, env, url) -> None:
    assert health_url(cmdline, env) == url


def test_health_url_reads_listen_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "producer.toml"
    config.write_text('listen = "0.0.0.0:9999"\n')
    assert health_url(["kpp", "produce", f"--config={config}"], {}) == "http://127.0.0.1:9999/healthz"
    assert health_url(["kpp", "produce"], {"KPP_PRODUCE_CONFIG": str(config)}) == "http://127.0.0.1:9999/healthz"


# -- across the process boundary -------------------------------------------------------------------

@pytest.mark.integration
def test_image_environment_built_like_the_dockerfile_runs_kpp(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    for copy in dockerfile_instructions("COPY"):
        *sources, destination = copy.split()
        for source in sources:
            src = REPO / source
            dst = app / (destination if destination not in ("./", ".") else source)
            if src.is_dir():
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy(src, app / src.name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # The Dockerfile's own arguments; only --no-cache-dir is left out (it changes no result,
    # and the local cache keeps this test from downloading every wheel each run).
    args = [a for a in pip_install_args() if a != "--no-cache-dir"]
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", *args], cwd=app,
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    help_run = subprocess.run([str(venv / "bin" / "kpp"), "--help"], capture_output=True, text=True,
                              timeout=120, cwd=tmp_path, env=env)
    assert help_run.returncode == 0, help_run.stderr
    for command in ("produce", "stream", "sink", "topics", "replay", "tail"):
        assert re.search(rf"^\s+{command}\s", help_run.stdout, re.MULTILINE), command
    checks = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import kafka.codec as c, kpp.healthcheck, kpp, importlib.util as u;"
         "print(c.has_lz4(), c.has_zstd(), kpp.__file__, u.find_spec('pytest') is None)"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert checks.returncode == 0, checks.stderr
    has_lz4, has_zstd, location, no_test_tools = checks.stdout.split()
    assert (has_lz4, has_zstd, no_test_tools) == ("True", "True", "True")
    assert str(venv) in location  # the installed package, not this checkout


@pytest.mark.integration
def test_healthcheck_asks_the_running_stage_and_fails_once_it_is_gone(kafka, vm_url, tmp_path: Path) -> None:
    port = free_port()
    prefix = f"health{uuid.uuid4().hex[:8]}"
    sink = subprocess.Popen(
        [sys.executable, "-m", "kpp", "sink", "--listen", f"0.0.0.0:{port}", "--url", vm_url,
         "--topic-prefix", prefix, "--kafka-bootstrap", kafka.bootstrap],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def healthcheck() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "kpp.healthcheck"], capture_output=True, text=True,
                              timeout=30, env={**os.environ, "KPP_HEALTHCHECK_PID": str(sink.pid)})

    try:
        assert wait_until(lambda: healthcheck().returncode == 0, timeout=60), healthcheck()
        assert f"http://127.0.0.1:{port}/healthz: 200" in healthcheck().stdout
        # A stage that no longer answers (stopped, not gone) fails the check: it is not
        # healthy by default.
        sink.send_signal(signal.SIGSTOP)
        stopped = healthcheck()
        assert stopped.returncode == 1 and f"http://127.0.0.1:{port}/healthz" in stopped.stderr
        sink.send_signal(signal.SIGCONT)
    finally:
        sink.send_signal(signal.SIGCONT)
        sink.send_signal(signal.SIGTERM)
        try:
            sink.wait(timeout=60)
        except subprocess.TimeoutExpired:
            sink.kill()
            sink.wait()

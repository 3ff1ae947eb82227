"""Private stores for the sink tests: a VictoriaMetrics we can stop and start, Debian's
Prometheus (remote-write receiver) and Debian's InfluxDB 1.x. Each binary comes from its
Debian package; when it is missing and we are root, it is installed (like `kpp stack up`
does for VictoriaMetrics), otherwise the test fails: never a silent skip."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port


def ensure_binary(binary: str, package: str) -> str:
    found = shutil.which(binary)
    if found:
        return found
    apt_get = shutil.which("apt-get")
    if os.geteuid() != 0 or apt_get is None:
        pytest.fail(f"`{binary}` is missing: install Debian's package `{package}`")
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    for argv in ([apt_get, "update", "-qq"], [apt_get, "install", "-y", "-qq", package]):
        result = subprocess.run(argv, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            pytest.fail(f"`apt-get {' '.join(argv[1:])}` failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    found = shutil.which(binary)
    if not found:
        pytest.fail(f"package {package} installed but `{binary}` is not on PATH")
    return found


def wait_http(url: str, timeout: float, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{url} server exited during start-up:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{url} did not answer within {timeout:.0f} s:\n{log_path.read_text()[-3000:]}")


class Server:
    """A subprocess with a log file; stop() terminates it (kill after 10 s)."""

    def __init__(self, argv: list[str], health_url: str, base_url: str, home: Path) -> None:
        self.argv = argv
        self.health_url = health_url
        self.url = base_url
        self.home = home
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> None:
        log_path = self.home / "server.log"
        log = open(log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.home)
        log.close()
        wait_http(self.health_url, timeout, self.proc, log_path)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def private_victoriametrics(home: Path, *extra: str) -> Server:
    binary = ensure_binary("victoria-metrics", "victoria-metrics")
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    argv = [binary, f"-httpListenAddr=127.0.0.1:{port}", f"-storageDataPath={home / 'data'}",
            "-search.latencyOffset=0s", "-dedup.minScrapeInterval=1ms", "-retentionPeriod=100y",
            "-loggerLevel=WARN", *extra]
    url = f"http://127.0.0.1:{port}"
    return Server(argv, url + "/health", url, home)


def prometheus(home: Path) -> Server:
    binary = ensure_binary("prometheus", "prometheus")
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1m\n")
    argv = [binary, f"--config.file={config}", f"--storage.tsdb.path={home / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}", "--web.enable-remote-write-receiver",
            "--log.level=warn"]
    url = f"http://127.0.0.1:{port}"
    return Server(argv, url + "/-/ready", url, home)


def influxdb(home: Path) -> Server:
    binary = ensure_binary("influxd", "influxdb")
    http_port, rpc_port = free_port(), free_port()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "influxdb.conf"
    config.write_text(
        f'reporting-disabled = true\nbind-address = "127.0.0.1:{rpc_port}"\n'
        f'[meta]\n  dir = "{home / "meta"}"\n'
        f'[data]\n  dir = "{home / "data"}"\n  wal-dir = "{home / "wal"}"\n  query-log-enabled = false\n'
        f'[http]\n  bind-address = "127.0.0.1:{http_port}"\n  log-enabled = false\n'
        '[monitor]\n  store-enabled = false\n'
    )
    argv = [binary, "-config", str(config)]
    url = f"http://127.0.0.1:{http_port}"
    return Server(argv, url + "/ping", url, home)

"""VictoriaMetrics single-node from Debian's `victoria-metrics` package, on 127.0.0.1 with its
own data folder.

Flags and why:
- `-search.latencyOffset=0s`: instant queries otherwise miss points younger than 30 s.
- `-dedup.minScrapeInterval=1ms`: identical re-writes (at-least-once sinks, replays) keep one
  sample per series and timestamp instead of two.
- `-retentionPeriod=100y`: replayed and backfilled history is kept, not dropped as too old.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from urllib.parse import urlsplit

import httpx

from stack.process import ManagedProcess, StackError, port_in_use
from stack.settings import StackSettings

PACKAGE = "victoria-metrics"
BINARY = "victoria-metrics"


class VictoriaMetricsService:
    name = "victoriametrics"

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.home = settings.state_dir / "victoriametrics"
        self.process = ManagedProcess(
            name="victoriametrics",
            pid_file=settings.run_dir / "victoriametrics.pid",
            log_file=settings.log_dir / "victoriametrics.log",
            marker=str(self.home),
        )

    @property
    def address(self) -> str:
        return self.settings.vm_url

    def ensure_binary(self) -> str:
        binary = shutil.which(BINARY)
        if binary:
            return binary
        apt_get = shutil.which("apt-get")
        if os.geteuid() != 0 or apt_get is None:
            raise StackError(
                f"VictoriaMetrics is not installed: install Debian's package "
                f"(`sudo apt-get install {PACKAGE}`), or set VM_URL to use an existing one"
            )
        print(f"victoriametrics: installing Debian package {PACKAGE} (first run only) ...", flush=True)
        env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
        for argv in ([apt_get, "update", "-qq"], [apt_get, "install", "-y", "-qq", PACKAGE]):
            result = subprocess.run(argv, capture_output=True, text=True, env=env)
            if result.returncode != 0:
                tail = "\n".join((result.stdout + result.stderr).splitlines()[-10:])
                raise StackError(f"`{' '.join(argv[1:])}` failed (exit {result.returncode}):\n{tail}")
        binary = shutil.which(BINARY)
        if binary is None:
            raise StackError(f"package {PACKAGE} installed but no `{BINARY}` binary is on PATH")
        return binary

    def healthy(self, timeout: float = 2.0) -> bool:
        try:
            response = httpx.get(f"{self.address}/health", timeout=timeout)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def up(self) -> str:
        if self.settings.external_vm:
            if not self.healthy(timeout=10):
                raise StackError(f"VM_URL={self.address} does not answer /health")
            return f"victoriametrics: using existing server at {self.address}"
        pid = self.process.pid()
        if pid is not None:
            self._wait_healthy(pid)
            return f"victoriametrics: already running (pid {pid}) at {self.address}"
        port = self.settings.vm_port
        if port_in_use("127.0.0.1", port):
            raise StackError(
                f"victoriametrics: port 127.0.0.1:{port} is taken by another process; stop it "
                "(Debian's package may have started its own service: `systemctl stop victoria-metrics`), "
                "or choose another port with KPP_VM_PORT"
            )
        binary = self.ensure_binary()
        self.home.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        pid = self.process.start_healthy(
            [
                binary,
                f"-httpListenAddr=127.0.0.1:{port}",
                f"-storageDataPath={self.home / 'data'}",
                "-search.latencyOffset=0s",
                "-dedup.minScrapeInterval=1ms",
                "-retentionPeriod=100y",
                "-loggerLevel=WARN",
            ],
            cwd=self.home, healthy=self.healthy, timeout=self.settings.vm_start_timeout,
            answer="answer /health", poll=0.2,
        )
        return f"victoriametrics: started (pid {pid}) at {self.address} in {time.monotonic() - started:.1f} s"

    def _wait_healthy(self, pid: int) -> None:
        self.process.wait_healthy(pid, healthy=self.healthy, timeout=self.settings.vm_start_timeout,
                                  answer="answer /health", poll=0.2)

    def down(self) -> str:
        if self.settings.external_vm:
            return f"victoriametrics: external ({self.address}), left running"
        return "victoriametrics: stopped" if self.process.stop() else "victoriametrics: was not running"

    def status(self) -> tuple[str, str, str]:
        if self.settings.external_vm:
            return ("victoriametrics", "external, " + ("healthy" if self.healthy() else "NOT answering"),
                    self.address)
        pid = self.process.pid()
        if pid is None:
            return ("victoriametrics", "stopped", self.address)
        return ("victoriametrics", f"running pid {pid}, " + ("healthy" if self.healthy() else "not healthy"),
                self.address)


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80

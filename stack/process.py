"""Start, find and stop the stack's own background processes through PID files.

`down` must stop exactly what `up` started: a PID file alone is not proof (PIDs are
reused), so a process only counts as ours when its command line still names our state
folder.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from contracts.errors import KppError


class StackError(KppError):
    """A service of the local stack cannot be installed, started or reached."""


@dataclass(frozen=True)
class ManagedProcess:
    name: str
    pid_file: Path
    log_file: Path
    marker: str  # a string our process's command line contains (the state folder)

    def pid(self) -> int | None:
        """The PID of our running process, or None (a stale PID file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if _cmdline(pid) is not None and self.marker in _cmdline(pid):  # type: ignore[operator]
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def start(self, argv: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> int:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            log.write(f"\n--- started {time.strftime('%Y-%m-%dT%H:%M:%S')}: {' '.join(argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the CLI; Ctrl-C in the terminal does not hit it
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc.pid

    def alive(self, pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        # A zombie is dead for our purposes (it only waits for its parent to reap it).
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            return state != "Z"
        except (OSError, IndexError):
            return True

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM, then SIGKILL after `timeout`. Returns whether something was stopped."""
        pid = self.pid()
        if pid is None:
            return False
        _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive(pid):
            _reap(pid)
            time.sleep(0.2)
        if self.alive(pid):
            _signal(pid, signal.SIGKILL)
            while self.alive(pid):
                _reap(pid)
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    def wait_healthy(self, pid: int, *, healthy: Callable[[], bool], timeout: float, answer: str,
                     poll: float = 0.5) -> None:
        """Return once `healthy()` holds; a StackError with the last lines of the log when the
        process dies or stays unhealthy for `timeout` s. `answer` names what healthy means."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive(pid):
                raise StackError(f"{self.name} exited during start-up; last lines of {self.log_file}:\n"
                                 f"{self.log_tail()}")
            if healthy():
                return
            time.sleep(poll)
        raise StackError(f"{self.name} did not {answer} within {timeout:.0f} s; "
                         f"last lines of {self.log_file}:\n{self.log_tail()}")

    def start_healthy(self, argv: list[str], *, cwd: Path, healthy: Callable[[], bool], timeout: float,
                      answer: str, poll: float = 0.5) -> int:
        """Start the process and wait until it is healthy; stop it again when it is not
        (a half-started service helps nobody; its log stays)."""
        pid = self.start(argv, cwd=cwd)
        try:
            self.wait_healthy(pid, healthy=healthy, timeout=timeout, answer=answer, poll=poll)
        except StackError:
            self.stop(timeout=10)
            raise
        return pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_file, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 64 * 1024))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return "(no log yet)"
        return "\n".join(text.splitlines()[-lines:])


def _cmdline(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return None


def _signal(pid: int, sig: int) -> None:
    """Signal the process and, since it leads its own session, any children it started."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    """Collect the exit status when the process is our child (the CLI that started it)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False

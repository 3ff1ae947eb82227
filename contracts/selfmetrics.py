"""Self-observability shared by the long-running stages (producer, sink, stream worker):
thread-safe counters and gauges, rendered by hand in the exposition format on /metrics,
plus /healthz. A few counters do not justify a client library."""

from __future__ import annotations

import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from contracts.errors import ConfigError

LabelKey = tuple[tuple[str, str], ...]


class Counters:
    """Thread-safe counters and gauges keyed by (metric name, sorted labels)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[LabelKey, float]] = defaultdict(dict)
        self._meta: dict[str, tuple[str, str]] = {}
        self._collectors: list[Callable[["Counters"], None]] = []

    def describe(self, name: str, kind: str, help_text: str) -> None:
        self._meta[name] = (kind, help_text)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._values[name]
            series[key] = series.get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._values[name][tuple(sorted(labels.items()))] = value

    def get(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._values.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def on_collect(self, collector: Callable[["Counters"], None]) -> None:
        """Run before every render, to refresh gauges read from elsewhere (spool depth)."""
        self._collectors.append(collector)

    def render(self) -> str:
        for collector in self._collectors:
            collector(self)
        lines: list[str] = []
        with self._lock:
            for name in sorted(self._values):
                kind, help_text = self._meta.get(name, ("untyped", ""))
                lines.append(f"# HELP {name} {help_text}")
                lines.append(f"# TYPE {name} {kind}")
                for key, value in sorted(self._values[name].items()):
                    labels = ",".join(f'{k}="{_escape(v)}"' for k, v in key)
                    lines.append(f"{name}{{{labels}}} {value!r}" if labels else f"{name} {value!r}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def serve(listen: str, counters: Counters, healthy: Callable[[], tuple[bool, str]]) -> ThreadingHTTPServer:
    """Serve /metrics and /healthz on `listen` (HOST:PORT) from a daemon thread."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"listen address {listen!r} is not HOST:PORT")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.split("?")[0] == "/metrics":
                self._answer(200, counters.render(), "text/plain; version=0.0.4; charset=utf-8")
            elif self.path.split("?")[0] == "/healthz":
                ok, text = healthy()
                self._answer(200 if ok else 503, text + "\n", "text/plain; charset=utf-8")
            else:
                self._answer(404, "not found: try /metrics or /healthz\n", "text/plain; charset=utf-8")

        def _answer(self, status: int, body: str, content_type: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:  # no access log on stderr
            pass

    try:
        server = ThreadingHTTPServer((host or "0.0.0.0", int(port)), Handler)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {listen}: {exc.strerror}") from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="selfmetrics", daemon=True).start()
    return server

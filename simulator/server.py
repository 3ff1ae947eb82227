"""One HTTP server for all simulated nodes (stdlib ThreadingHTTPServer).

URL scheme (every node shares HOST:PORT, so the node is in the path):

    GET  /healthz                    -> "ok"
    GET  /nodes                      -> JSON list of node names ["node-000", ...]
    GET  /nodes/<node>/metrics       -> Prometheus text 0.0.4 for that node, faults applied
    GET  /nodes/<node>/fault         -> JSON {"node", "mode", "restarts"}
    POST /nodes/<node>/fault         -> body {"mode": "<mode>"} (or {"mode": "none"})

Serving-level faults are handled here: `slow` sleeps before answering, `http500` answers 500,
`gone` closes the connection without writing any HTTP response (a single shared server cannot
refuse connections for one node only; to a scraper both are "no response", and the client sees
e.g. httpx.RemoteProtocolError "Server disconnected without sending a response").
"""

from __future__ import annotations

import errno
import logging
import re
import socket
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson

from contracts.errors import KppError
from simulator.model import FAULT_MODES, Cluster
from simulator.promtext import CONTENT_TYPE

log = logging.getLogger("kpp.simulate")

_NODE_PATH = re.compile(r"^/nodes/(?P<node>[^/]+)/(?P<what>metrics|fault)/?$")


class SimulatorServer(ThreadingHTTPServer):
    """ThreadingHTTPServer carrying the cluster, the clock and the `slow` delay."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], cluster: Cluster, *,
                 slow_seconds: float = 5.0, clock: Callable[[], float] = time.time,
                 on_served: Callable[[str, float, float], None] | None = None) -> None:
        self.cluster = cluster
        self.slow_seconds = slow_seconds
        self.clock = clock
        # on_served(node, at, arrived): what a /metrics request was answered as of (`at`, on
        # `clock`) and when it arrived (wall clock): lets a test compare with what was served
        self.on_served = on_served
        super().__init__(address, SimulatorHandler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class SimulatorHandler(BaseHTTPRequestHandler):
    """Routes the URL scheme above; one instance per request."""

    server: SimulatorServer
    server_version = "kpp-simulator"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib name)
        log.debug("%s %s", self.address_string(), format % args)

    # -- responses -----------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: object) -> None:
        self._send(status, orjson.dumps(payload) + b"\n", "application/json")

    def _text(self, status: int, text: str) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8")

    def _drop(self) -> None:
        """`gone`: no status line, no headers; RST the socket so the client fails fast."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        self.connection.close()

    # -- routes --------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            return self._text(200, "ok\n")
        if path in ("/nodes", "/nodes/"):
            return self._json(200, self.server.cluster.node_names)
        match = _NODE_PATH.match(path)
        if not match or match["node"] not in self.server.cluster.nodes:
            return self._text(404, f"not found: {path}\n")
        node = match["node"]
        if match["what"] == "fault":
            return self._json(200, self._fault_view(node))
        return self._metrics(node)

    def do_POST(self) -> None:  # noqa: N802 (stdlib name)
        path = self.path.split("?", 1)[0]
        match = _NODE_PATH.match(path)
        if not match or match["what"] != "fault" or match["node"] not in self.server.cluster.nodes:
            return self._text(404, f"not found: {path}\n")
        length = int(self.headers.get("Content-Length") or 0)
        try:
            mode = orjson.loads(self.rfile.read(length) or b"{}").get("mode")
        except (orjson.JSONDecodeError, AttributeError):
            return self._text(400, 'body must be JSON like {"mode": "http500"}\n')
        if mode not in FAULT_MODES:
            return self._text(400, f"mode must be one of {', '.join(FAULT_MODES)}\n")
        node = match["node"]
        self.server.cluster.set_fault(node, mode, at=self.server.clock())
        log.info("fault on %s switched to %s", node, mode)
        return self._json(200, self._fault_view(node))

    def _fault_view(self, node: str) -> dict[str, object]:
        model = self.server.cluster.model(node)
        return {"node": node, "mode": self.server.cluster.fault(node),
                "restarts": list(model.restarts)}

    def _metrics(self, node: str) -> None:
        # one reading of the clock per request: the fault and the body are of the same instant
        arrived = time.time()
        at = self.server.clock()
        if self.server.on_served is not None:
            self.server.on_served(node, at, arrived)
        mode = self.server.cluster.fault_at(node, at)
        if mode == "gone":
            return self._drop()
        if mode == "slow":
            time.sleep(self.server.slow_seconds)
        if mode == "http500":
            return self._text(500, "simulated fault: http500\n")
        body = self.server.cluster.render(node, at=at)
        return self._send(200, body.encode(), CONTENT_TYPE)


def make_server(cluster: Cluster, host: str = "127.0.0.1", port: int = 18080, *,
                slow_seconds: float = 5.0, clock: Callable[[], float] = time.time,
                on_served: Callable[[str, float, float], None] | None = None) -> SimulatorServer:
    """Bind the server (port 0 = any free port). A taken port is a KppError, not a traceback."""
    try:
        return SimulatorServer((host, port), cluster, slow_seconds=slow_seconds, clock=clock, on_served=on_served)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise KppError(f"cannot listen on {host}:{port}: port already in use "
                           f"(pick another with --port)") from exc
        raise KppError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc

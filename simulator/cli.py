"""`kpp simulate`: serve realistic kube-proxy /metrics for N simulated nodes from one server.

URL scheme: http://HOST:PORT/nodes/<node>/metrics (nodes node-000, node-001, ...), GET /nodes,
GET /healthz, GET|POST /nodes/<node>/fault; default port 18080 (10249 is per-node in real
clusters, but here every node shares one listener). Details in `kpp simulate --help` and
simulator.server.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from types import FrameType
from typing import Any

from contracts.errors import ConfigError
from simulator import catalogue
from simulator.model import FAULT_HELP, FAULT_MODES, Cluster, SimConfig
from simulator.server import make_server

log = logging.getLogger("kpp.simulate")

DEFAULT_PORT = 18080

DESCRIPTION = """\
Serve realistic kube-proxy /metrics (Prometheus text 0.0.4) for N simulated nodes from ONE
HTTP server. Families, HELP/TYPE lines and bucket layouts follow real kube-proxy (1.25, 1.28 or
1.33); counters and histograms evolve deterministically from --seed: the same seed, options,
fault history and time always give the same bytes. The process start is the clock origin.
"""

EPILOG = f"""\
URL scheme (all nodes share HOST:PORT; nodes are node-000, node-001, ...):
  GET  http://HOST:PORT/nodes/<node>/metrics   kube-proxy /metrics of one node
  GET  http://HOST:PORT/nodes                  JSON list of node names
  GET  http://HOST:PORT/healthz                "ok"
  GET  http://HOST:PORT/nodes/<node>/fault     current fault of a node (JSON)
  POST http://HOST:PORT/nodes/<node>/fault     switch it at run time, body {{"mode": "<mode>"}}

Fault modes (--fault NODE=MODE, repeatable; NODE may be "all"):
{chr(10).join(f"  {mode:<17} {text}" for mode, text in FAULT_HELP.items())}
  ("gone": with one shared server the connection is closed without any HTTP response,
   the closest a single listener can get to "connection refused".)

Example:
  kpp simulate --nodes 5 --seed 7 --fault node-003=http500 --fault node-001=stalled
  curl http://127.0.0.1:{DEFAULT_PORT}/nodes/node-000/metrics
  curl -X POST -d '{{"mode": "restart"}}' http://127.0.0.1:{DEFAULT_PORT}/nodes/node-002/fault
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _fault(text: str) -> tuple[str, str]:
    """NODE=MODE -> (node, mode); the node is checked later, once the cluster exists."""
    node, sep, mode = text.partition("=")
    if not sep or not node or mode not in FAULT_MODES:
        raise argparse.ArgumentTypeError(
            f"expected NODE=MODE with MODE one of {', '.join(FAULT_MODES)}, got {text!r}")
    return node, mode


def register(subparsers: Any) -> None:
    """Add the `simulate` subcommand to the top-level `kpp` parser."""
    defaults = SimConfig()
    p = subparsers.add_parser(
        "simulate", help="serve simulated kube-proxy /metrics for N nodes",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=_positive_int, default=3, help="number of nodes (default 3)")
    p.add_argument("--seed", default="0", help="RNG seed; same seed, same output (default 0)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"listen port, shared by all nodes (default {DEFAULT_PORT}; 0 = any free)")
    p.add_argument("--version", choices=catalogue.VERSIONS, default=catalogue.DEFAULT_VERSION,
                   dest="kube_version",
                   help=f"kube-proxy metrics shape (default {catalogue.DEFAULT_VERSION})")
    p.add_argument("--fault", type=_fault, action="append", default=[], metavar="NODE=MODE",
                   help="fault at start, repeatable; NODE may be 'all' (modes listed below)")
    p.add_argument("--slow-seconds", type=float, default=5.0,
                   help="response delay of the 'slow' fault (default 5)")
    p.add_argument("--sync-interval", type=float, default=defaults.sync_interval,
                   help=f"seconds between simulated syncs (default {defaults.sync_interval})")
    p.add_argument("--sync-jitter", type=float, default=defaults.sync_jitter,
                   help=f"+/- fraction of the interval (default {defaults.sync_jitter})")
    p.add_argument("--sync-latency-median", type=float, default=defaults.sync_latency_median,
                   help="median sync duration in seconds, log-normal "
                        f"(default {defaults.sync_latency_median})")
    p.add_argument("--sync-latency-sigma", type=float, default=defaults.sync_latency_sigma,
                   help=f"log-normal sigma of the sync duration (default "
                        f"{defaults.sync_latency_sigma})")
    p.add_argument("--netprog-latency-median", type=float,
                   default=defaults.netprog_latency_median,
                   help="median network programming latency in seconds, log-normal "
                        f"(default {defaults.netprog_latency_median})")
    p.add_argument("--netprog-latency-sigma", type=float, default=defaults.netprog_latency_sigma,
                   help=f"log-normal sigma of it (default {defaults.netprog_latency_sigma})")
    p.add_argument("--endpoint-change-rate", type=float, default=defaults.endpoint_change_rate,
                   help=f"mean endpoint changes per sync (default {defaults.endpoint_change_rate})")
    p.add_argument("--restore-failure-prob", type=float, default=defaults.restore_failure_prob,
                   help=f"iptables-restore failure probability per sync "
                        f"(default {defaults.restore_failure_prob})")
    p.add_argument("--partial-restore-failure-prob", type=float,
                   default=defaults.partial_restore_failure_prob,
                   help=f"partial restore failure probability per partial sync, 1.28+ "
                        f"(default {defaults.partial_restore_failure_prob})")
    p.add_argument("--healthz-probe-interval", type=float,
                   default=defaults.healthz_probe_interval,
                   help="seconds between simulated health probes feeding proxy_healthz_total; "
                        f"0 = never probed (default {defaults.healthz_probe_interval})")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """CLI flags -> SimConfig; invalid combinations become a ConfigError (one clear line)."""
    config = SimConfig(
        sync_interval=args.sync_interval, sync_jitter=args.sync_jitter,
        sync_latency_median=args.sync_latency_median, sync_latency_sigma=args.sync_latency_sigma,
        netprog_latency_median=args.netprog_latency_median,
        netprog_latency_sigma=args.netprog_latency_sigma,
        endpoint_change_rate=args.endpoint_change_rate,
        restore_failure_prob=args.restore_failure_prob,
        partial_restore_failure_prob=args.partial_restore_failure_prob,
        healthz_probe_interval=args.healthz_probe_interval)
    try:
        config.validate()
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return config


def build_cluster(args: argparse.Namespace, start: float) -> Cluster:
    """Cluster from CLI args, with --fault applied at the clock origin."""
    try:
        return Cluster(nodes=args.nodes, seed=args.seed, version=args.kube_version, start=start,
                       config=config_from_args(args), faults=dict(args.fault))
    except KeyError as exc:
        raise ConfigError(f"--fault: {exc.args[0]}") from exc


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; exit 0 cleanly."""
    if args.slow_seconds < 0:
        raise ConfigError("--slow-seconds must be >= 0")
    cluster = build_cluster(args, start=time.time())
    server = make_server(cluster, args.host, args.port, slow_seconds=args.slow_seconds)
    for node, mode in args.fault:
        log.info("fault at start: %s=%s", node, mode)
    print(f"simulating {args.nodes} kube-proxy nodes (version {args.kube_version}, "
          f"seed {args.seed}) at http://{args.host}:{server.port}/nodes/<node>/metrics",
          flush=True)
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
    sys.stdout.flush()
    return 0

"""kube-proxy simulator: realistic, deterministic kube-proxy /metrics for N nodes.

Pure API (no network) for tests and other stages:

    from simulator import Cluster, SimConfig
    cluster = Cluster(nodes=3, seed=7, version="1.28", start=1_700_000_000.0)
    text = cluster.render("node-000", at=1_700_000_060.0)      # the /metrics body
    samples = cluster.expected_samples("node-000", at=1_700_000_060.0)
    cluster.set_fault("node-001", "restart", at=1_700_000_070.0)

`kpp simulate` serves the same over HTTP: http://HOST:PORT/nodes/<node>/metrics (see
simulator.server for the whole URL scheme and simulator.model for the fault modes).
"""

from simulator.catalogue import DEFAULT_VERSION, VERSIONS, kubeproxy_families
from simulator.model import FAULT_MODES, Cluster, NodeModel, SimConfig, node_name
from simulator.promtext import CONTENT_TYPE, Family, Sample, render_families

__all__ = [
    "CONTENT_TYPE", "DEFAULT_VERSION", "FAULT_MODES", "VERSIONS", "Cluster", "Family",
    "NodeModel", "Sample", "SimConfig", "kubeproxy_families", "node_name", "render_families",
]

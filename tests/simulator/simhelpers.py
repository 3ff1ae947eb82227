"""Shared helpers for simulator tests: the real captures, a parser bridge, a loopback server.

A uniquely named module (not conftest) so `from simhelpers import ...` cannot pick up another
folder's conftest."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from simulator.model import Cluster
from simulator.promtext import Sample
from simulator.server import SimulatorServer, make_server

CAPTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kube-proxy"
CAPTURE_BY_VERSION = {"1.25": "v1.25.3-iptables.txt", "1.28": "v1.28.0-iptables.txt"}
START = 1_700_000_000.0

FlatSample = tuple[str, tuple[tuple[str, str], ...], float]


def capture_text(version: str) -> str:
    return (CAPTURES / CAPTURE_BY_VERSION[version]).read_text()


def norm_value(value: float) -> float | str:
    """NaN != NaN; compare it as a token."""
    return "NaN" if math.isnan(value) else value


def parsed_samples(text: str) -> list[FlatSample]:
    """What prometheus_client reads from an exposition body, flattened and label-sorted."""
    return [(s.name, tuple(sorted(s.labels.items())), norm_value(s.value))
            for fam in text_string_to_metric_families(text) for s in fam.samples]


def flat_expected(samples: list[Sample]) -> list[FlatSample]:
    return [(s.name, tuple(sorted(s.labels)), norm_value(s.value)) for s in samples]


def sample_map(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(n, labels): v for n, labels, v in parsed_samples(text)}


def header_lines(text: str) -> dict[str, tuple[str, str]]:
    """family name -> (HELP line, TYPE line) as written."""
    helps: dict[str, str] = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helps[line.split(" ", 3)[2]] = line
        elif line.startswith("# TYPE "):
            types[line.split(" ", 3)[2]] = line
    return {name: (helps.get(name, ""), types[name]) for name in types}


@dataclass
class FakeClock:
    """A clock the test moves by hand, so HTTP responses are reproducible."""

    t: float = START

    def __call__(self) -> float:
        return self.t


@dataclass
class Served:
    server: SimulatorServer
    cluster: Cluster
    clock: FakeClock

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"


@pytest.fixture
def served() -> Iterator[Served]:
    """A 4-node 1.28 cluster behind a real loopback server on a free port, fake clock."""
    clock = FakeClock()
    cluster = Cluster(nodes=4, seed=11, version="1.28", start=START)
    server = make_server(cluster, "127.0.0.1", 0, slow_seconds=0.5, clock=clock)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield Served(server, cluster, clock)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

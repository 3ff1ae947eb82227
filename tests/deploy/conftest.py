"""Pipeline output of every simulator scenario, written once per session into the stack's
VictoriaMetrics (each scenario under its own unique `cluster`)."""

from __future__ import annotations

import pytest

from tests.deploy.pipeline_data import SCENARIOS, Loaded, aligned_start, load

MINUTES = 40


@pytest.fixture(scope="session")
def scenarios(vm_url: str) -> dict[str, Loaded]:
    """name -> loaded scenario: 3 nodes, 40 simulated minutes ending ~80 minutes ago, the
    fault (if any) on node-001 from minute 10."""
    start = aligned_start(120)
    return {name: load(vm_url, scenario, start, MINUTES) for name, scenario in SCENARIOS.items()}

"""Shared fixtures. Integration tests use the stack `make test` started (`kpp stack up`);
when it is not there they FAIL, never skip: a green run must mean the real thing ran."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest

from contracts.kafka import KafkaConnection
from stack.kafka import broker_answers_metadata
from stack.settings import StackSettings
from stack.victoriametrics import VictoriaMetricsService

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "kube-proxy"


@pytest.fixture(scope="session")
def stack_settings() -> StackSettings:
    return StackSettings.from_env()


@pytest.fixture(scope="session")
def kafka(stack_settings: StackSettings) -> KafkaConnection:
    """The running broker's connection; fails the test when no broker answers."""
    bootstrap = stack_settings.kafka_bootstrap
    if not broker_answers_metadata(bootstrap, timeout=10):
        pytest.fail(f"no Kafka broker answers at {bootstrap}: start it with `kpp stack up` (make test does)")
    return KafkaConnection(bootstrap=bootstrap)


@pytest.fixture(scope="session")
def vm_url(stack_settings: StackSettings) -> str:
    if not VictoriaMetricsService(stack_settings).healthy(timeout=5):
        pytest.fail(f"VictoriaMetrics does not answer at {stack_settings.vm_url}: start it with `kpp stack up`")
    return stack_settings.vm_url


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> str:
    """A fresh topic name per test, so tests never see each other's messages."""
    return f"test.{request.node.name[:40]}.{uuid.uuid4().hex[:8]}".replace("[", "-").replace("]", "")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

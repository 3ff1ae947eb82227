"""Shared fixtures. Integration tests use the stack `make test` started (`kpp stack up`);
when it is not there they FAIL, never skip: a green run must mean the real thing ran."""

from __future__ import annotations

import contextlib
import shutil
import socket
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from kafka_io.connection import KafkaConnection
from stack.kafka import KafkaService, broker_answers_metadata
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


def consume(connection: KafkaConnection, topic: str, count: int, timeout: float = 30.0,
            settle: float = 1.5) -> list[tuple[bytes, bytes]]:
    """Read the topic from the start until `count` messages arrived (then `settle` seconds more,
    to see duplicates) or `timeout`."""
    consumer = KafkaConsumer(topic, **connection.kafka_python_kwargs(), auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None)
    out: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + timeout
    settle_until: float | None = None
    try:
        while time.monotonic() < deadline and (settle_until is None or time.monotonic() < settle_until):
            for records in consumer.poll(timeout_ms=200).values():
                out.extend((r.key, r.value) for r in records)
            if settle_until is None and len(out) >= count:
                settle_until = time.monotonic() + settle
    finally:
        consumer.close()
    return out


def wait_until(predicate, timeout: float) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@contextlib.contextmanager
def running_kafka(settings: StackSettings, stack_settings: StackSettings):  # noqa: ANN201
    """Start a Kafka of its own (state folder and ports from `settings`), stop it afterwards."""
    service = KafkaService(settings)
    # Reuse the main stack's resolved jars when it has them (saves a Maven run); the stamp
    # makes ensure_jars() check them as usual.
    main_libs = KafkaService(stack_settings).libs
    if (main_libs / ".pom-sha256").is_file():
        shutil.copytree(main_libs, service.libs)
    service.up()
    try:
        yield service
    finally:
        service.down()


@pytest.fixture
def private_kafka(tmp_path: Path, stack_settings: StackSettings):  # noqa: ANN201
    """A second, private Kafka with its own state folder and ports, stopped afterwards."""
    settings = StackSettings.from_env({
        "KPP_STATE_DIR": str(tmp_path / "state"),
        "KPP_KAFKA_PORT": str(free_port()),
        "KPP_KAFKA_CONTROLLER_PORT": str(free_port()),
    })
    with running_kafka(settings, stack_settings) as service:
        yield service


# A test that asks for a real broker or store crosses a process boundary, whatever its
# decorators say: mark it so `-m "not integration"` never needs the stack.
_SERVICE_FIXTURES = frozenset({"kafka", "vm_url", "private_kafka"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)

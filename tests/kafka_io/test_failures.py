"""A Kafka client's exception becomes one line naming the broker, the cause and the fix, with
the exit code of its kind; --kafka-timeout bounds how long a command waits."""

from __future__ import annotations

import argparse
import socket

import pytest
from aiokafka.errors import NoBrokersAvailable
from kafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaTimeoutError,
    PolicyViolationError,
    SaslAuthenticationFailedError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)

from contracts.errors import ConfigError, KppError
from kafka_io.connection import (
    DEFAULT_TIMEOUT_S,
    KafkaAuthenticationError,
    KafkaAuthorizationError,
    KafkaConnection,
    KafkaRequestError,
    KafkaTopicMissingError,
    KafkaUnavailableError,
    Secret,
    failure_kind,
    is_client_error,
    probe_address,
)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    KafkaConnection.add_cli_arguments(parser)
    return parser.parse_args(argv)


def test_timeout_defaults_to_at_most_15_s_and_comes_from_flag_or_environment() -> None:
    assert KafkaConnection.from_sources(parse([]), env={}).timeout_s == DEFAULT_TIMEOUT_S <= 15
    assert KafkaConnection.from_sources(parse([]), env={"KAFKA_TIMEOUT": "4"}).timeout_s == 4.0
    assert KafkaConnection.from_sources(parse(["--kafka-timeout", "2.5"]), env={"KAFKA_TIMEOUT": "4"}).timeout_s == 2.5


@pytest.mark.parametrize("value", ["soon", "0", "-3"])
def test_a_bad_timeout_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError, match="--kafka-timeout|KAFKA_TIMEOUT"):
        KafkaConnection.from_sources(parse(["--kafka-timeout", value]), env={})


@pytest.mark.parametrize("exc, kind", [
    (KafkaTimeoutError("Unable to bootstrap from ['h:1']"), "unreachable"),
    (NoBrokersAvailable(), "unreachable"),
    (KafkaConnectionError("socket disconnected"), "unreachable"),
    (ConnectionRefusedError(111, "Connection refused"), "unreachable"),
    (SaslAuthenticationFailedError("Authentication failed"), "authentication"),
    (TopicAuthorizationFailedError("kube-proxy.samples"), "authorization"),
    (GroupAuthorizationFailedError("kpp-sink"), "authorization"),
    (UnknownTopicOrPartitionError(), "topic"),
    (PolicyViolationError("retention too long"), "refused"),
])
def test_failure_kinds(exc: BaseException, kind: str) -> None:
    assert failure_kind(exc) == kind


def test_client_errors_are_told_from_our_bugs() -> None:
    assert is_client_error(KafkaTimeoutError("x"))
    try:
        try:
            raise TopicAuthorizationFailedError("t")
        except TopicAuthorizationFailedError:
            raise RuntimeError("wrapped")  # noqa: B904 - the chain is what is looked at
    except RuntimeError as exc:
        assert is_client_error(exc)
    assert not is_client_error(KeyError("a bug of ours"))


def connection() -> KafkaConnection:
    return KafkaConnection(bootstrap=f"127.0.0.1:{closed_port()}", timeout_s=1)


@pytest.mark.parametrize("exc, error, code, words", [
    (KafkaTimeoutError("Unable to bootstrap"), KafkaUnavailableError, 3,
     ("no broker answered", "connection refused", "--kafka-bootstrap")),
    (TopicAuthorizationFailedError("kube-proxy.samples"), KafkaAuthorizationError, 3,
     ("not authorized", "ACLs")),
    (UnknownTopicOrPartitionError(), KafkaTopicMissingError, 3, ("does not exist", "kpp topics ensure")),
    (PolicyViolationError("retention"), KafkaRequestError, 3, ("refused a request", "broker's log")),
])
def test_failure_is_one_line_with_broker_cause_and_fix(exc, error, code, words) -> None:
    conn = connection()
    failure = conn.failure(exc, topic="kube-proxy.samples")
    text = str(failure)
    assert type(failure) is error and failure.exit_code == code
    assert "\n" not in text and text.startswith(f"Kafka at {conn.bootstrap}")
    for word in words:
        assert word in text


def test_refused_credentials_keep_their_own_exit_code_and_hide_the_password() -> None:
    conn = KafkaConnection(bootstrap=f"127.0.0.1:{closed_port()}", security_protocol="SASL_PLAINTEXT",
                           sasl_username="kpp", sasl_password=Secret("hunter2-long"))
    failure = conn.failure(SaslAuthenticationFailedError("Authentication failed for hunter2-long"))
    assert isinstance(failure, KafkaAuthenticationError) and failure.exit_code == 4
    assert "hunter2-long" not in str(failure) and "'kpp'" in str(failure)
    assert isinstance(failure, KppError)


def test_probe_names_what_a_tcp_connect_finds() -> None:
    port = closed_port()
    assert probe_address(f"127.0.0.1:{port}", 1.0) == f"127.0.0.1:{port}: connection refused"
    assert "does not resolve" in probe_address("no-such-host.invalid:9092", 1.0)
    assert "not HOST:PORT" in probe_address("kafka", 1.0)
    with socket.create_server(("127.0.0.1", 0)) as server:
        address = f"127.0.0.1:{server.getsockname()[1]}"
        assert "accepts TCP connections but gave no Kafka answer" in probe_address(address, 1.0)


def test_check_of_a_closed_port_gives_up_within_the_timeout() -> None:
    import time

    conn = connection()
    started = time.monotonic()
    with pytest.raises(KafkaUnavailableError) as caught:
        conn.check()
    assert time.monotonic() - started < conn.timeout_s + 3.0
    assert caught.value.exit_code == 3 and "connection refused" in str(caught.value)

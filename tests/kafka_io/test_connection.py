from __future__ import annotations

import argparse
import logging
import subprocess
from pathlib import Path

import faust
import pytest

from contracts.errors import ConfigError
from kafka_io.connection import KafkaConnection

PASSWORD = "s3cr3t-Pa55"


def make_ca(tmp_path: Path) -> Path:
    ca = tmp_path / "ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
                    "-keyout", str(tmp_path / "ca.key"), "-out", str(ca)], check=True, capture_output=True)
    return ca


def test_defaults_are_plaintext_local() -> None:
    conn = KafkaConnection.from_env({})
    assert conn.bootstrap == "127.0.0.1:9092"
    assert conn.kafka_python_kwargs() == {"bootstrap_servers": ["127.0.0.1:9092"], "security_protocol": "PLAINTEXT"}
    assert conn.faust_settings() == {"broker": "kafka://127.0.0.1:9092"}


def test_flags_override_environment() -> None:
    args = argparse.Namespace(kafka_bootstrap="a:1,b:2")
    conn = KafkaConnection.from_sources(args, {"KAFKA_BOOTSTRAP": "env:9"})
    assert conn.bootstrap_list == ["a:1", "b:2"]
    assert conn.aiokafka_kwargs()["bootstrap_servers"] == "a:1,b:2"
    assert conn.faust_settings()["broker"] == "kafka://a:1;kafka://b:2"


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_ssl_maps_onto_every_client(tmp_path: Path, mechanism: str, caplog) -> None:
    ca = make_ca(tmp_path)
    secret_file = tmp_path / "password"
    secret_file.write_text(PASSWORD + "\n")
    env = {"KAFKA_BOOTSTRAP": "k:9093", "KAFKA_SECURITY_PROTOCOL": "sasl_ssl", "KAFKA_SASL_MECHANISM": mechanism,
           "KAFKA_SASL_USERNAME": "pipeline", "KAFKA_SASL_PASSWORD_FILE": str(secret_file),
           "KAFKA_SSL_CAFILE": str(ca)}
    conn = KafkaConnection.from_env(env)
    kp = conn.kafka_python_kwargs()
    assert kp["security_protocol"] == "SASL_SSL" and kp["sasl_mechanism"] == mechanism
    assert kp["sasl_plain_username"] == "pipeline" and kp["sasl_plain_password"] == PASSWORD
    assert kp["ssl_context"] is not None
    creds = conn.faust_settings()["broker_credentials"]
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.username == "pipeline" and creds.password == PASSWORD
    assert creds.ssl_context is not None and str(creds.mechanism.value) == mechanism
    # The secret never shows in repr, describe() or logs of the object.
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("t").info("connection %r / %s", conn, conn.describe())
    for text in (repr(conn), str(conn), conn.describe(), caplog.text):
        assert PASSWORD not in text


def test_ssl_with_client_certificate(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    conn = KafkaConnection(bootstrap="k:9093", security_protocol="SSL", ssl_cafile=str(ca),
                           ssl_certfile=str(ca), ssl_keyfile=str(tmp_path / "ca.key"))
    assert conn.kafka_python_kwargs()["ssl_context"] is not None
    assert isinstance(conn.faust_settings()["broker_credentials"], faust.SSLCredentials)


@pytest.mark.parametrize(
    "env, message",
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "is not one of"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "u"}, "needs a username and a password"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "GSSAPI",
          "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"}, "SASL mechanism 'GSSAPI'"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "does not exist"),
        ({"KAFKA_SASL_PASSWORD_FILE": "/nonexistent/pw"}, "cannot read Kafka SASL password file"),
    ],
)
def test_bad_settings_are_clear(env, message) -> None:
    with pytest.raises(ConfigError, match=message):
        KafkaConnection.from_env(env)

"""No secret in any log line: the configured SASL password, and any `password` item of a client
library's configuration dump, are replaced by *** in every record our handlers print."""

from __future__ import annotations

import io
import logging
import os
import secrets
import subprocess
import sys

import pytest

from kafka_io.connection import REDACTED, KafkaConnection, RedactSecrets, Secret, redact_secrets
from tests.conftest import REPO


@pytest.fixture
def captured():  # noqa: ANN201
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecrets())
    logger = logging.getLogger(f"test.redaction.{secrets.token_hex(4)}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def test_a_configured_password_is_redacted_wherever_it_appears(captured) -> None:  # noqa: ANN001
    logger, stream = captured
    password = f"pw-{secrets.token_hex(8)}"
    Secret(password)
    logger.debug("connecting with %s", password)
    logger.info("config %r", {"sasl_plain_password": password})
    try:
        raise ValueError(f"login refused for {password}")
    except ValueError:
        logger.exception("failed")
    text = stream.getvalue()
    assert password not in text
    assert text.count(REDACTED) == 3 and "login refused for ***" in text


@pytest.mark.parametrize("dump, expected", [
    ("configuration: {'sasl_plain_password': 'hunter2', 'client_id': 'x'}",
     "configuration: {'sasl_plain_password': '***', 'client_id': 'x'}"),
    ("Config(sasl_plain_password=\"it's\", ssl_password=hunter2)",
     "Config(sasl_plain_password=\"***\", ssl_password=***)"),
    ('{"password": "a\\"b", "user": "u"}', '{"password": "***", "user": "u"}'),
    ("no secret here", "no secret here"),
])
def test_password_items_of_config_dumps_are_redacted(dump: str, expected: str) -> None:
    assert redact_secrets(dump) == expected


def test_the_connection_registers_its_password_as_a_secret() -> None:
    password = f"pw-{secrets.token_hex(8)}"
    KafkaConnection.from_sources(None, env={"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                                            "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": password})
    assert redact_secrets(f"x{password}y") == f"x{REDACTED}y"


@pytest.mark.integration
@pytest.mark.parametrize("command", [["sink", "--listen", ""], ["stream", "--web-port", "0"]])
def test_debug_logs_of_a_real_run_never_show_the_sasl_password(command: list[str], kafka: KafkaConnection,
                                                               tmp_path) -> None:  # noqa: ANN001
    """`kpp --log-level DEBUG` with a SASL password against a plaintext broker: the login fails
    (exit 4) after kafka-python logged its whole configuration, password included."""
    password = f"pw-{secrets.token_hex(12)}"
    env = os.environ | {"KAFKA_BOOTSTRAP": kafka.bootstrap, "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                        "KAFKA_SASL_USERNAME": "kpp-test", "KAFKA_SASL_PASSWORD": password,
                        "KPP_STATE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "kpp", "--log-level", "DEBUG", *command],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 4, output[-3000:]
    assert "Starting KafkaAdminClient with configuration" in output  # the dump was logged
    assert f"'sasl_plain_password': '{REDACTED}'" in output
    assert password not in output

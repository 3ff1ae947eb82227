"""The one Kafka connection setting every stage shares, mapped once onto kafka-python
(producers, sinks, tools) and aiokafka/Faust (stream workers).

Sources, highest first: command-line flags, environment variables, defaults.

| flag                        | environment                 | default          |
|-----------------------------|-----------------------------|------------------|
| --kafka-bootstrap           | KAFKA_BOOTSTRAP             | 127.0.0.1:9092   |
| --kafka-security-protocol   | KAFKA_SECURITY_PROTOCOL     | PLAINTEXT        |
| --kafka-sasl-mechanism      | KAFKA_SASL_MECHANISM        | PLAIN            |
| --kafka-sasl-username       | KAFKA_SASL_USERNAME         |                  |
| --kafka-sasl-password-file  | KAFKA_SASL_PASSWORD(_FILE)  |                  |
| --kafka-ssl-cafile          | KAFKA_SSL_CAFILE            | system CAs       |
| --kafka-ssl-certfile        | KAFKA_SSL_CERTFILE          |                  |
| --kafka-ssl-keyfile         | KAFKA_SSL_KEYFILE           |                  |

The password is only ever read from the environment or a file (never a flag, which `ps`
shows), and no repr, log line or error message contains it.
"""

from __future__ import annotations

import argparse
import os
import ssl
from dataclasses import dataclass
from typing import Any, Mapping

from contracts.errors import ConfigError

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class Secret:
    """A string that never shows itself in repr/str (and so in logs or tracebacks)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, kw_only=True)
class KafkaConnection:
    bootstrap: str = DEFAULT_BOOTSTRAP
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    def __post_init__(self) -> None:
        if not self.bootstrap.strip():
            raise ConfigError("Kafka bootstrap servers are empty (set --kafka-bootstrap or KAFKA_BOOTSTRAP)")
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(
                f"Kafka security protocol {self.security_protocol!r} is not one of {', '.join(SECURITY_PROTOCOLS)}"
            )
        if self.uses_sasl:
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise ConfigError(
                    f"SASL mechanism {self.sasl_mechanism!r} is not one of {', '.join(SASL_MECHANISMS)}"
                )
            if not self.sasl_username or self.sasl_password is None:
                raise ConfigError(
                    f"{self.security_protocol} needs a username and a password "
                    "(KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE)"
                )
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ConfigError("a Kafka SSL key file needs its certificate file (KAFKA_SSL_CERTFILE)")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                raise ConfigError(f"Kafka {name.replace('_', ' ')} {path!r} does not exist")

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "KafkaConnection":
        return cls.from_sources(env=env)

    @classmethod
    def from_sources(
        cls, args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None
    ) -> "KafkaConnection":
        env = os.environ if env is None else env

        def pick(flag: str, var: str, default: str | None = None) -> str | None:
            value = getattr(args, flag, None) if args is not None else None
            if value:
                return value
            return env.get(var) or default

        password: str | None = env.get("KAFKA_SASL_PASSWORD") or None
        password_file = pick("kafka_sasl_password_file", "KAFKA_SASL_PASSWORD_FILE")
        if password_file:
            try:
                with open(password_file, encoding="utf-8") as fh:
                    password = fh.read().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read Kafka SASL password file {password_file!r}: {exc.strerror}") from None
        return cls(
            bootstrap=pick("kafka_bootstrap", "KAFKA_BOOTSTRAP", DEFAULT_BOOTSTRAP) or DEFAULT_BOOTSTRAP,
            security_protocol=(pick("kafka_security_protocol", "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT") or "").upper(),
            sasl_mechanism=(pick("kafka_sasl_mechanism", "KAFKA_SASL_MECHANISM", "PLAIN") or "").upper(),
            sasl_username=pick("kafka_sasl_username", "KAFKA_SASL_USERNAME"),
            sasl_password=Secret(password) if password is not None else None,
            ssl_cafile=pick("kafka_ssl_cafile", "KAFKA_SSL_CAFILE"),
            ssl_certfile=pick("kafka_ssl_certfile", "KAFKA_SSL_CERTFILE"),
            ssl_keyfile=pick("kafka_ssl_keyfile", "KAFKA_SSL_KEYFILE"),
        )

    @staticmethod
    def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group(
            "Kafka connection (flags override KAFKA_* environment variables)"
        )
        group.add_argument("--kafka-bootstrap", metavar="HOST:PORT[,...]",
                           help=f"bootstrap servers (env KAFKA_BOOTSTRAP, default {DEFAULT_BOOTSTRAP})")
        group.add_argument("--kafka-security-protocol", choices=SECURITY_PROTOCOLS,
                           help="env KAFKA_SECURITY_PROTOCOL, default PLAINTEXT")
        group.add_argument("--kafka-sasl-mechanism", choices=SASL_MECHANISMS,
                           help="env KAFKA_SASL_MECHANISM, default PLAIN")
        group.add_argument("--kafka-sasl-username", metavar="USER", help="env KAFKA_SASL_USERNAME")
        group.add_argument("--kafka-sasl-password-file", metavar="FILE",
                           help="file holding the SASL password (env KAFKA_SASL_PASSWORD_FILE; "
                                "or KAFKA_SASL_PASSWORD)")
        group.add_argument("--kafka-ssl-cafile", metavar="FILE", help="CA bundle (env KAFKA_SSL_CAFILE)")
        group.add_argument("--kafka-ssl-certfile", metavar="FILE",
                           help="client certificate (env KAFKA_SSL_CERTFILE)")
        group.add_argument("--kafka-ssl-keyfile", metavar="FILE", help="client key (env KAFKA_SSL_KEYFILE)")

    # -- mapping onto clients -----------------------------------------------------------

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def bootstrap_list(self) -> list[str]:
        return [s.strip() for s in self.bootstrap.split(",") if s.strip()]

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.uses_ssl:
            return None
        try:
            context = ssl.create_default_context(cafile=self.ssl_cafile)
            if self.ssl_certfile:
                context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load Kafka TLS files: {exc}") from None
        return context

    def kafka_python_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python's KafkaProducer/KafkaConsumer/KafkaAdminClient."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_list,
            "security_protocol": self.security_protocol,
        }
        if self.uses_ssl:
            kwargs["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password.reveal() if self.sasl_password else None
        return kwargs

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's AIOKafkaProducer/AIOKafkaConsumer."""
        # aiokafka takes the same names as kafka-python (it started as its port).
        return self.kafka_python_kwargs() | {"bootstrap_servers": ",".join(self.bootstrap_list)}

    def faust_settings(self) -> dict[str, Any]:
        """`broker` and `broker_credentials` for faust.App(...)."""
        import faust  # imported here: producers and sinks do not need Faust loaded

        settings: dict[str, Any] = {"broker": ";".join(f"kafka://{b}" for b in self.bootstrap_list)}
        if self.uses_sasl:
            settings["broker_credentials"] = faust.SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password.reveal() if self.sasl_password else None,
                ssl_context=self.ssl_context(),
                mechanism=self.sasl_mechanism,
            )
        elif self.uses_ssl:
            settings["broker_credentials"] = faust.SSLCredentials(self.ssl_context())
        return settings

    def describe(self) -> str:
        """For logs: where and how we connect, never with what secret."""
        who = f" as {self.sasl_username} ({self.sasl_mechanism})" if self.uses_sasl else ""
        return f"{self.bootstrap} [{self.security_protocol}]{who}"

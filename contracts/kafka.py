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

Why a client cannot connect: kafka-python 3 retries a refused SASL login or a failed TLS
handshake until its bootstrap timeout and then raises only "Unable to bootstrap"; the cause
is in its log records alone. `capture_client_failures()` (installed by `kpp`) keeps the
latest authentication/TLS failure out of those records without printing them, and
`KafkaConnection.explain()` / `.check()` put it into one line a person can act on.

This module imports no Kafka client at import time: the pure modules (windows, quantiles,
parser, encoders) import `contracts` without loading one.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import re
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping

from contracts.errors import ConfigError, KppError

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class KafkaUnavailableError(KppError):
    """No broker answered (down, wrong address, TLS or authentication failure)."""

    exit_code = 3


class KafkaAuthenticationError(KafkaUnavailableError):
    """The broker refused the SASL credentials (or the TLS handshake failed)."""

    exit_code = 4


class _ClientFailures(logging.Handler):
    """Remembers the latest authentication or TLS failure a Kafka client logged; prints
    nothing itself (CRITICAL records are passed on to the root logger)."""

    RECENT_S = 120.0

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self._lock_ = threading.Lock()
        self._last: tuple[str, str, float] | None = None  # (kind, text, monotonic time)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            found = _classify_record(record)
            if found is not None:
                with self._lock_:
                    self._last = (*found, time.monotonic())
            if record.levelno >= logging.CRITICAL:
                logging.getLogger().handle(record)
        except Exception:  # noqa: BLE001 - a log handler must never raise into the client
            pass

    def recent(self, since: float | None = None) -> tuple[str, str] | None:
        with self._lock_:
            last = self._last
        if last is None or time.monotonic() - last[2] > self.RECENT_S:
            return None
        if since is not None and last[2] < since:
            return None
        return last[0], last[1]

    def clear(self) -> None:
        with self._lock_:
            self._last = None


CLIENT_FAILURES = _ClientFailures()


def capture_client_failures(*logger_names: str, show_below_critical: bool = False) -> None:
    """Route the Kafka client libraries' records (kafka-python: `kafka`; aiokafka) through
    CLIENT_FAILURES: their WARNING/ERROR records stay out of our logs (one per reconnect is a
    storm) but the cause of a failed connection is kept. With `show_below_critical` (DEBUG
    runs) they are printed as well."""
    for name in logger_names or ("kafka", "aiokafka"):
        logger = logging.getLogger(name)
        if CLIENT_FAILURES not in logger.handlers:
            logger.addHandler(CLIENT_FAILURES)
        if not show_below_critical:
            logger.setLevel(logging.WARNING)
            logger.propagate = False


def _classify_record(record: logging.LogRecord) -> tuple[str, str] | None:
    candidates: list[BaseException] = []
    args = record.args if isinstance(record.args, tuple) else (record.args,) if record.args else ()
    candidates.extend(a for a in args if isinstance(a, BaseException))
    if record.exc_info and record.exc_info[1] is not None:
        candidates.append(record.exc_info[1])
    for exc in candidates:
        found = classify_exception(exc)
        if found is not None:
            return found
    text = record.getMessage() if not candidates else ""
    if "SaslAuthenticationFailed" in text or "Authentication failed" in text:
        return "authentication", text
    return None


def classify_exception(exc: BaseException) -> tuple[str, str] | None:
    """("authentication" | "tls", text) for a failed login or TLS handshake, else None."""
    seen = 0
    while exc is not None and seen < 5:
        name = type(exc).__name__
        if "Authentication" in name or "UnsupportedSaslMechanism" in name or "IllegalSaslState" in name:
            return "authentication", str(exc) or name
        if isinstance(exc, ssl.SSLError):
            return "tls", str(exc) or name
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        seen += 1
    return None


@functools.cache
def sender_client_class() -> type:
    """kafka-python's client class for our KafkaProducers, handed to each through its
    documented `kafka_client=` option (no process-wide patch).

    kafka-python 3.0.x: `KafkaNetClient.connection_delay` forwards the connection manager's
    value, which is in SECONDS, but the producer's Sender adds it to its poll timeout as
    MILLISECONDS. While a broker is down the sender therefore re-polls every few
    milliseconds: ~3.5 % of a core per producer, which on a small machine with many producers
    starves the broker that is trying to restart. This class returns milliseconds, computed
    from the manager's seconds, so it stays right if the library fixes its own method.
    Consumers and admin clients keep the stock class (they only compare the value with 0).
    No upstream report of this KafkaNetClient regression was found; the same unit bug in the
    client before 3.0 was https://github.com/dpkp/kafka-python/issues/1413 (fixed by
    https://github.com/dpkp/kafka-python/pull/1414)."""
    from kafka.net.compat import KafkaNetClient

    class MillisecondDelayClient(KafkaNetClient):
        def connection_delay(self, node_id):  # noqa: ANN001, ANN201 - kafka-python's signature
            manager = getattr(self, "_manager", None)
            if manager is None:  # another client layout: its own answer
                return super().connection_delay(node_id)
            return manager.connection_delay(node_id) * 1000.0

    return MillisecondDelayClient


# Every secret value this process was configured with (a Secret registers itself): the log
# filter below removes them from any record, whoever logged it.
_known_secrets: tuple[str, ...] = ()  # longest first; replaced whole, so readers need no lock
_KNOWN_SECRETS_LOCK = threading.Lock()
# `'sasl_plain_password': 'x'`, `sasl_plain_password='x'`, `ssl_password=x`: the shapes of the
# config dumps of kafka-python (KafkaAdminClient logs its whole configuration at DEBUG) and of
# reprs of client settings.
_PASSWORD_ITEM = re.compile(
    r"""(?P<key>['"]?[A-Za-z_]*password[A-Za-z_]*['"]?\s*[:=]\s*)"""
    r"""(?P<value>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s,})\]]+)""",
    re.IGNORECASE)
REDACTED = "***"
# Shorter values are not replaced everywhere (a one-letter password would garble every line);
# config dumps are redacted by their `password` items whatever the length.
MIN_REDACTED_SECRET = 4


def redact_secrets(text: str) -> str:
    """`text` without any known secret value nor any `password` item of a config dump."""
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    if "password" in text.lower():
        text = _PASSWORD_ITEM.sub(_redact_item, text)
    return text


def _redact_item(match: re.Match) -> str:
    quote = match["value"][0] if match["value"][0] in "'\"" else ""
    return f"{match['key']}{quote}{REDACTED}{quote}"


class RedactSecrets(logging.Filter):
    """A handler filter (logging's documented hook, no library patched) that removes secrets
    from every record the handler prints, including records of kafka-python, aiokafka and
    Faust that propagate to it: the message, its arguments, a traceback and a stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is the handler's to report
            return True
        redacted = redact_secrets(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_secrets(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_secrets(record.stack_info)
        return True


def redact_secrets_in_logs(*handlers: logging.Handler) -> None:
    """Attach RedactSecrets to `handlers` (default: the root logger's, where every record that
    is printed ends up)."""
    for handler in handlers or tuple(logging.getLogger().handlers):
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(RedactSecrets())


class Secret:
    """A string that never shows itself in repr/str (and so in logs or tracebacks)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        if len(value) >= MIN_REDACTED_SECRET:
            global _known_secrets
            with _KNOWN_SECRETS_LOCK:
                _known_secrets = tuple(sorted({*_known_secrets, value}, key=len, reverse=True))

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

    def kafka_producer_kwargs(self) -> dict[str, Any]:
        """kafka_python_kwargs() for a KafkaProducer: with the client class whose reconnect
        delay the Sender reads in the right unit (sender_client_class)."""
        return self.kafka_python_kwargs() | {"kafka_client": sender_client_class()}

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

    def explain(self, exc: BaseException | None = None, since: float | None = None) -> str:
        """One line on why a client of this connection failed: the authentication or TLS
        failure the client libraries logged (when there was one since `since`, monotonic),
        else the exception itself. Never contains the password."""
        found = classify_exception(exc) if exc is not None else None
        found = found or CLIENT_FAILURES.recent(since)
        if found is not None and found[0] == "authentication":
            text = (f"authentication failed: the broker refused {self.sasl_mechanism} user "
                    f"{self.sasl_username!r} ({_strip_prefix(found[1])}); check KAFKA_SASL_USERNAME and "
                    "the password (KAFKA_SASL_PASSWORD_FILE or KAFKA_SASL_PASSWORD)") if self.uses_sasl else \
                f"authentication failed ({_strip_prefix(found[1])})"
        elif found is not None:
            text = (f"TLS handshake failed ({found[1]}); check KAFKA_SSL_CAFILE (the CA that signed the "
                    "broker's certificate) and the bootstrap host name")
        elif exc is not None:
            name, message = type(exc).__name__, str(exc)
            text = message if message.startswith(name) else f"{name}: {message}" if message else name
        else:
            text = "no broker answered"
        return self._redact(text)

    def check(self, timeout_s: float = 15.0) -> None:
        """Connect once and fetch cluster metadata; raise KafkaAuthenticationError (refused
        credentials, failed TLS handshake) or KafkaUnavailableError with one clear line."""
        logger = logging.getLogger("kafka")
        saved = None
        if CLIENT_FAILURES not in logger.handlers:  # not under `kpp`: capture for this check only
            saved = (logger.level, logger.propagate)
            logger.addHandler(CLIENT_FAILURES)
            if not logger.isEnabledFor(logging.WARNING):
                logger.setLevel(logging.WARNING)
                logger.propagate = False
        try:
            self._check(timeout_s)
        finally:
            if saved is not None:
                logger.removeHandler(CLIENT_FAILURES)
                logger.setLevel(saved[0])
                logger.propagate = saved[1]

    def _check(self, timeout_s: float) -> None:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        started = time.monotonic()
        deadline = started + timeout_s
        while True:
            # short attempts: a refused login is final, no need to wait out the whole timeout
            attempt_s = max(0.5, min(3.0, deadline - time.monotonic()))
            admin = None
            try:
                admin = KafkaAdminClient(**self.kafka_python_kwargs(), client_id="kpp-connection-check",
                                         bootstrap_timeout_ms=int(attempt_s * 1000),
                                         request_timeout_ms=int(max(attempt_s, 5.0) * 1000))
                admin.describe_cluster()
                return
            except (KafkaError, OSError, ValueError) as exc:
                reason = self.explain(exc, since=started)
                final = reason.startswith(("authentication failed", "TLS"))
                if final or time.monotonic() >= deadline:
                    error = KafkaAuthenticationError if final else KafkaUnavailableError
                    raise error(f"Kafka at {self.describe()}: {reason}") from None
            finally:
                if admin is not None:
                    admin.close()

    def _redact(self, text: str) -> str:
        if self.sasl_password is not None and self.sasl_password.reveal():
            text = text.replace(self.sasl_password.reveal(), "***")
        return text

    def describe(self) -> str:
        """For logs: where and how we connect, never with what secret."""
        who = f" as {self.sasl_username} ({self.sasl_mechanism})" if self.uses_sasl else ""
        return f"{self.bootstrap} [{self.security_protocol}]{who}"


def _strip_prefix(text: str) -> str:
    """kafka-python repeats the class name: "[Error 58] SaslAuthenticationFailedError:
    SaslAuthenticationFailedError: Authentication failed ..." -> "Authentication failed ..."."""
    head, sep, tail = text.rpartition("Error: ")
    return tail if sep and tail else text

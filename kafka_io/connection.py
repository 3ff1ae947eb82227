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
| --kafka-timeout             | KAFKA_TIMEOUT               | 15 (seconds)     |

The password is only ever read from the environment or a file (never a flag, which `ps`
shows), and no repr, log line or error message contains it.

Why a client cannot connect: kafka-python 3 retries a refused SASL login or a failed TLS
handshake until its bootstrap timeout and then raises only "Unable to bootstrap"; the cause
is in its log records alone. `capture_client_failures()` (installed by `kpp`) keeps the
latest authentication/TLS failure out of those records without printing them, and
`KafkaConnection.explain()` / `.check()` put it into one line a person can act on.

Every command that needs Kafka calls `check()` first: within --kafka-timeout it stops with one
line naming the broker, the cause and the fix — exit 3 for an unreachable broker, a missing
topic or a refused authorization, exit 4 for refused credentials or a failed TLS handshake.
`KafkaConnection.failure()` turns a client library's exception raised later into the same line.
Only `kpp produce` does not stop: it spools while Kafka is away.

This module imports no Kafka client at import time: the pure modules (windows, quantiles,
parser, encoders) never load one.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

from contracts.errors import ConfigError, KppError

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
DEFAULT_TIMEOUT_S = 15.0
UNREACHABLE_FIX = "check that Kafka runs there and that --kafka-bootstrap (KAFKA_BOOTSTRAP) names its listener"


class KafkaUnavailableError(KppError):
    """No broker answered (down, wrong address, TLS or authentication failure)."""

    exit_code = 3


class KafkaAuthenticationError(KafkaUnavailableError):
    """The broker refused the SASL credentials (or the TLS handshake failed): a code of its
    own, so that a deployment can tell a wrong secret from a broker that is down."""

    exit_code = 4


class KafkaAuthorizationError(KppError):
    """The broker's ACLs refused an operation (topic, group or cluster authorization)."""

    exit_code = 3


class KafkaRequestError(KppError):
    """The broker answered with an error of another kind (policy, quota, invalid request)."""

    exit_code = 3


class KafkaTopicMissingError(KppError):
    """A topic the command reads does not exist."""

    exit_code = 3


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


@contextlib.contextmanager
def client_failures_captured(logger_name: str, *, show_from: int) -> Iterator[None]:
    """While the block runs, CLIENT_FAILURES keeps the client library's records (the cause of
    a refused login or TLS handshake is only there), unless the process routes them there
    already (`kpp` does). Records are still printed where the logger is enabled for
    `show_from`; otherwise they are kept back at WARNING and up, not printed."""
    logger = logging.getLogger(logger_name)
    if CLIENT_FAILURES in logger.handlers:
        yield
        return
    saved = (logger.level, logger.propagate)
    logger.addHandler(CLIENT_FAILURES)
    if not logger.isEnabledFor(show_from):
        logger.setLevel(logging.WARNING)
        logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(CLIENT_FAILURES)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


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


def failure_kind(exc: BaseException) -> str:
    """What a Kafka client's exception means for the person running the command:
    "authentication" | "tls" | "authorization" | "topic" (a missing topic) | "unreachable" |
    "refused" (any other error the broker answered with)."""
    found = classify_exception(exc)
    if found is not None:
        return found[0]
    names = {type(e).__name__ for e in _chain(exc)}
    if any("AuthorizationFailed" in n or n == "AuthorizationError" for n in names):
        return "authorization"
    if names & {"UnknownTopicOrPartitionError", "UnknownTopicIdError"}:
        return "topic"
    if names & _UNREACHABLE or any(isinstance(e, OSError) for e in _chain(exc)):
        return "unreachable"
    return "refused"


# kafka-python's and aiokafka's names for "no broker answered (in time)"
_UNREACHABLE = {"KafkaTimeoutError", "NoBrokersAvailable", "KafkaConnectionError", "NodeNotReadyError",
                "RequestTimedOutError", "BrokerNotAvailableError", "MetadataEmptyBrokerList",
                "NetworkExceptionError", "ConnectionError"}


def _chain(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and len(seen) < 5:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def is_client_error(exc: BaseException) -> bool:
    """True for an exception raised by a Kafka client library (kafka-python, aiokafka)."""
    return any(type(e).__module__.split(".")[0] in ("kafka", "aiokafka") for e in _chain(exc))


def probe_address(address: str, timeout_s: float) -> str:
    """Why a bootstrap address gives no Kafka answer, as far as a TCP connect can tell."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit():
        return f"{address}: not HOST:PORT"
    try:
        with socket.create_connection((host.strip("[]"), int(port_text)), timeout=timeout_s):
            return (f"{address}: the port accepts TCP connections but gave no Kafka answer (another service, "
                    "or TLS/SASL settings that do not match the listener?)")
    except socket.gaierror:
        return f"{address}: the host name does not resolve"
    except ConnectionRefusedError:
        return f"{address}: connection refused"
    except TimeoutError:
        return f"{address}: no TCP answer within {timeout_s:g} s (firewall or wrong address?)"
    except OSError as exc:
        return f"{address}: {exc.strerror or exc}"


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
    timeout_s: float = DEFAULT_TIMEOUT_S  # how long a command waits for Kafka before it stops

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ConfigError(f"--kafka-timeout must be a positive number of seconds, not {self.timeout_s!r}")
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
        timeout_text = pick("kafka_timeout", "KAFKA_TIMEOUT")
        try:
            timeout_s = float(timeout_text) if timeout_text else DEFAULT_TIMEOUT_S
        except ValueError:
            raise ConfigError(f"Kafka timeout {timeout_text!r} is not a number of seconds "
                              "(--kafka-timeout, KAFKA_TIMEOUT)") from None
        return cls(
            timeout_s=timeout_s,
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
        group.add_argument("--kafka-timeout", metavar="SECONDS",
                           help="how long to wait for Kafka at start before stopping with one line, exit 3 "
                                f"(env KAFKA_TIMEOUT, default {DEFAULT_TIMEOUT_S:g}; kpp produce spools instead)")

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

    def check(self, timeout_s: float | None = None, topics: Sequence[str] = ()) -> None:
        """Connect once, fetch cluster metadata and check that `topics` exist, within
        `timeout_s` (default: --kafka-timeout). Raises one line naming the broker, the cause
        and the fix: KafkaAuthenticationError (refused credentials, failed TLS handshake),
        KafkaUnavailableError (no broker answered), KafkaTopicMissingError,
        KafkaAuthorizationError."""
        with client_failures_captured("kafka", show_from=logging.WARNING):  # not under `kpp`: for this check
            self._check(self.timeout_s if timeout_s is None else timeout_s, topics)

    def _check(self, timeout_s: float, topics: Sequence[str]) -> None:
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
                if topics:
                    present = set(admin.list_topics())
                    missing = [t for t in topics if t not in present]
                    if missing:
                        raise self.topic_missing(missing[0])
                return
            except (KafkaError, OSError, ValueError) as exc:
                kind = failure_kind(exc) if not CLIENT_FAILURES.recent(started) else "authentication"
                if kind not in ("unreachable", "refused") or time.monotonic() >= deadline:
                    raise self.failure(exc, since=started, waited_s=timeout_s) from None
            finally:
                if admin is not None:
                    admin.close()

    def failure(self, exc: BaseException, *, since: float | None = None, topic: str | None = None,
                waited_s: float | None = None) -> KppError:
        """A Kafka client's exception as the one line a person can act on: the broker, the
        cause, the fix (and the exit code of its kind)."""
        where = f"Kafka at {self.describe()}"
        reason = self.explain(exc, since=since)
        if reason.startswith(("authentication failed", "TLS handshake failed")):
            return KafkaAuthenticationError(f"{where}: {reason}")
        kind = failure_kind(exc)
        if kind == "authorization":
            who = f"user {self.sasl_username!r}" if self.uses_sasl else "this client"
            return KafkaAuthorizationError(
                f"{where}: not authorized ({reason}); the broker's ACLs must allow {who} to describe, "
                "read and write the pipeline's topics (and read its consumer group)")
        if kind == "topic":
            return self.topic_missing(topic or "the topic asked for")
        if kind == "refused":
            return KafkaRequestError(f"{where} refused a request ({reason}); see the broker's log for why")
        waited = f" within {waited_s:g} s" if waited_s is not None else ""
        causes = "; ".join(probe_address(a, min(1.0, self.timeout_s)) for a in self.bootstrap_list[:3])
        return KafkaUnavailableError(self._redact(f"{where}: no broker answered{waited} ({causes}; {reason}); "
                                                  f"{UNREACHABLE_FIX}"))

    def topic_missing(self, topic: str) -> KafkaTopicMissingError:
        return KafkaTopicMissingError(
            f"Kafka at {self.describe()}: topic {topic!r} does not exist; create the pipeline's topics with "
            "`kpp topics ensure` (or start `kpp stream`), or check --topic-prefix (KPP_TOPIC_PREFIX)")

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


def broker_answers_metadata(bootstrap: str, timeout: float, connection: "KafkaConnection | None" = None) -> bool:
    """True when a broker returns cluster metadata (what every client needs first); with
    `connection`, through its security settings (TLS, SASL)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    kwargs = connection.kafka_python_kwargs() if connection is not None else {}
    kwargs["bootstrap_servers"] = bootstrap.split(",")
    try:
        admin = KafkaAdminClient(**kwargs, request_timeout_ms=int(timeout * 1000), client_id="kpp-stack-health")
    except (KafkaError, OSError, ValueError):
        return False
    try:
        return bool(admin.describe_cluster().get("brokers"))
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()

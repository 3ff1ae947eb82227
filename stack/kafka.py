"""Apache Kafka 4.x, single-node KRaft (broker + controller in one JVM) on 127.0.0.1.

The jars come from Maven Central through `stack/kafka/pom.xml` (kafka_2.13 plus the log4j2
backend the release tarball ships; the POM brings none) and are copied once into the state
folder; they are resolved again only when the POM changes.

Secured mode (`KPP_KAFKA_SASL_SSL=1`, or `StackSettings(kafka_sasl_ssl=True)`) adds a
SASL_SSL listener on `KPP_KAFKA_SASL_SSL_PORT` (9094) next to the PLAINTEXT one (which stays
on 127.0.0.1 for the controller, inter-broker traffic and the health check):

  * TLS from a private CA made once with openssl in `<state>/kafka/secrets/` (`ca.pem` is
    what clients trust), served from a PEM keystore (no keytool);
  * SCRAM-SHA-512 with one user (`KPP_KAFKA_SASL_USERNAME`, default `kpp`) created when the
    storage is formatted (`StorageTool format --add-scram`); its password is generated once
    into `<state>/kafka/secrets/sasl-password` (mode 0600), handed to the JVM through an
    argument file (never on a command line `ps` shows) and never printed.

`KafkaService.secured_connection()` / `.secured_client_env()` give clients what they need.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from kafka_io.connection import KafkaConnection, broker_answers_metadata
from stack.process import ManagedProcess, StackError, port_in_use, port_open
from stack.settings import StackSettings
from stack.tls import TlsError, make_ca, make_certificate, pem_keystore

POM = Path(__file__).parent / "kafka" / "pom.xml"
SCRAM_MECHANISM = "SCRAM-SHA-512"
HEAP = ["-Xms512m", "-Xmx1g"]  # below ~256m the log cleaner runs out of memory

LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
# the line that says the broker is up, kept for people reading the log
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
"""


def server_properties(settings: StackSettings, data_dir: Path, keystore: Path | None = None) -> str:
    """The broker's configuration; `keystore` (a PEM file with key and certificate) is needed
    for the SASL_SSL listener of secured mode."""
    host = "127.0.0.1"
    listeners = f"PLAINTEXT://{host}:{settings.kafka_port},CONTROLLER://{host}:{settings.kafka_controller_port}"
    advertised = f"PLAINTEXT://{host}:{settings.kafka_port}"
    protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    secured = ""
    if settings.kafka_sasl_ssl:
        if keystore is None:
            raise ValueError("secured mode needs the broker's PEM keystore")
        listeners += f",SASL_SSL://{host}:{settings.kafka_sasl_ssl_port}"
        advertised += f",SASL_SSL://{host}:{settings.kafka_sasl_ssl_port}"
        protocols += ",SASL_SSL:SASL_SSL"
        mech = SCRAM_MECHANISM.lower()
        secured = f"""\
# secured mode: SASL_SSL with SCRAM users from the metadata log (created at format time)
listener.name.sasl_ssl.sasl.enabled.mechanisms={SCRAM_MECHANISM}
listener.name.sasl_ssl.{mech}.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location={keystore}
listener.name.sasl_ssl.ssl.client.auth=none
"""
    return f"""\
# written by `kpp stack up`; edits are overwritten
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{host}:{settings.kafka_controller_port}
controller.listener.names=CONTROLLER
listeners={listeners}
advertised.listeners={advertised}
listener.security.protocol.map={protocols}
inter.broker.listener.name=PLAINTEXT
log.dirs={data_dir}
num.partitions=4
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
{secured}"""


class KafkaService:
    name = "kafka"

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.home = settings.state_dir / "kafka"
        self.libs = self.home / "libs"
        self.data = self.home / "data"
        self.secrets = self.home / "secrets"  # secured mode: CA, broker key, SASL password
        self.process = ManagedProcess(
            name="kafka",
            pid_file=settings.run_dir / "kafka.pid",
            log_file=settings.log_dir / "kafka.log",
            marker=str(self.home),
        )

    @property
    def address(self) -> str:
        return self.settings.kafka_bootstrap

    @property
    def secured(self) -> bool:
        return self.settings.kafka_secured_bootstrap is not None

    @property
    def ca_file(self) -> Path:
        """The CA clients of the SASL_SSL listener trust."""
        return self.secrets / "ca.pem"

    @property
    def password_file(self) -> Path:
        """The SCRAM user's password (mode 0600), for KAFKA_SASL_PASSWORD_FILE."""
        return self.secrets / "sasl-password"

    def secured_client_env(self) -> dict[str, str]:
        """KAFKA_* variables that connect a stage to the SASL_SSL listener (the password by
        file, never by value)."""
        if not self.secured:
            raise StackError("the local Kafka runs without a SASL_SSL listener (set KPP_KAFKA_SASL_SSL=1)")
        return {
            "KAFKA_BOOTSTRAP": self.settings.kafka_secured_bootstrap or "",
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": SCRAM_MECHANISM,
            "KAFKA_SASL_USERNAME": self.settings.kafka_sasl_username,
            "KAFKA_SASL_PASSWORD_FILE": str(self.password_file),
            "KAFKA_SSL_CAFILE": str(self.ca_file),
        }

    def secured_connection(self) -> KafkaConnection:
        """A client connection to the SASL_SSL listener."""
        return KafkaConnection.from_env(self.secured_client_env())

    # -- prerequisites --------------------------------------------------------------------

    def check_java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise StackError(
                "Java 17 or newer is needed to run Kafka and was not found on PATH: "
                "install it (Debian: apt-get install openjdk-17-jre-headless), "
                "or set KAFKA_BOOTSTRAP to use an existing broker"
            )
        out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
        match = re.search(r'version "(\d+)', out)
        if match and int(match.group(1)) < 17:
            raise StackError(f"Kafka 4 needs Java 17 or newer; `java -version` says: {out.splitlines()[0]}")
        return java

    def ensure_jars(self) -> None:
        """Resolve the broker's jars once; again only when the POM changed."""
        stamp = self.libs / ".pom-sha256"
        digest = hashlib.sha256(POM.read_bytes()).hexdigest()
        if stamp.is_file() and stamp.read_text().strip() == digest and any(self.libs.glob("kafka_2.13-*.jar")):
            return
        mvn = shutil.which("mvn")
        if mvn is None:
            raise StackError(
                "Maven is needed once to fetch the Kafka jars and was not found on PATH: "
                "install it (Debian: apt-get install maven), or set KAFKA_BOOTSTRAP to use an existing broker"
            )
        print("kafka: resolving broker jars with Maven (first run only) ...", flush=True)
        if self.libs.exists():
            shutil.rmtree(self.libs)
        self.libs.mkdir(parents=True)
        result = subprocess.run(
            [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
             f"-DoutputDirectory={self.libs}", "-DincludeScope=runtime"],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
            raise StackError(f"Maven could not resolve the Kafka jars (exit {result.returncode}):\n{tail}")
        stamp.write_text(digest + "\n")

    def _java(self, main_class: str, *args: str, heap: list[str] | None = None) -> list[str]:
        return [
            self.check_java(), *(heap or []),
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.settings.log_dir}",
            "-cp", f"{self.libs}/*", main_class, *args,
        ]

    def ensure_secrets(self) -> Path:
        """Secured mode: the private CA, the broker's PEM keystore and the SCRAM password, made
        once. Returns the keystore."""
        self.secrets.mkdir(parents=True, exist_ok=True)
        os.chmod(self.secrets, 0o700)
        try:
            ca = make_ca(self.secrets, name="kpp-local-kafka-ca")
            cert, key = make_certificate(self.secrets, "broker", ca, hosts=("127.0.0.1", "localhost"))
            keystore = pem_keystore(self.secrets, "broker", cert, key)
        except TlsError as exc:
            raise StackError(f"kafka: cannot make the TLS files of the SASL_SSL listener: {exc}") from None
        if not self.password_file.is_file():
            # hex: no character the --add-scram syntax (name=...,password=...]) would trip on
            with open(os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
                fh.write(secrets.token_hex(24) + "\n")
        return keystore

    def ensure_formatted(self) -> None:
        """Write the configuration and format the KRaft storage once per data folder."""
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "log4j2.properties").write_text(LOG4J2)
        keystore = self.ensure_secrets() if self.secured else None
        config = self.home / "server.properties"
        config.write_text(server_properties(self.settings, self.data, keystore))
        scram_stamp = self.data / ".kpp-scram-user"
        if (self.data / "meta.properties").is_file():
            if self.secured and not scram_stamp.is_file():
                raise StackError(
                    f"kafka: the data folder {self.data} was formatted without the SCRAM user the SASL_SSL "
                    "listener needs (SCRAM users are created at format time): remove that folder, or use "
                    "another KPP_STATE_DIR"
                )
            return
        cluster_id_file = self.home / "cluster.id"
        if not cluster_id_file.is_file():
            cluster_id_file.write_text(_kafka_uuid() + "\n")
        args = ["format", "-t", cluster_id_file.read_text().strip(), "-c", str(config)]
        if not self.secured:
            result = subprocess.run(self._java("kafka.tools.StorageTool", *args), capture_output=True, text=True)
        else:
            password = self.password_file.read_text().strip()
            scram = f"{SCRAM_MECHANISM}=[name={self.settings.kafka_sasl_username},password={password}]"
            result = self._run_with_argfile("kafka.tools.StorageTool", [*args, "--add-scram", scram])
            output = (result.stdout + result.stderr).replace(password, "***")
            result = subprocess.CompletedProcess(result.args, result.returncode, output, "")
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{(result.stdout + result.stderr)[-2000:]}")
        if self.secured:
            scram_stamp.write_text(f"{self.settings.kafka_sasl_username} {SCRAM_MECHANISM}\n")

    def _run_with_argfile(self, main_class: str, args: list[str]) -> subprocess.CompletedProcess:
        """Run a Kafka tool whose arguments hold a secret: main class and arguments go into a
        0600 argument file (`java @file`), so no process listing shows them."""
        java = self._java(main_class)
        argfile = self.secrets / "tool.args"
        argfile.unlink(missing_ok=True)
        with open(os.open(argfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
            for arg in [main_class, *args]:
                fh.write('"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"\n')
        try:
            return subprocess.run(java[: java.index(main_class)] + [f"@{argfile}"], capture_output=True, text=True)
        finally:
            argfile.unlink(missing_ok=True)

    # -- lifecycle ------------------------------------------------------------------------

    def healthy(self, timeout: float = 3.0) -> bool:
        host, _, port = self.address.split(",")[0].rpartition(":")
        if not port_open(host or "127.0.0.1", int(port)):
            return False
        if not broker_answers_metadata(self.address, timeout):
            return False
        if self.secured:  # the SASL_SSL listener must take the SCRAM user too
            if not port_open("127.0.0.1", self.settings.kafka_sasl_ssl_port):
                return False
            return broker_answers_metadata(self.settings.kafka_secured_bootstrap or "", timeout,
                                           self.secured_connection())
        return True

    def where(self) -> str:
        """The listener(s) for messages: address, plus the SASL_SSL one in secured mode."""
        if self.secured:
            return (f"{self.address} (PLAINTEXT), {self.settings.kafka_secured_bootstrap} "
                    f"(SASL_SSL, {SCRAM_MECHANISM} user {self.settings.kafka_sasl_username})")
        return self.address

    def up(self) -> str:
        if self.settings.external_kafka:
            if not self.healthy(timeout=10):
                raise StackError(f"KAFKA_BOOTSTRAP={self.address} does not answer a metadata request")
            return f"kafka: using existing broker at {self.address}"
        pid = self.process.pid()
        if pid is not None:
            self._wait_healthy(pid)
            return f"kafka: already running (pid {pid}) at {self.where()}"
        ports = [self.settings.kafka_port, self.settings.kafka_controller_port]
        if self.secured:
            ports.append(self.settings.kafka_sasl_ssl_port)
        for port in ports:
            if port_in_use("127.0.0.1", port):
                raise StackError(
                    f"kafka: port 127.0.0.1:{port} is taken by another process; stop it, or choose "
                    "other ports with KPP_KAFKA_PORT / KPP_KAFKA_CONTROLLER_PORT"
                    + (" / KPP_KAFKA_SASL_SSL_PORT" if self.secured else "")
                )
        self.check_java()
        self.ensure_jars()
        self.ensure_formatted()
        started = time.monotonic()
        pid = self.process.start_healthy(
            self._java("kafka.Kafka", str(self.home / "server.properties"), heap=HEAP), cwd=self.home,
            healthy=self.healthy, timeout=self.settings.kafka_start_timeout, answer="answer a metadata request",
        )
        return f"kafka: started (pid {pid}) at {self.where()} in {time.monotonic() - started:.1f} s"

    def _wait_healthy(self, pid: int) -> None:
        self.process.wait_healthy(pid, healthy=self.healthy, timeout=self.settings.kafka_start_timeout,
                                  answer="answer a metadata request")

    def down(self) -> str:
        if self.settings.external_kafka:
            return f"kafka: external ({self.address}), left running"
        return "kafka: stopped" if self.process.stop(timeout=45) else "kafka: was not running"

    def status(self) -> tuple[str, str, str]:
        if self.settings.external_kafka:
            return ("kafka", "external, " + ("healthy" if self.healthy() else "NOT answering"), self.address)
        pid = self.process.pid()
        if pid is None:
            return ("kafka", "stopped", self.where())
        return ("kafka", f"running pid {pid}, " + ("healthy" if self.healthy() else "not healthy"), self.where())


def _kafka_uuid() -> str:
    """A cluster id as Kafka's `random-uuid` makes it (URL-safe base64 of 16 random bytes),
    without starting a JVM for it."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):  # Kafka rejects ids that look like flags
            return text

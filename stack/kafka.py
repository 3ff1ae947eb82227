"""Apache Kafka 4.x, single-node KRaft (broker + controller in one JVM) on 127.0.0.1.

The jars come from Maven Central through `stack/kafka/pom.xml` (kafka_2.13 plus the log4j2
backend the release tarball ships; the POM brings none) and are copied once into the state
folder; they are resolved again only when the POM changes.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from contracts.errors import KppError
from stack.process import ManagedProcess, port_in_use, port_open
from stack.settings import StackSettings

POM = Path(__file__).parent / "kafka" / "pom.xml"
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


class StackError(KppError):
    """A service of the local stack cannot be installed, started or reached."""


def server_properties(settings: StackSettings, data_dir: Path) -> str:
    host = "127.0.0.1"
    return f"""\
# written by `kpp stack up`; edits are overwritten
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{host}:{settings.kafka_controller_port}
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://{host}:{settings.kafka_port},CONTROLLER://{host}:{settings.kafka_controller_port}
advertised.listeners=PLAINTEXT://{host}:{settings.kafka_port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
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
"""


class KafkaService:
    name = "kafka"

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.home = settings.state_dir / "kafka"
        self.libs = self.home / "libs"
        self.data = self.home / "data"
        self.process = ManagedProcess(
            name="kafka",
            pid_file=settings.run_dir / "kafka.pid",
            log_file=settings.log_dir / "kafka.log",
            marker=str(self.home),
        )

    @property
    def address(self) -> str:
        return self.settings.kafka_bootstrap

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

    def ensure_formatted(self) -> None:
        """Write the configuration and format the KRaft storage once per data folder."""
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "log4j2.properties").write_text(LOG4J2)
        config = self.home / "server.properties"
        config.write_text(server_properties(self.settings, self.data))
        if (self.data / "meta.properties").is_file():
            return
        cluster_id_file = self.home / "cluster.id"
        if not cluster_id_file.is_file():
            cluster_id_file.write_text(_kafka_uuid() + "\n")
        result = subprocess.run(
            self._java("kafka.tools.StorageTool", "format", "-t", cluster_id_file.read_text().strip(),
                       "-c", str(config)),
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{(result.stdout + result.stderr)[-2000:]}")

    # -- lifecycle ------------------------------------------------------------------------

    def healthy(self, timeout: float = 3.0) -> bool:
        host, _, port = self.address.split(",")[0].rpartition(":")
        if not port_open(host or "127.0.0.1", int(port)):
            return False
        return broker_answers_metadata(self.address, timeout)

    def up(self) -> str:
        if self.settings.external_kafka:
            if not self.healthy(timeout=10):
                raise StackError(f"KAFKA_BOOTSTRAP={self.address} does not answer a metadata request")
            return f"kafka: using existing broker at {self.address}"
        pid = self.process.pid()
        if pid is not None:
            self._wait_healthy(pid)
            return f"kafka: already running (pid {pid}) at {self.address}"
        for port in (self.settings.kafka_port, self.settings.kafka_controller_port):
            if port_in_use("127.0.0.1", port):
                raise StackError(
                    f"kafka: port 127.0.0.1:{port} is taken by another process; stop it, or choose "
                    "other ports with KPP_KAFKA_PORT / KPP_KAFKA_CONTROLLER_PORT"
                )
        self.check_java()
        self.ensure_jars()
        self.ensure_formatted()
        started = time.monotonic()
        pid = self.process.start(
            self._java("kafka.Kafka", str(self.home / "server.properties"), heap=HEAP), cwd=self.home
        )
        try:
            self._wait_healthy(pid)
        except StackError:
            self.process.stop(timeout=10)  # a half-started service helps nobody; its log stays
            raise
        return f"kafka: started (pid {pid}) at {self.address} in {time.monotonic() - started:.1f} s"

    def _wait_healthy(self, pid: int) -> None:
        deadline = time.monotonic() + self.settings.kafka_start_timeout
        while time.monotonic() < deadline:
            if not self.process.alive(pid):
                raise StackError(f"kafka exited during start-up; last lines of {self.process.log_file}:\n"
                                 f"{self.process.log_tail()}")
            if self.healthy():
                return
            time.sleep(0.5)
        raise StackError(
            f"kafka did not answer a metadata request within {self.settings.kafka_start_timeout:.0f} s; "
            f"last lines of {self.process.log_file}:\n{self.process.log_tail()}"
        )

    def down(self) -> str:
        if self.settings.external_kafka:
            return f"kafka: external ({self.address}), left running"
        return "kafka: stopped" if self.process.stop(timeout=45) else "kafka: was not running"

    def status(self) -> tuple[str, str, str]:
        if self.settings.external_kafka:
            return ("kafka", "external, " + ("healthy" if self.healthy() else "NOT answering"), self.address)
        pid = self.process.pid()
        if pid is None:
            return ("kafka", "stopped", self.address)
        return ("kafka", f"running pid {pid}, " + ("healthy" if self.healthy() else "not healthy"), self.address)


def broker_answers_metadata(bootstrap: str, timeout: float) -> bool:
    """True when a broker returns cluster metadata (what every client needs first)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap.split(","), request_timeout_ms=int(timeout * 1000),
            client_id="kpp-stack-health",
        )
    except (KafkaError, OSError, ValueError):
        return False
    try:
        return bool(admin.describe_cluster().get("brokers"))
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def _kafka_uuid() -> str:
    """A cluster id as Kafka's `random-uuid` makes it (URL-safe base64 of 16 random bytes),
    without starting a JVM for it."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):  # Kafka rejects ids that look like flags
            return text

"""docker-compose.yml and the Dockerfile cannot run here (no Docker engine), so they are
checked against the code: every `kpp` subcommand and flag they use exists, and ports and
environment names agree. The Kubernetes objects are the Helm chart's:
tests/deploy/test_helm_chart.py renders and checks them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from runtime.config import DEFAULT_VM_URL
from kafka_io.connection import DEFAULT_BOOTSTRAP

REPO = Path(__file__).resolve().parent.parent
KPP = str(Path(sys.executable).parent / "kpp")
_help_cache: dict[str, str] = {}


def kpp_help(subcommand: str) -> str:
    if subcommand not in _help_cache:
        result = subprocess.run([KPP, subcommand, "--help"], capture_output=True, text=True)
        assert result.returncode == 0, f"`kpp {subcommand}` does not exist: {result.stderr}"
        _help_cache[subcommand] = result.stdout
    return _help_cache[subcommand]


def check_kpp_command(argv: list[str], where: str) -> None:
    assert argv[0] == "kpp", where
    subcommand = argv[1]
    help_text = kpp_help(subcommand)
    for token in argv[2:]:
        if token.startswith("--"):
            flag = token.split("=", 1)[0]
            assert re.search(rf"(^|[\s,\[]){re.escape(flag)}\b", help_text), f"{where}: `kpp {subcommand}` has no {flag}"


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def kpp_services() -> list[tuple[str, dict]]:
    return [(name, svc) for name, svc in compose()["services"].items()
            if isinstance(svc.get("command"), list) and svc["command"][0] == "kpp"]


def test_compose_commands_exist() -> None:
    services = kpp_services()
    assert {"simulate", "produce", "topics", "stream", "sink"} <= {svc["command"][1] for _, svc in services}
    for name, svc in services:
        if svc["command"][1] != "topics":  # a command with actions: the parser test below checks it
            check_kpp_command(svc["command"], f"docker-compose service {name}")


def test_compose_commands_parse_with_the_kpp_parser() -> None:
    """Every `kpp` command line is accepted by kpp's own parser and its values convert as the
    stage converts them."""
    from runtime.options import resolve
    from kpp.cli import build_parser
    from kpp.topics import OPTIONS as TOPICS
    from producers.cli_produce import OPTIONS as PRODUCE
    from sinks.cli import OPTIONS as SINK
    from streams.cli import OPTIONS as STREAM

    options = {"produce": PRODUCE, "stream": STREAM, "sink": SINK, "topics": TOPICS}
    parser = build_parser()
    for name, svc in kpp_services():
        try:
            args = parser.parse_args(svc["command"][1:])
        except SystemExit:
            pytest.fail(f"docker-compose service {name}: `{' '.join(svc['command'])}` is refused by kpp's parser")
        if svc["command"][1] in options:
            resolve(options[svc["command"][1]], args, {}, env={})


_PORT = re.compile(r"^127\.0\.0\.1:\$\{(?P<var>KPP_[A-Z_]+_HOST_PORT):-(?P<default>\d+)\}:(?P<container>\d+)$")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's `${VAR:-default}` substitution."""
    return re.sub(r"\$\{([A-Z_]+):-([^}]*)\}", lambda m: env.get(m[1]) or m[2], text)


def published_ports() -> dict[str, list[re.Match]]:
    out = {}
    for name, svc in compose()["services"].items():
        out[name] = [_PORT.match(p) for p in svc.get("ports", [])]
        assert all(out[name]), f"{name}: ports {svc.get('ports')} are not 127.0.0.1:${{KPP_..._HOST_PORT:-N}}:PORT"
    return out


def test_compose_host_ports_are_configurable_and_clear_of_kpp_stack() -> None:
    from stack.settings import StackSettings

    stack = StackSettings.from_env({})
    stack_ports = {stack.kafka_port, stack.kafka_controller_port, stack.vm_port, stack.kafka_sasl_ssl_port}
    ports = [m for matches in published_ports().values() for m in matches]
    assert {"kafka", "victoriametrics", "vmalert", "grafana"} <= {n for n, ms in published_ports().items() if ms}
    defaults = [int(m["default"]) for m in ports]
    assert len(set(defaults)) == len(defaults), "two services publish the same default host port"
    assert not stack_ports & set(defaults), f"default host ports {sorted(stack_ports & set(defaults))} clash with kpp stack"
    assert len({m["var"] for m in ports}) == len(ports)


def _listeners(text: str) -> dict[str, tuple[str, int]]:
    out = {}
    for item in text.split(","):
        name, _, address = item.partition("://")
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


@pytest.mark.parametrize("env", [{}, {"KPP_KAFKA_HOST_PORT": "29092"}])
def test_compose_kafka_advertises_a_listener_the_host_reaches(env: dict[str, str]) -> None:
    """A host-side `kpp tail` / `kpp replay` connects to the published port, and the broker
    then hands it the address it advertises: that must be the same published address."""
    kafka = compose()["services"]["kafka"]["environment"]
    (published,) = published_ports()["kafka"]
    host_port = int(env.get(published["var"]) or published["default"])
    listeners = _listeners(interpolate(kafka["KAFKA_LISTENERS"], env))
    advertised = _listeners(interpolate(kafka["KAFKA_ADVERTISED_LISTENERS"], env))
    protocols = dict(item.split(":") for item in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    host_side = [name for name, (host, port) in advertised.items() if (host, port) == ("127.0.0.1", host_port)]
    assert len(host_side) == 1, advertised
    assert listeners[host_side[0]][1] == int(published["container"])
    assert protocols[host_side[0]] == "PLAINTEXT"
    # the containers' listener stays the one their KAFKA_BOOTSTRAP names
    bootstraps = {svc.get("environment", {}).get("KAFKA_BOOTSTRAP") for _, svc in kpp_services()}
    assert bootstraps == {f"kafka:{advertised[kafka['KAFKA_INTER_BROKER_LISTENER_NAME']][1]}"}
    assert advertised[kafka["KAFKA_INTER_BROKER_LISTENER_NAME"]][0] == "kafka"


def test_compose_ports_and_environment_agree_with_code() -> None:
    services = compose()["services"]
    kafka_port = DEFAULT_BOOTSTRAP.rsplit(":", 1)[1]
    vm_port = DEFAULT_VM_URL.rsplit(":", 1)[1]
    (vm_published,) = published_ports()["victoriametrics"]
    assert vm_published["container"] == vm_port
    assert f"-httpListenAddr=:{vm_port}" in services["victoriametrics"]["command"]
    sim = services["simulator"]["command"]
    sim_port = sim[sim.index("--port") + 1]
    for name, svc in kpp_services():
        env = svc.get("environment", {})
        assert env.get("KAFKA_BOOTSTRAP") == f"kafka:{kafka_port}", name
        assert env.get("VM_URL") == f"http://victoriametrics:{vm_port}", name
        cmd = svc["command"]
        if cmd[1] == "produce":
            node = cmd[cmd.index("--node") + 1]
            assert cmd[cmd.index("--target") + 1] == f"http://simulator:{sim_port}/nodes/{node}/metrics"
    # every environment variable the services set is one the code reads
    code = "\n".join(p.read_text() for d in ("contracts", "kafka_io", "runtime", "producers", "streams", "sinks",
                                             "simulator", "stack", "kpp")
                     for p in (REPO / d).rglob("*.py"))
    for name, svc in kpp_services():
        for var in svc.get("environment", {}):
            assert f'"{var}"' in code, f"{name} sets {var}, which no code reads"


def vmalert_flags() -> dict[str, str]:
    return dict(flag.lstrip("-").partition("=")[::2] for flag in compose()["services"]["vmalert"]["command"])


def test_compose_vmalert_evaluates_deploy_alerts_against_the_store() -> None:
    services = compose()["services"]
    vmalert = services["vmalert"]
    flags = vmalert_flags()
    vm_port = DEFAULT_VM_URL.rsplit(":", 1)[1]
    assert flags["datasource.url"] == f"http://victoriametrics:{vm_port}"
    assert flags["remoteWrite.url"] == flags["remoteRead.url"] == flags["datasource.url"]  # alert state kept
    assert flags["datasource.queryStep"] == "1m"  # what deploy/alerts asks of vmalert
    assert "notifier.blackhole" in flags  # no Alertmanager in compose: evaluate, show, send nothing
    (volume,) = vmalert["volumes"]
    source, target, mode = volume.split(":")
    assert (REPO / source).resolve() == REPO / "deploy" / "alerts" and mode == "ro"
    assert flags["rule"].startswith(target + "/")
    rule_glob = flags["rule"][len(target) + 1:]
    assert sorted((REPO / "deploy" / "alerts").glob(rule_glob)) == sorted((REPO / "deploy" / "alerts").glob("*.yaml"))
    # the same release as the store
    assert vmalert["image"].rsplit(":", 1)[1] == services["victoriametrics"]["image"].rsplit(":", 1)[1]
    (published,) = published_ports()["vmalert"]
    assert flags["httpListenAddr"] == f":{published['container']}"


@pytest.mark.integration
def test_compose_vmalert_loads_the_rule_files_it_is_given() -> None:
    from tests.sinks.servers import ensure_binary

    vmalert = ensure_binary("vmalert", "victoria-metrics")
    target = compose()["services"]["vmalert"]["volumes"][0].split(":")[1]
    rule = vmalert_flags()["rule"].replace(target, str(REPO / "deploy" / "alerts"))
    result = subprocess.run([vmalert, f"-rule={rule}", "-dryRun"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

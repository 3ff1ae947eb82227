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

from contracts.config import DEFAULT_VM_URL
from contracts.kafka import DEFAULT_BOOTSTRAP

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
    assert {"simulate", "produce"} <= {svc["command"][1] for _, svc in services}
    for name, svc in services:
        check_kpp_command(svc["command"], f"docker-compose service {name}")


def test_compose_ports_and_environment_agree_with_code() -> None:
    services = compose()["services"]
    kafka_port = DEFAULT_BOOTSTRAP.rsplit(":", 1)[1]
    vm_port = DEFAULT_VM_URL.rsplit(":", 1)[1]
    assert f"{kafka_port}:{kafka_port}" in services["kafka"]["ports"]
    assert f"{vm_port}:{vm_port}" in services["victoriametrics"]["ports"]
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
    code = "\n".join(p.read_text() for d in ("contracts", "producers", "streams", "sinks", "simulator", "stack", "kpp")
                     for p in (REPO / d).rglob("*.py"))
    for name, svc in kpp_services():
        for var in svc.get("environment", {}):
            assert f'"{var}"' in code, f"{name} sets {var}, which no code reads"


@pytest.mark.parametrize("path", ["Dockerfile"])
def test_dockerfile_copies_every_package(path: str) -> None:
    text = (REPO / path).read_text()
    for package in ("contracts", "producers", "streams", "sinks", "simulator", "stack", "kpp"):
        assert f"COPY {package} ./{package}" in text

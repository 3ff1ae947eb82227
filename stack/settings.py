"""Where the local stack lives and listens. Every value can be overridden by environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping


@dataclass(frozen=True)
class StackSettings:
    state_dir: Path
    kafka_port: int
    kafka_controller_port: int
    vm_port: int
    external_kafka: str | None  # KAFKA_BOOTSTRAP: use this broker, start none
    external_vm: str | None  # VM_URL: use this store, start none
    kafka_start_timeout: float
    vm_start_timeout: float

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "StackSettings":
        env = os.environ if env is None else env
        return cls(
            state_dir=Path(env.get("KPP_STATE_DIR", ".kpp")).resolve(),
            kafka_port=int(env.get("KPP_KAFKA_PORT", "9092")),
            kafka_controller_port=int(env.get("KPP_KAFKA_CONTROLLER_PORT", "9093")),
            vm_port=int(env.get("KPP_VM_PORT", "8428")),
            external_kafka=env.get("KAFKA_BOOTSTRAP") or None,
            external_vm=env.get("VM_URL") or None,
            kafka_start_timeout=float(env.get("KPP_KAFKA_START_TIMEOUT", "90")),
            vm_start_timeout=float(env.get("KPP_VM_START_TIMEOUT", "30")),
        )

    @property
    def kafka_bootstrap(self) -> str:
        return self.external_kafka or f"127.0.0.1:{self.kafka_port}"

    @property
    def vm_url(self) -> str:
        return (self.external_vm or f"http://127.0.0.1:{self.vm_port}").rstrip("/")

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

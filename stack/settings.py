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
    # KPP_KAFKA_SASL_SSL=1: an extra SASL_SSL listener (SCRAM-SHA-512 user, private CA) next
    # to the PLAINTEXT one; see stack/kafka.py
    kafka_sasl_ssl: bool = False
    kafka_sasl_ssl_port: int = 9094
    kafka_sasl_username: str = "kpp"

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
            kafka_sasl_ssl=env.get("KPP_KAFKA_SASL_SSL", "").strip().lower() in ("1", "true", "yes", "on"),
            kafka_sasl_ssl_port=int(env.get("KPP_KAFKA_SASL_SSL_PORT", "9094")),
            kafka_sasl_username=env.get("KPP_KAFKA_SASL_USERNAME") or "kpp",
        )

    @property
    def kafka_bootstrap(self) -> str:
        return self.external_kafka or f"127.0.0.1:{self.kafka_port}"

    @property
    def kafka_secured_bootstrap(self) -> str | None:
        """The SASL_SSL listener of the local broker, when it has one."""
        if self.external_kafka or not self.kafka_sasl_ssl:
            return None
        return f"127.0.0.1:{self.kafka_sasl_ssl_port}"

    @property
    def vm_url(self) -> str:
        return (self.external_vm or f"http://127.0.0.1:{self.vm_port}").rstrip("/")

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

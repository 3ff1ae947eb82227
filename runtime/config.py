"""Settings shared by several stages besides the Kafka connection (see kafka_io.connection)."""

from __future__ import annotations

import os
from typing import Mapping

DEFAULT_VM_URL = "http://127.0.0.1:8428"


def vm_url(env: Mapping[str, str] | None = None) -> str:
    """The VictoriaMetrics base URL: `VM_URL`, else the local stack's default."""
    env = os.environ if env is None else env
    return (env.get("VM_URL") or DEFAULT_VM_URL).rstrip("/")

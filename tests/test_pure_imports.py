"""The pure modules (windows, deltas, quantiles, aggregators, the parser, the encoders, the
record contracts) and the connection settings load no Kafka client: each is imported in a
fresh interpreter and `sys.modules` is checked. A Kafka client is loaded by the code that
talks to Kafka, when it does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
KAFKA_CLIENTS = ("kafka", "aiokafka", "faust")

PURE_MODULES = (
    "streams.windows", "streams.deltas", "streams.quantiles", "streams.aggregators",
    "producers.parser", "sinks.encode",
    "contracts.codec", "contracts.records", "contracts.derived", "contracts.dlq", "contracts.topics",
    "contracts.late", "contracts.records_fast", "contracts.derived_fast", "kafka_io.partitioner",
    # the connection settings and option resolution: importing them must not load (and, as
    # it once did, patch) a client
    "kafka_io.connection", "runtime.options",
)

PROBE = """
import importlib, sys
importlib.import_module(sys.argv[1])
print(" ".join(sorted({name.split(".")[0] for name in sys.modules} & set(sys.argv[2:]))))
"""


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_loads_no_kafka_client(module: str) -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE, module, *KAFKA_CLIENTS], capture_output=True,
                          text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [], f"importing {module} loaded {proc.stdout.strip()}"

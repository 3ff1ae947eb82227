"""The stream stage builds no Kafka client of its own: kafka_io/ does (Faust's own use aside,
which is the only import of `faust`'s transport the stage relies on)."""

from __future__ import annotations

import ast
from pathlib import Path

STREAMS = Path(__file__).resolve().parents[2] / "streams"
CLIENTS = ("kafka", "aiokafka")
# replay.py and cli_replay.py move to kafka_io's range reader separately
NOT_YET = {"replay.py", "cli_replay.py"}


def client_imports(path: Path) -> list[str]:
    """Every `import kafka...` / `from aiokafka... import` in a module, lazy ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
        found += [f"{path.name}:{node.lineno}: {n}" for n in names if n.split(".")[0] in CLIENTS]
    return found


def test_no_stream_module_imports_a_kafka_client() -> None:
    modules = [p for p in sorted(STREAMS.glob("*.py")) if p.name not in NOT_YET]
    assert len(modules) > 10
    assert [hit for p in modules for hit in client_imports(p)] == []

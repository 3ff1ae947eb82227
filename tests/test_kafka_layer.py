"""kafka_io is the only package of the product that imports a Kafka client library. Faust
(the stream workers' framework) is the one exception the layering allows: it is imported
where the Faust application is built and run, and brings its own aiokafka with it.

The check reads the source (every import statement, top level or inside a function), so a
client import added anywhere else fails here, with the file and line."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PRODUCT_PACKAGES = ("contracts", "runtime", "producers", "streams", "sinks", "kpp", "simulator", "stack")
KAFKA_CLIENTS = frozenset({"kafka", "aiokafka"})
FRAMEWORK = "faust"


def imported_roots(source: str) -> list[tuple[str, int]]:
    """The top-level package of every import in `source`, with its line."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name.split(".")[0], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module.split(".")[0], node.lineno))
    return found


def test_imported_roots_sees_imports_inside_functions() -> None:
    source = "import os\ndef f():\n    from kafka.admin import KafkaAdminClient\n    import aiokafka.errors\n"
    assert imported_roots(source) == [("os", 1), ("kafka", 3), ("aiokafka", 4)]


def test_only_kafka_io_imports_a_kafka_client() -> None:
    offenders = [f"{path.relative_to(REPO)}:{line}: imports {root}"
                 for package in PRODUCT_PACKAGES
                 for path in sorted((REPO / package).rglob("*.py"))
                 for root, line in imported_roots(path.read_text())
                 if root in KAFKA_CLIENTS]
    assert offenders == [], "a Kafka client imported outside kafka_io:\n" + "\n".join(offenders)


def test_kafka_io_imports_no_project_stage() -> None:
    """The layer sits at the bottom: it may use contracts and runtime, never a stage."""
    stages = {"producers", "streams", "sinks", "kpp"}
    offenders = [f"{path.relative_to(REPO)}:{line}: imports {root}"
                 for path in sorted((REPO / "kafka_io").rglob("*.py"))
                 for root, line in imported_roots(path.read_text()) if root in stages]
    assert offenders == []


def test_faust_is_imported_only_by_the_stream_stage() -> None:
    offenders = [f"{path.relative_to(REPO)}:{line}"
                 for package in PRODUCT_PACKAGES if package != "streams"
                 for path in sorted((REPO / package).rglob("*.py"))
                 for root, line in imported_roots(path.read_text()) if root == FRAMEWORK]
    assert offenders == []

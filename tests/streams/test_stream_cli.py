"""`kpp stream` refuses, at start-up and in one line, topics whose partition count does not
match: co-partitioned state would otherwise fail on every event."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from kafka_io.admin import TopicSpec, ensure_topics
from kafka_io.connection import KafkaConnection

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("stale", ["samples", "changelog"])
def test_partition_mismatch_is_one_clear_error(kafka: KafkaConnection, tmp_path, stale: str) -> None:
    prefix = f"mismatch{uuid.uuid4().hex[:8]}"
    name = f"{prefix}.samples" if stale == "samples" else f"kpp-streams.{prefix}-node-state-changelog"
    ensure_topics(kafka, [TopicSpec(name, 3)])
    result = subprocess.run(
        [sys.executable, "-m", "kpp", "stream", "--partitions", "2", "--topic-prefix", prefix,
         "--kafka-bootstrap", kafka.bootstrap, "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert f"topic '{name}' has 3 partitions but --partitions is 2" in result.stderr
    assert "Traceback" not in result.stderr

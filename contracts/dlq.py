"""The dead-letter contract (`<prefix>.dlq`, key = the original message's key): what any
stage could not process, with the reason and the original bytes, so nothing is ever dropped
without a trace and everything can be replayed once fixed."""

from __future__ import annotations

import base64
from typing import Any

from contracts.codec import dumps

DLQ_SCHEMA = "kube-proxy.dlq/v1"


def _text(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        return None


def dead_letter(
    *, stage: str, reason: str, error: str, topic: str, partition: int, offset: int,
    key: bytes | None, value: bytes | None, store: dict[str, Any] | None = None,
    dead_lettered_ms: int | None = None,
) -> bytes:
    """One DLQ message. `value` keeps the original as text when it is UTF-8, else base64.
    `dead_lettered_ms` is optional: stages whose outputs must be deterministic leave it out."""
    text = _text(value)
    return dumps({
        "schema": DLQ_SCHEMA,
        "stage": stage,
        "reason": reason,
        "error": error,
        "store": store,
        "source": {"topic": topic, "partition": partition, "offset": offset, "key": _text(key)},
        "value": text,
        "value_base64": None if text is not None or value is None else base64.b64encode(bytes(value)).decode("ascii"),
        "dead_lettered_ms": dead_lettered_ms,
    })

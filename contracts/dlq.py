"""The dead-letter contract (`<prefix>.dlq`, key = the original message's key): what any
stage could not process, with the reason and the original bytes, so nothing is ever dropped
without a trace and everything can be replayed once fixed.

A dead letter must always be publishable, or the stage that writes it cannot go on (Kafka
refuses records over its limit, 1 MiB by default). So the envelope is bounded whatever it is
given: an original larger than MAX_ORIGINAL_BYTES keeps its first bytes only, with its size,
its SHA-256 and `value_truncated: true` (the whole original is still in its own topic at
`source`); reason, error, the store's answer and the key are cut too. Even fully JSON-escaped
the envelope stays under MAX_ENVELOPE_BYTES.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from contracts.codec import dumps

DLQ_SCHEMA = "kube-proxy.dlq/v1"

MAX_ORIGINAL_BYTES = 64 * 1024
MAX_KEY_BYTES = 1024
MAX_REASON_CHARS = 200
MAX_ERROR_CHARS = 4000  # error and the store's answer
# JSON escapes a control character as 6 bytes (\u0001): the bound holds for the worst input.
MAX_ENVELOPE_BYTES = 512 * 1024


def _text(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _cut(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def dlq_key(key: bytes | None) -> bytes | None:
    """The Kafka key of a dead letter: the original's, cut to MAX_KEY_BYTES (a key is part of
    the record Kafka limits)."""
    return None if key is None else bytes(key[:MAX_KEY_BYTES])


def _key_text(key: bytes | None) -> str | None:
    text = _text(key)
    if text is None or len(key) <= MAX_KEY_BYTES:  # type: ignore[arg-type]
        return text
    return bytes(key[:MAX_KEY_BYTES]).decode("utf-8", "ignore")  # type: ignore[index]


def _original(value: bytes | None) -> dict[str, Any]:
    """`value` (UTF-8 text) or `value_base64`, of at most MAX_ORIGINAL_BYTES; with the whole
    original's size and hash when it was cut."""
    if value is None:
        return {"value": None, "value_base64": None}
    data = bytes(value)
    kept = data[:MAX_ORIGINAL_BYTES]
    text = _text(data)
    if len(data) > MAX_ORIGINAL_BYTES and text is not None:
        text = kept.decode("utf-8", "ignore")  # drops only a character cut at the end
    fields: dict[str, Any] = {
        "value": text,
        "value_base64": None if text is not None else base64.b64encode(kept).decode("ascii"),
    }
    if len(data) > MAX_ORIGINAL_BYTES:
        fields.update(value_truncated=True, value_bytes=len(data),
                      value_sha256=hashlib.sha256(data).hexdigest())
    return fields


def dead_letter(
    *, stage: str, reason: str, error: str, topic: str, partition: int, offset: int,
    key: bytes | None, value: bytes | None, store: dict[str, Any] | None = None,
    dead_lettered_ms: int | None = None,
) -> bytes:
    """One DLQ message. `value` keeps the original as text when it is UTF-8, else base64.
    `dead_lettered_ms` is optional: stages whose outputs must be deterministic leave it out."""
    if store is not None:
        store = {**store, "answer": _cut(store.get("answer"), MAX_ERROR_CHARS)} if "answer" in store else store
    return dumps({
        "schema": DLQ_SCHEMA,
        "stage": stage,
        "reason": _cut(reason, MAX_REASON_CHARS),
        "error": _cut(error, MAX_ERROR_CHARS),
        "store": store,
        "source": {"topic": topic, "partition": partition, "offset": offset, "key": _key_text(key)},
        **_original(value),
        "dead_lettered_ms": dead_lettered_ms,
    })

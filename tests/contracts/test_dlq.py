from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import jsonschema

from contracts.codec import loads
from contracts.dlq import MAX_ENVELOPE_BYTES, MAX_KEY_BYTES, MAX_ORIGINAL_BYTES, dead_letter, dlq_key

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "kube-proxy.dlq.v1.json").read_text())


def test_text_and_binary_originals_validate() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    text = loads(dead_letter(stage="stream", reason="malformed", error="not valid JSON", topic="kube-proxy.samples",
                             partition=3, offset=42, key=b"node-007", value=b"{broken"))
    jsonschema.validate(text, SCHEMA)
    assert text["value"] == "{broken" and text["value_base64"] is None and text["source"]["key"] == "node-007"
    binary = loads(dead_letter(stage="sink", reason="rejected", error="400", topic="t", partition=0, offset=1,
                               key=None, value=b"\xff\xfe", store={"url": "http://vm", "status": 400, "answer": "bad"},
                               dead_lettered_ms=5))
    jsonschema.validate(binary, SCHEMA)
    assert binary["value"] is None and base64.b64decode(binary["value_base64"]) == b"\xff\xfe"
    assert binary["store"]["status"] == 400 and binary["dead_lettered_ms"] == 5


def test_a_large_original_is_cut_with_its_size_and_hash() -> None:
    original = ("é" * 200_000).encode()  # 400 KB of two-byte characters: the cut falls mid-character
    body = loads(dead_letter(stage="sink", reason="rejected", error="too large", topic="t", partition=0, offset=9,
                             key=b"node-1", value=original))
    jsonschema.validate(body, SCHEMA)
    assert body["value_truncated"] is True and body["value_bytes"] == len(original)
    assert body["value_sha256"] == hashlib.sha256(original).hexdigest()
    kept = body["value"].encode()
    assert original.startswith(kept) and MAX_ORIGINAL_BYTES - 1 <= len(kept) <= MAX_ORIGINAL_BYTES
    binary = b"\xff" + bytes(range(256)) * 1000
    body = loads(dead_letter(stage="sink", reason="rejected", error="", topic="t", partition=0, offset=9,
                             key=None, value=binary))
    jsonschema.validate(body, SCHEMA)
    assert base64.b64decode(body["value_base64"]) == binary[:MAX_ORIGINAL_BYTES]
    assert body["value_bytes"] == len(binary) and body["value_sha256"] == hashlib.sha256(binary).hexdigest()


def test_a_small_original_is_kept_whole_without_the_truncation_fields() -> None:
    original = b"x" * MAX_ORIGINAL_BYTES
    body = loads(dead_letter(stage="sink", reason="malformed", error="e", topic="t", partition=0, offset=1,
                             key=b"k", value=original))
    assert body["value"].encode() == original
    assert not {"value_truncated", "value_bytes", "value_sha256"} & set(body)


def test_the_envelope_stays_under_the_bound_whatever_it_is_given() -> None:
    """Worst case: every string made of control characters (JSON escapes each as 6 bytes)."""
    huge = "\x01" * 2_000_000
    message = dead_letter(stage="sink", reason=huge, error=huge, topic="t", partition=0, offset=1,
                          key=huge.encode(), value=huge.encode(),
                          store={"url": "http://vm", "status": 400, "answer": huge}, dead_lettered_ms=1)
    assert len(message) <= MAX_ENVELOPE_BYTES < 1024 * 1024
    body = loads(message)
    jsonschema.validate(body, SCHEMA)
    assert body["error"].endswith("more characters)") and body["store"]["answer"].endswith("more characters)")
    assert len(body["source"]["key"]) == MAX_KEY_BYTES and dlq_key(huge.encode()) == huge.encode()[:MAX_KEY_BYTES]

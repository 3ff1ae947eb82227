from __future__ import annotations

import base64
import json
from pathlib import Path

import jsonschema

from contracts.codec import loads
from contracts.dlq import dead_letter

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

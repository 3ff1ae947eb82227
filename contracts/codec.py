"""The JSON codec of every topic: orjson, with Prometheus' special floats made explicit.

orjson writes NaN and ±Inf as `null` without a word and rejects the NaN literal, while
Prometheus values are often NaN or ±Inf. Records therefore carry every float that may be
special through `float_to_json` / `float_from_json`: finite floats stay JSON numbers,
the others become the strings "NaN", "+Inf" and "-Inf" (Prometheus' own spelling).
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from contracts.errors import KppError

_SPECIAL_TO_JSON = {math.inf: "+Inf", -math.inf: "-Inf"}
_SPECIAL_FROM_JSON = {"NaN": math.nan, "+Inf": math.inf, "-Inf": -math.inf, "Inf": math.inf}


class DecodeError(KppError):
    """A message that is not valid JSON or does not follow its topic's contract."""


def float_to_json(value: float) -> float | str:
    if value != value:  # NaN is the only float unequal to itself
        return "NaN"
    return _SPECIAL_TO_JSON.get(value, value)


def float_from_json(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        special = _SPECIAL_FROM_JSON.get(value)
        if special is not None:
            return special
    raise DecodeError(f"expected a number or one of 'NaN', '+Inf', '-Inf', got {value!r}")


def dumps(obj: Any) -> bytes:
    """Encode with sorted keys, so that equal records are equal bytes (replay compares bytes)."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def loads(data: bytes | str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not valid JSON: {exc}") from None


def check_string_labels(labels: dict, where: str) -> None:
    """Raise DecodeError unless every label name and value is a string (the stages join and
    compare them: a number broke a whole cluster window downstream). `where` starts the
    message, e.g. "samples[3]"."""
    for name, value in labels.items():
        if not isinstance(name, str):
            raise DecodeError(f"{where} label name {name!r} must be a string")
        if not isinstance(value, str):
            raise DecodeError(f"{where} label {name!r} must be a string, got {type(value).__name__} "
                              f"{repr(value)[:100]}")

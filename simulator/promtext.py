"""Prometheus text exposition format 0.0.4, written the way Go's client (expfmt) writes it.

The simulator must be byte-for-byte plausible, not merely parseable: producers and parsers are
tested against it, and the real captures show Go's float spelling (`1.048576e+06`, `0.25`, `3`,
`+Inf`). Python's `repr` differs (`1048576.0`), so floats go through `go_float`.

Families are plain data (`Family`, `Sample`) so a test can compare what was meant to be served
with what a parser read back, without going through text twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Sample:
    """One exposition line: full sample name (with `_bucket`/`_sum`/... suffix), labels, value."""

    name: str
    labels: Labels
    value: float


@dataclass(frozen=True)
class Family:
    """One metric family: the HELP/TYPE header and its samples, in exposition order."""

    name: str
    type: str
    help: str
    samples: tuple[Sample, ...] = field(default_factory=tuple)


def go_float(value: float) -> str:
    """Spell a float as Go's `strconv.FormatFloat(v, 'g', -1, 64)` (what expfmt writes).

    Shortest round-trip digits (Python's `repr` finds the same ones); Go's shortest 'g' switches
    to exponent form when the decimal exponent is < -4 or >= 6 (its `eprec = 6` for shortest), which
    is why the captures show `1.048576e+06` and `4.18e-07` yet `97520` and `0.000461056`.
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    sign, digit_tuple, exponent = Decimal(repr(float(value))).as_tuple()
    assert isinstance(exponent, int)
    raw = "".join(map(str, digit_tuple))
    significant = raw.lstrip("0")
    # value = 0.<digits> * 10**point
    point = len(raw) + exponent - (len(raw) - len(significant))
    digits = significant.rstrip("0")
    exp10 = point - 1
    prefix = "-" if sign else ""
    if exp10 < -4 or exp10 >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{prefix}{mantissa}e{'+' if exp10 >= 0 else '-'}{abs(exp10):02d}"
    if point <= 0:
        return f"{prefix}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{prefix}{digits}{'0' * (point - len(digits))}"
    return f"{prefix}{digits[:point]}.{digits[point:]}"


def escape_label_value(value: str) -> str:
    """Escape a label value as the text format requires (backslash, quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """Escape HELP text (backslash and newline only, per the 0.0.4 format)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_sample(sample: Sample) -> str:
    """One sample line, labels in the order given (callers pass them sorted, `le` last, as Go)."""
    if sample.labels:
        inner = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in sample.labels)
        return f"{sample.name}{{{inner}}} {go_float(sample.value)}"
    return f"{sample.name} {go_float(sample.value)}"


def render_families(families: list[Family]) -> str:
    """Whole exposition body; families with no samples are skipped, as Go's registry does."""
    lines: list[str] = []
    for fam in families:
        if not fam.samples:
            continue
        lines.append(f"# HELP {fam.name} {escape_help(fam.help)}")
        lines.append(f"# TYPE {fam.name} {fam.type}")
        lines.extend(format_sample(s) for s in fam.samples)
    return "\n".join(lines) + "\n" if lines else ""


def histogram_samples(name: str, labels: Labels, bounds: tuple[float, ...],
                      counts: list[int], total: float) -> list[Sample]:
    """Cumulative `_bucket` lines (+Inf last), then `_sum` and `_count` (== +Inf bucket).

    `counts` are per-bucket (non-cumulative) counts, len(bounds) + 1 with the overflow last;
    keeping them non-cumulative in the model makes "cumulative" a property of the renderer.
    """
    out: list[Sample] = []
    running = 0
    for bound, n in zip((*bounds, math.inf), counts, strict=True):
        running += n
        le = "+Inf" if math.isinf(bound) else go_float(bound)
        # Go writes the series' own labels (sorted) and then `le`, last.
        out.append(Sample(f"{name}_bucket", (*labels, ("le", le)), float(running)))
    out.append(Sample(f"{name}_sum", labels, total))
    out.append(Sample(f"{name}_count", labels, float(running)))
    return out

"""A strict, fast parser for the Prometheus text exposition format 0.0.4.

Public API::

    parse(text: str) -> list[Sample]
    parse_families(text: str) -> ParseResult      # samples + TYPE/HELP per family
    parse_json_lines(text: str) -> list[bytes]    # the samples as `kpp parse` prints them
    Sample(name, labels, value, timestamp_ms)     # a NamedTuple
    ParseError(KppError)                          # .line_number (1-based), .reason

`Sample.labels` is a plain ``dict[str, str]`` (a fresh dict per sample, safe to mutate): it is
what prometheus_client yields, what the codec serialises without conversion, and building it
costs about the same as a tuple of pairs. `value` is always a float (NaN and ±Inf included),
`timestamp_ms` the optional integer timestamp in milliseconds exactly as written.

Strictness. A line that breaks the format fails the whole input, as a Prometheus scrape does:
`ParseError` names the 1-based line and what was wrong. Rejected, among others: invalid metric or
label names (including reserved ``__``-prefixed label names), a missing ``=`` or quote,
an unterminated label value, an unknown escape in a label value (only ``\\\\``, ``\\"`` and
``\\n`` exist), a duplicate label, values Go's ``strconv.ParseFloat`` would not accept (``1_0``,
non-ASCII digits, ``+nan``, literals that overflow to ±Inf), non-integer or out-of-range
timestamps, text after the timestamp, an unknown TYPE, a second TYPE or HELP line for a family,
and a TYPE line after samples of its family. Deliberately lenient, as Prometheus' own parsers
are: blanks (space or tab) around every token, also inside label sets; a trailing comma in a
label set; an empty label set ``{}``; comments that are not HELP/TYPE; a HELP text whose
backslash is not followed by ``\\`` or ``n`` (kept verbatim, as prometheus_client does).

Speed. Lines in the shape real exporters write (single spaces, no escapes in label values) take
a fast path built from ``str.split``/``str.partition`` and dictionary look-ups of already
validated names. Anything else, and every line the fast path has a doubt about, goes through
the careful tokenizer (`_parse_line_slow`), which is the reference: the fast path only ever
accepts what the slow path accepts, with the same result (tests check this on random lines), and
error messages always come from the slow path. Validated names and the label sets of series
already seen (keyed by the exact `name{...}` text, as Prometheus' scrape cache does) are kept
in small bounded module-level caches, so repeated scrapes of one target skip label parsing;
samples always get their own labels dict. The cyclic GC is paused while a result is built
(it holds no cycles; tracked Sample tuples otherwise make big inputs much slower).
"""

from __future__ import annotations

import gc
import math
import re
from collections.abc import Iterator
from typing import NamedTuple

import orjson

from contracts.codec import float_to_json
from contracts.errors import KppError
from contracts.records import Sample  # the one definition every stage shares

__all__ = [
    "METRIC_TYPES",
    "ParseError",
    "ParseResult",
    "Sample",
    "iter_samples",
    "clear_caches",
    "parse",
    "parse_families",
    "parse_json_lines",
]

METRIC_TYPES: frozenset[str] = frozenset({"counter", "gauge", "histogram", "summary", "untyped"})


class ParseError(KppError):
    """The input is not valid text format 0.0.4; `str()` is ``line N: reason``."""

    def __init__(self, line_number: int, reason: str) -> None:
        super().__init__(f"line {line_number}: {reason}")
        self.line_number = line_number
        self.reason = reason

    def __reduce__(self):  # keep the exception picklable despite the two-argument constructor
        return (type(self), (self.line_number, self.reason))


class ParseResult(NamedTuple):
    """Samples in input order plus what the metadata lines declared.

    `types` and `helps` hold only families that have a TYPE/HELP line (help text unescaped);
    `family_of` maps every sample name to its family: a histogram ``foo``'s ``foo_bucket``,
    ``foo_sum`` and ``foo_count`` map to ``foo``, a summary's ``foo_sum``/``foo_count`` too,
    every other sample name to itself (the rules of Prometheus' Go parser).
    """

    samples: list[Sample]
    types: dict[str, str]
    helps: dict[str, str]
    family_of: dict[str, str]

    def family_type(self, sample_name: str) -> str:
        """TYPE of the family a sample belongs to; ``untyped`` when no TYPE line declared it."""
        family = self.family_of.get(sample_name, sample_name)
        return self.types.get(family, "untyped")


def parse(text: str) -> list[Sample]:
    """All samples of `text`, in input order. Raises `ParseError`."""
    return _parse(text, True).samples


def parse_families(text: str) -> ParseResult:
    """Samples plus TYPE and HELP per family. Raises `ParseError`."""
    return _parse(text, True)


def iter_samples(text: str) -> Iterator[Sample]:
    """Iterate over the samples of `text`. The whole text is validated first (a broken last
    line fails the whole input), so this is `iter(parse(text))`, offered for symmetry."""
    return iter(_parse(text, True).samples)


# --------------------------------------------------------------------------------------------
# Names

_METRIC_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

# Validated names -> one canonical instance. Shared across calls, so a producer scraping the same
# target every few seconds validates each name once and every sample shares the name objects.
# Bounded: a hostile target inventing names cannot grow it without limit.
_METRIC_NAMES: dict[str, str] = {}
_LABEL_NAMES: dict[str, str] = {}
_NAME_CACHE_LIMIT = 100_000


def _remember(cache: dict[str, str], name: str) -> str:
    if len(cache) >= _NAME_CACHE_LIMIT:
        cache.clear()
    cache[name] = name
    return name


def _family(name: str, types: dict[str, str]) -> str:
    """Family of sample `name`, as Prometheus' Go text parser resolves it."""
    if name in types:
        return name
    if name.endswith("_bucket"):
        base = name[:-7]
        if types.get(base) == "histogram":
            return base
    elif name.endswith("_sum") or name.endswith("_count"):
        base = name[: name.rindex("_")]
        if types.get(base) in ("histogram", "summary"):
            return base
    return name


# --------------------------------------------------------------------------------------------
# Values

_INF = math.inf
_NINF = -math.inf
# Characters a finite Go float literal is made of; with these only, Python's float() accepts
# exactly what strconv.ParseFloat accepts (Prometheus rejects 'p', 'P' and '_' outright, so hex
# floats and digit separators are out; Python would take '_', blanks and non-ASCII digits).
_NUMERIC_CHARS = "0123456789.eE+-"
# Spellings the fast path takes as they are; all others go through the case-insensitive check.
_FAST_SPECIALS: dict[str, float] = {"NaN": math.nan, "+Inf": _INF, "-Inf": _NINF, "Inf": _INF}
# strconv.ParseFloat, case-insensitively: "inf"/"infinity" with an optional sign, "nan" without.
_SPECIALS: dict[str, float] = {
    "nan": math.nan,
    "inf": _INF, "+inf": _INF, "-inf": _NINF,
    "infinity": _INF, "+infinity": _INF, "-infinity": _NINF,
}
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def _parse_value(token: str) -> float | None:
    """The float `token` spells per Go's strconv.ParseFloat, or None if it is not one."""
    if not token.strip(_NUMERIC_CHARS):
        try:
            value = float(token)
        except ValueError:
            return None
        if value == _INF or value == _NINF:  # a finite literal too large: Go says ErrRange
            return None
        return value
    return _SPECIALS.get(token.lower())


def _parse_timestamp(token: str) -> int | None:
    """The int64 `token` spells per Go's strconv.ParseInt(token, 10, 64), or None."""
    digits = token[1:] if token[:1] in ("+", "-") else token
    # isascii: str.isdigit() and int() also take non-ASCII digits; the length check keeps
    # int() clear of its 4300-digit limit (int64 has at most 19 digits).
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 19:
        return None
    value = int(token)
    return value if _INT64_MIN <= value <= _INT64_MAX else None


# --------------------------------------------------------------------------------------------
# The careful tokenizer: reference semantics and every error message

_BLANKS = " \t"
_LABEL_VALUE_RE = re.compile(r'(?:[^"\\]++|\\.)*+"')  # body of a quoted value + closing quote
_ESCAPE_RE = re.compile(r"\\(.)")
_LABEL_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
_HELP_ESCAPE_RE = re.compile(r"\\[\\n]")
_HELP_ESCAPES = {"\\\\": "\\", "\\n": "\n"}
_TOKEN_RE = re.compile(r"[^ \t]+")
_META_RE = re.compile(r"#[ \t]+(HELP|TYPE)(?:[ \t]+|$)")
_META_NAME_RE = re.compile(r"([^ \t]*)[ \t]*")

_COMMENT = object()  # _parse_line_slow's answer for a comment line


def _fail(lineno: int, reason: str) -> ParseError:
    return ParseError(lineno, reason)


def _unescape_label_value(raw: str, label: str, lineno: int) -> str:
    def replace(match: re.Match[str]) -> str:
        char = match.group(1)
        try:
            return _LABEL_ESCAPES[char]
        except KeyError:
            raise _fail(lineno, f"invalid escape sequence '\\{char}' in the value of label "
                                f"{label!r} (only \\\\, \\\" and \\n are allowed)") from None
    return _ESCAPE_RE.sub(replace, raw)


def _describe(char: str) -> str:
    if char == "\r":
        return "'\\r' (carriage return: CRLF line endings are not allowed)"
    return repr(char)


def _parse_line_slow(line: str, lineno: int) -> tuple[str, dict[str, str], float, int | None] | object | None:
    """Parse one line character by character (with small regexes).

    Returns None for a blank line, `_COMMENT` for a line starting with '#' (after blanks),
    else (name, labels, value, timestamp_ms) with names canonical. Raises ParseError.
    """
    end = len(line)
    pos = 0
    while pos < end and line[pos] in _BLANKS:
        pos += 1
    if pos == end:
        return None
    if line[pos] == "#":
        return _COMMENT

    match = _METRIC_NAME_RE.match(line, pos)
    if match is None:
        if line[pos] == "{":
            raise _fail(lineno, "expected a metric name before '{' (the quoted names of "
                                "text format 1.0 are not supported)")
        raise _fail(lineno, f"invalid metric name: unexpected {_describe(line[pos])} at the "
                            f"start of the line")
    name = match.group()
    pos = match.end()
    if pos < end and line[pos] not in " \t{":
        raise _fail(lineno, f"invalid character {_describe(line[pos])} in metric name, "
                            f"after {name!r}")
    while pos < end and line[pos] in _BLANKS:
        pos += 1

    labels: dict[str, str] = {}
    if pos < end and line[pos] == "{":
        pos += 1
        after_value: str | None = None  # label whose value we just read, for messages
        while True:
            while pos < end and line[pos] in _BLANKS:
                pos += 1
            if pos == end:
                raise _fail(lineno, "unterminated label set: expected a label name or '}'")
            char = line[pos]
            if char == "}":
                pos += 1
                break
            match = _LABEL_NAME_RE.match(line, pos)
            if match is None:
                if char == "," and after_value is None:
                    raise _fail(lineno, "expected a label name or '}' after '{', got ','")
                if char == ",":
                    raise _fail(lineno, "two commas in a row in the label set")
                raise _fail(lineno, f"expected a label name or '}}', got {_describe(char)}")
            label = match.group()
            pos = match.end()
            if label.startswith("__"):
                raise _fail(lineno, f"label name {label!r} is reserved (names starting with "
                                    f"'__' are for Prometheus' internal use)")
            while pos < end and line[pos] in _BLANKS:
                pos += 1
            if pos == end or line[pos] != "=":
                got = "end of line" if pos == end else _describe(line[pos])
                raise _fail(lineno, f"expected '=' after label name {label!r}, got {got}")
            pos += 1
            while pos < end and line[pos] in _BLANKS:
                pos += 1
            if pos == end or line[pos] != '"':
                got = "end of line" if pos == end else _describe(line[pos])
                raise _fail(lineno, f"expected '\"' to open the value of label {label!r}, "
                                    f"got {got}")
            match = _LABEL_VALUE_RE.match(line, pos + 1)
            if match is None:
                raise _fail(lineno, f"unterminated quoted value of label {label!r} "
                                    f"(missing closing '\"')")
            raw = line[pos + 1:match.end() - 1]
            value_text = _unescape_label_value(raw, label, lineno) if "\\" in raw else raw
            if label in labels:
                raise _fail(lineno, f"duplicate label name {label!r}")
            labels[_LABEL_NAMES.get(label) or _remember(_LABEL_NAMES, label)] = value_text
            after_value = label
            pos = match.end()
            while pos < end and line[pos] in _BLANKS:
                pos += 1
            if pos == end:
                raise _fail(lineno, f"unterminated label set: expected ',' or '}}' after the "
                                    f"value of label {label!r}")
            char = line[pos]
            pos += 1
            if char == "}":
                break
            if char != ",":
                raise _fail(lineno, f"expected ',' or '}}' after the value of label {label!r}, "
                                    f"got {_describe(char)}")
            while pos < end and line[pos] in _BLANKS:
                pos += 1
            if pos < end and line[pos] == ",":
                raise _fail(lineno, "two commas in a row in the label set")
        if pos < end and line[pos] not in _BLANKS:
            raise _fail(lineno, f"expected a blank after '}}', got {_describe(line[pos])}")

    tokens = _TOKEN_RE.findall(line, pos)
    if not tokens:
        raise _fail(lineno, f"missing value for metric {name!r}")
    value = _parse_value(tokens[0])
    if value is None:
        raise _fail(lineno, f"invalid value {tokens[0]!r} for metric {name!r}: expected a "
                            f"float, NaN, +Inf or -Inf" + _crlf_hint(tokens[0]))
    timestamp: int | None = None
    if len(tokens) > 1:
        timestamp = _parse_timestamp(tokens[1])
        if timestamp is None:
            raise _fail(lineno, f"invalid timestamp {tokens[1]!r} for metric {name!r}: "
                                f"expected an integer number of milliseconds (int64)"
                                + _crlf_hint(tokens[1]))
        if len(tokens) > 2:
            raise _fail(lineno, f"unexpected text {tokens[2]!r} after the timestamp")
    return (_METRIC_NAMES.get(name) or _remember(_METRIC_NAMES, name)), labels, value, timestamp


def _crlf_hint(token: str) -> str:
    return " (carriage return: CRLF line endings are not allowed)" if "\r" in token else ""


def _parse_meta(line: str, lineno: int, types: dict[str, str], helps: dict[str, str],
                sampled: set[str]) -> None:
    """A line starting with '#': HELP, TYPE or an ignored comment."""
    if line.startswith("# HELP ") or line.startswith("# TYPE "):
        keyword = line[2:6]
        rest = line[7:]
    else:
        match = _META_RE.match(line.lstrip(_BLANKS))
        if match is None:
            return  # an ordinary comment
        keyword = match.group(1)
        rest = match.string[match.end():]
    match = _META_NAME_RE.match(rest.lstrip(_BLANKS))
    assert match is not None  # the pattern matches every string
    name = match.group(1)
    text = match.string[match.end():].rstrip(_BLANKS)
    if not name:
        raise _fail(lineno, f"{keyword} line without a metric name")
    canonical = _METRIC_NAMES.get(name)
    if canonical is None:
        if _METRIC_NAME_RE.fullmatch(name) is None:
            raise _fail(lineno, f"invalid metric name {name!r} in {keyword} line")
        canonical = _remember(_METRIC_NAMES, name)
    if keyword == "HELP":
        if canonical in helps:
            raise _fail(lineno, f"second HELP line for metric {name!r}")
        if "\\" in text:
            text = _HELP_ESCAPE_RE.sub(lambda m: _HELP_ESCAPES[m.group()], text)
        helps[canonical] = text
        return
    if not text:
        raise _fail(lineno, f"TYPE line for {name!r} without a type")
    if text not in METRIC_TYPES:
        raise _fail(lineno, f"unknown metric type {text!r} for {name!r} (expected counter, "
                            f"gauge, histogram, summary or untyped)")
    if canonical in types:
        raise _fail(lineno, f"second TYPE line for metric {name!r}")
    if canonical in sampled:
        raise _fail(lineno, f"TYPE line for {name!r} after samples of that family")
    types[canonical] = text


# --------------------------------------------------------------------------------------------
# The loop with the fast path


class _Slow(Exception):
    """The fast path is not sure: hand the line to the careful tokenizer."""


_SLOW = _Slow()


# Series already seen: the text before the value (`name{labels}`) -> (name, labels). Like
# Prometheus' scrape cache, this skips label parsing for series a target exposed before: a
# producer scraping the same kube-proxy every few seconds sees the same series every time.
# Samples get a copy of the labels. Bounded (cleared when full) so a target with churning or
# countless series costs one insertion per new series and no unbounded memory.
_SERIES: dict[str, tuple[str, dict[str, str]]] = {}
_SERIES_LIMIT = 32_768


def clear_caches() -> None:
    """Forget the validated names and known series (benchmarks use it to time cold parses)."""
    _SERIES.clear()
    _METRIC_NAMES.clear()
    _LABEL_NAMES.clear()


def _new_metric_name(name: str) -> str:
    if _METRIC_NAME_RE.fullmatch(name) is None:
        raise _SLOW  # the slow path will say what is wrong
    return _remember(_METRIC_NAMES, name)


def _new_label_name(name: str) -> str:
    if _LABEL_NAME_RE.fullmatch(name) is None or name.startswith("__"):
        raise _SLOW
    return _remember(_LABEL_NAMES, name)


def _known_metric_name(name: str) -> str | None:
    """`name` made canonical if it is a valid metric name, else None."""
    if _METRIC_NAME_RE.fullmatch(name) is None:
        return None
    return _remember(_METRIC_NAMES, name)


def _parse_head_fast(head: str, names: dict[str, str],
                     label_names: dict[str, str]) -> tuple[str, dict[str, str]]:
    """`name` or `name{l="v",...}` in the exact shape exporters write, with names already
    validated; raises _Slow (or KeyError/IndexError) on anything else."""
    if head[-1] != "}":
        return names.get(head) or _new_metric_name(head), {}
    brace = head.find("{")
    if brace < 0:
        raise _SLOW
    raw_name = head[:brace]
    name = names.get(raw_name) or _new_metric_name(raw_name)
    body = head[brace + 1:-1]
    labels: dict[str, str] = {}
    if body:
        # Without a backslash, every '"' of a valid label set is a delimiter, so '",' splits
        # the pairs exactly and '="' each pair.
        if "\\" in body:
            raise _SLOW
        pairs = body.split('",')
        last = pairs[-1]
        if last:
            if last[-1] != '"':
                raise _SLOW
            pairs[-1] = last[:-1]
        else:
            del pairs[-1]  # trailing comma
        # Each pair holds one '"' (its '="'), each separator or the closing quote one more:
        # any other count means a quote inside a name or value, i.e. not this simple shape.
        if body.count('"') != 2 * len(pairs):
            raise _SLOW
        for pair in pairs:
            label, sep, label_value = pair.partition('="')
            if not sep:
                raise _SLOW
            labels[label_names.get(label) or _new_label_name(label)] = label_value
        if len(labels) != len(pairs):
            raise _SLOW  # duplicate label
    return name, labels


def _meta_line(line: str, lineno: int, types: dict[str, str], helps: dict[str, str],
               sampled: set[str]) -> None:
    """A line starting with '#'. "# TYPE name type" / "# HELP name text" as exporters write
    them are taken here; anything unusual (and every error) is left to _parse_meta."""
    keyword = line[:7]
    if keyword == "# TYPE ":
        raw, _, kind = line[7:].partition(" ")
        name = _METRIC_NAMES.get(raw) or _known_metric_name(raw)
        if name is not None and kind in METRIC_TYPES and name not in types and name not in sampled:
            types[name] = kind
            return
    elif keyword == "# HELP ":
        raw, _, doc = line[7:].partition(" ")
        name = _METRIC_NAMES.get(raw) or _known_metric_name(raw)
        if (name is not None and name not in helps and "\\" not in doc
                and doc[:1] not in _BLANKS and doc[-1:] not in _BLANKS):
            helps[name] = doc  # an empty doc fails the blank test: slow path
            return
    _parse_meta(line, lineno, types, helps, sampled)


_new_sample = tuple.__new__  # skips Sample.__new__'s Python frame: ~2x faster construction


def _parse(text: str, fast: bool) -> ParseResult:
    # Every Sample stays tracked by the cyclic GC (tuple subclasses are never untracked), so on
    # large inputs the collector's full passes over the growing result cost up to half the
    # time. The result holds no reference cycles: pause the collector while building it.
    if not gc.isenabled():
        return _parse_lines(text, fast)
    gc.disable()
    try:
        return _parse_lines(text, fast)
    finally:
        gc.enable()


def _parse_lines(text: str, fast: bool) -> ParseResult:
    samples: list[Sample] = []
    append = samples.append
    types: dict[str, str] = {}
    helps: dict[str, str] = {}
    family_of: dict[str, str] = {}
    sampled: set[str] = set()  # families that have samples, for "TYPE after samples"
    names = _METRIC_NAMES
    label_names = _LABEL_NAMES
    numeric = _NUMERIC_CHARS
    fast_specials = _FAST_SPECIALS
    inf, ninf = _INF, _NINF
    new, sample_type = _new_sample, Sample
    series = _SERIES
    series_get = series.get
    series_limit = _SERIES_LIMIT

    for lineno, line in enumerate(text.split("\n"), 1):
        if not line:
            continue
        if line[0] == "#":
            if fast:
                _meta_line(line, lineno, types, helps, sampled)
            else:
                _parse_meta(line, lineno, types, helps, sampled)
            continue
        if fast:
            # The shapes exporters write: `name value`, `name{l="v",...} value`, each optionally
            # followed by ` timestamp`, single spaces. Any surprise raises _Slow or a
            # KeyError/ValueError, and the line goes to the careful tokenizer.
            try:
                head, _, token = line.rpartition(" ")
                timestamp = None
                known = series_get(head)
                if known is None:
                    if head[-1] != "}" and " " in head:
                        # `... value timestamp`
                        if not (token.isascii() and token.isdigit()) or len(token) > 18:
                            raise _SLOW
                        timestamp = int(token)
                        head, _, token = head.rpartition(" ")
                        known = series_get(head)
                    if known is None:
                        known = _parse_head_fast(head, names, label_names)
                        if len(series) >= series_limit:
                            series.clear()
                        series[head] = known
                name, template = known
                labels: dict[str, str] = template.copy()
                if token.isdigit() and token.isascii() and len(token) < 309:
                    value = float(token)  # the common case, and it cannot overflow
                elif not token.strip(numeric):
                    value = float(token)
                    if value == inf or value == ninf:
                        raise _SLOW
                else:
                    value = fast_specials[token]
            except (_Slow, KeyError, ValueError, IndexError):
                pass
            else:
                family = family_of.get(name)
                if family is None:
                    family = family_of[name] = _family(name, types)
                    sampled.add(family)
                append(new(sample_type, (name, labels, value, timestamp)))
                continue

        result = _parse_line_slow(line, lineno)
        if result is None:
            continue
        if result is _COMMENT:
            _parse_meta(line.lstrip(_BLANKS), lineno, types, helps, sampled)
            continue
        name, labels, value, timestamp = result  # type: ignore[misc]
        family = family_of.get(name)
        if family is None:
            family = family_of[name] = _family(name, types)
            sampled.add(family)
        append(new(sample_type, (name, labels, value, timestamp)))

    return ParseResult(samples, types, helps, family_of)


# --------------------------------------------------------------------------------------------
# Straight to JSON lines (`kpp parse`)

# Label sets of the simple shape, keyed by their text with the values cut out (`body.split('"')`
# taken every other piece: ('le=', ',replica=', '') for le="1",replica="a") -> the JSON text
# that goes around the values ('{"le":"', '","replica":"', '"}').
_LABEL_SHAPES: dict[tuple[str, ...], tuple[str, ...]] = {}
_JSON_SPECIALS: dict[str, str] = {"NaN": "NaN", "+Inf": "+Inf", "-Inf": "-Inf", "Inf": "+Inf"}
_NULL_TAIL = ',"timestamp_ms":null}\n'
_JSON_CHUNK = 8192  # lines encoded at a time: few large strings, bounded intermediate lists


def _label_shape(shape: tuple[str, ...]) -> tuple[str, ...] | None:
    """The JSON around the values of a label set of `shape`, if `shape` is `name=`, then
    `,name=` pieces, then '' (no trailing comma) with valid, distinct, not reserved names;
    else None (the careful tokenizer takes the line)."""
    if len(shape) < 2 or shape[-1] != "":
        return None
    labels = []
    for index, piece in enumerate(shape[:-1]):
        if index and piece[:1] != ",":
            return None
        label = piece[1 if index else 0:-1]
        if (piece[-1:] != "=" or _LABEL_NAME_RE.fullmatch(label) is None or label.startswith("__")
                or label in labels):
            return None
        labels.append(label)
    # label names are [a-zA-Z0-9_]: nothing in them to escape
    around = ('{"' + labels[0] + '":"', *('","' + label + '":"' for label in labels[1:]), '"}')
    if len(_LABEL_SHAPES) >= _SERIES_LIMIT:
        _LABEL_SHAPES.clear()
    _LABEL_SHAPES[shape] = around
    return around


def _json_tail(timestamp_ms: int | None) -> str:
    return _NULL_TAIL if timestamp_ms is None else f',"timestamp_ms":{timestamp_ms}}}\n'


def _json_chunk(heads: list[str], values: list[float | str], tails: list[str]) -> bytes:
    # One orjson call formats every value of the chunk exactly as it formats a single one;
    # no JSON number or special-value string contains a comma.
    formatted = orjson.dumps(values)[1:-1].decode().split(",")
    parts: list[str] = [""] * (3 * len(heads))
    parts[0::3] = heads
    parts[1::3] = formatted
    parts[2::3] = tails
    return "".join(parts).encode()


def parse_json_lines(text: str) -> list[bytes]:
    """The samples of `text` as JSON lines, in chunks of bytes: one
    ``{"name", "labels", "value", "timestamp_ms"}`` object per sample and line, exactly what
    ``orjson.dumps({...}, option=OPT_APPEND_NEWLINE)`` writes for each `parse()` sample with
    `float_to_json(value)`. Accepts, rejects and fails (ParseError) exactly as `parse()`.

    Built for `kpp parse` of large files: a line of the simple shape (no escapes, printable
    label values) becomes its JSON text by string operations on the line, with no Sample,
    labels dict or per-sample encoder call; every other line goes through the careful
    tokenizer and orjson."""
    if not gc.isenabled():
        return _json_lines(text)
    gc.disable()
    try:
        return _json_lines(text)
    finally:
        gc.enable()


def _json_lines(text: str) -> list[bytes]:
    chunks: list[bytes] = []
    heads: list[str] = []
    values: list[float | str] = []
    tails: list[str] = []
    types: dict[str, str] = {}
    helps: dict[str, str] = {}
    family_of: dict[str, str] = {}
    sampled: set[str] = set()
    prefixes: dict[str, str] = {}  # metric name -> '{"name":"<name>","labels":'
    names = _METRIC_NAMES
    shapes = _LABEL_SHAPES
    numeric = _NUMERIC_CHARS
    specials = _JSON_SPECIALS
    inf, ninf = _INF, _NINF
    null_tail = _NULL_TAIL

    for lineno, line in enumerate(text.split("\n"), 1):
        if not line:
            continue
        if line[0] == "#":
            _meta_line(line, lineno, types, helps, sampled)
            continue
        try:
            head, _, token = line.rpartition(" ")
            tail = null_tail
            if head[-1] != "}" and " " in head:  # `... value timestamp`
                if not (token.isascii() and token.isdigit()) or len(token) > 18:
                    raise _SLOW
                tail = f',"timestamp_ms":{int(token)}}}\n'
                head, _, token = head.rpartition(" ")
            if head[-1] == "}":
                brace = head.find("{")
                if brace < 0:
                    raise _SLOW
                raw_name = head[:brace]
                body = head[brace + 1:-1]
                if not body:
                    labels = "{}"
                else:
                    if "\\" in body or not body.isprintable():
                        raise _SLOW  # escapes, or characters JSON must escape
                    pieces = body.split('"')
                    if not len(pieces) & 1:
                        raise _SLOW  # an odd number of quotes
                    shape = tuple(pieces[0::2])
                    around = shapes.get(shape) or _label_shape(shape)
                    if around is None:
                        raise _SLOW
                    pieces[0::2] = around
                    labels = "".join(pieces)
            else:
                raw_name = head
                labels = "{}"
            prefix = prefixes.get(raw_name)
            if prefix is None:
                name = names.get(raw_name) or _new_metric_name(raw_name)
                prefix = prefixes[name] = '{"name":"' + name + '","labels":'
            if token.isdigit() and token.isascii() and len(token) < 309:
                value: float | str = float(token)
            elif not token.strip(numeric):
                value = float(token)
                if value == inf or value == ninf:
                    raise _SLOW
            else:
                value = specials[token]
        except (_Slow, KeyError, ValueError, IndexError):
            result = _parse_line_slow(line, lineno)
            if result is None:
                continue
            if result is _COMMENT:
                _parse_meta(line.lstrip(_BLANKS), lineno, types, helps, sampled)
                continue
            raw_name, label_dict, number, timestamp = result  # type: ignore[misc]
            prefix = prefixes.get(raw_name)
            if prefix is None:
                prefix = prefixes[raw_name] = '{"name":"' + raw_name + '","labels":'
            labels = orjson.dumps(label_dict).decode()
            value = float_to_json(number)
            tail = _json_tail(timestamp)
        if raw_name not in family_of:
            family = family_of[raw_name] = _family(raw_name, types)
            sampled.add(family)
        heads.append(prefix + labels + ',"value":')
        values.append(value)
        tails.append(tail)
        if len(heads) >= _JSON_CHUNK:
            chunks.append(_json_chunk(heads, values, tails))
            heads, values, tails = [], [], []
    if heads:
        chunks.append(_json_chunk(heads, values, tails))
    return chunks

"""producers.parser: agreement with prometheus_client, sample for sample, on the real kube-proxy
captures and on generated expositions; fast path == careful path; every error kind with its
line number."""

from __future__ import annotations

import math
import pickle
import re
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from contracts.codec import float_to_json
from contracts.errors import KppError
from producers import parser as parser_module
from producers.parser import ParseError, Sample, parse, parse_families, parse_json_lines

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kube-proxy"
CAPTURES = sorted(FIXTURES.glob("*.txt"))


# --------------------------------------------------------------------------------------------
# Comparing with prometheus_client

def _norm_value(value: float) -> float | str:
    return "NaN" if value != value else float(value)


def reference_samples(text: str) -> list[tuple]:
    """prometheus_client's samples, flattened to (name, labels, value, timestamp in s).

    One quirk is undone: for a counter whose TYPE name lacks `_total`, prometheus_client
    renames its samples to `<name>_total` (the OpenMetrics convention it uses internally). The
    counter names are read from the TYPE lines here, independently of our parser.
    """
    counters_without_total = {
        name for name in re.findall(r"^[ \t]*#[ \t]+TYPE[ \t]+(\S+)[ \t]+counter[ \t]*$", text,
                                    re.MULTILINE)
        if not name.endswith("_total")
    }
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if (family.type == "counter" and family.name in counters_without_total
                    and name == family.name + "_total"):
                name = family.name
            timestamp = sample.timestamp
            if timestamp is not None and hasattr(timestamp, "sec"):  # a Timestamp object
                timestamp = timestamp.sec + timestamp.nsec / 1e9
            out.append((name, sample.labels, _norm_value(sample.value), timestamp))
    return out


def our_samples(samples: list[Sample]) -> list[tuple]:
    """Ours in the same shape. prometheus_client computes a timestamp as int(text) / 1000;
    the same division on our exact milliseconds gives the identical float."""
    return [(s.name, s.labels, _norm_value(s.value),
             None if s.timestamp_ms is None else s.timestamp_ms / 1000) for s in samples]


def assert_same_outcome(text: str) -> None:
    """The fast path and the careful tokenizer agree: same result or the same error."""
    try:
        fast = parser_module._parse(text, True)
    except ParseError as exc:
        with pytest.raises(ParseError) as slow_exc:
            parser_module._parse(text, False)
        assert (slow_exc.value.line_number, slow_exc.value.reason) == (exc.line_number, exc.reason)
        return
    slow = parser_module._parse(text, False)
    assert our_samples(fast.samples) == our_samples(slow.samples)
    assert [s.timestamp_ms for s in fast.samples] == [s.timestamp_ms for s in slow.samples]
    assert (fast.types, fast.helps, fast.family_of) == (slow.types, slow.helps, slow.family_of)


# --------------------------------------------------------------------------------------------
# The real captures

def test_captures_present() -> None:
    names = {path.name for path in CAPTURES}
    assert {"v1.21.1-userspace.txt", "v1.25.3-iptables.txt", "v1.28.0-iptables.txt"} <= names


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_capture_matches_prometheus_client(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    expected = reference_samples(text)
    assert len(expected) > 100
    parser_module.clear_caches()
    assert our_samples(parse(text)) == expected  # cold caches
    assert our_samples(parse(text)) == expected  # warm caches (known series)
    assert_same_outcome(text)


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_capture_types_and_helps_match_prometheus_client(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    result = parse_families(text)
    checked = 0
    for family in text_string_to_metric_families(text):
        # prometheus_client names a counter family without its `_total`.
        name = family.name
        if family.type == "counter" and name + "_total" in result.types:
            name += "_total"
        expected_type = "untyped" if family.type == "unknown" else family.type
        assert result.types.get(name, "untyped") == expected_type, name
        assert result.helps.get(name, "") == family.documentation, name
        for sample in family.samples:
            assert result.family_type(sample.name) == expected_type, sample.name
            checked += 1
    assert checked == len(result.samples)


def test_kube_proxy_histogram_families() -> None:
    result = parse_families((FIXTURES / "v1.28.0-iptables.txt").read_text(encoding="utf-8"))
    family = "kubeproxy_sync_proxy_rules_duration_seconds"
    assert result.types[family] == "histogram"
    for suffix in ("_bucket", "_sum", "_count"):
        assert result.family_of[family + suffix] == family
    buckets = [s for s in result.samples if s.name == family + "_bucket"]
    assert buckets and buckets[-1].labels["le"] == "+Inf"
    assert [s.value for s in buckets] == sorted(s.value for s in buckets)


def test_labels_are_fresh_dicts_despite_the_series_cache() -> None:
    text = 'a{x="1"} 1\nb 2\n'
    first = parse(text)
    first[0].labels["x"] = "mutated"
    first[1].labels["y"] = "added"
    second = parse(text)
    assert second[0].labels == {"x": "1"} and second[1].labels == {}
    assert second[0].labels is not first[0].labels


# --------------------------------------------------------------------------------------------
# Generated expositions

_SAFE_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\n"),
                     max_size=15)
LABEL_VALUES = st.one_of(
    st.text(max_size=10),
    st.sampled_from(["", "\\", '"', "\n", "\\n", '\\"', 'a"b', "}", "{", ",", "=", '="', '",',
                     " ", "\t", "\r", "\u2028", "\x85", "é", "日本", " # x", "a\\", "\\\\n"]),
)
LABEL_NAMES = st.from_regex(r"[a-zA-Z][a-zA-Z0-9_]{0,6}|_[a-zA-Z0-9][a-zA-Z0-9_]{0,6}",
                            fullmatch=True).filter(lambda n: n not in ("le", "quantile"))
BASE_NAMES = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,10}", fullmatch=True)
SPECIAL_SPELLINGS = ["NaN", "nan", "NAN", "+Inf", "-Inf", "Inf", "inf", "+inf", "-inf", "INF",
                     "Infinity", "-infinity", "+Infinity"]
_FORMATS = [repr, lambda f: f"{f:e}", lambda f: f"{f:.3E}", lambda f: f"{f:g}",
            lambda f: f"{f:+.17g}"]
VALUES = st.one_of(
    st.builds(lambda f, fmt: fmt(f), st.floats(min_value=-1e300, max_value=1e300),
              st.sampled_from(_FORMATS)),
    st.integers(-10**25, 10**25).map(str),
    st.sampled_from(SPECIAL_SPELLINGS + ["0", "-0", "+1", ".5", "5.", "1e3", "1E-3", "007"]),
)
TIMESTAMPS = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63 - 1).map(str),
    st.integers(0, 2**45).map(lambda t: f"+{t}"),
)
GAPS = st.sampled_from([" ", "\t", "  ", " \t "])
PADS = st.sampled_from(["", "", "", " ", "\t"])
NOISE = st.sampled_from(["", " ", "\t", "#", "# a comment", "#HELP not meta", "# TYPEx y",
                         "  # indented comment", "# HELPER foo"])


def _escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


@st.composite
def expositions(draw):
    """Valid text format 0.0.4 plus what it declares: (text, types, helps, sample count)."""
    lines: list[str] = []
    types: dict[str, str] = {}
    helps: dict[str, str] = {}
    count = 0

    def noise():
        if draw(st.integers(0, 4)) == 0:
            lines.append(draw(NOISE))

    for index in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["counter", "gauge", "untyped", "summary", "histogram"]))
        # The index keeps names of families, and of their _bucket/_sum/_count samples, apart.
        name = f"{draw(BASE_NAMES)}_f{index}"
        if kind == "counter" and draw(st.booleans()):
            name += "_total"
        meta = []
        if draw(st.booleans()):
            doc = draw(_SAFE_TEXT)
            escaped = _escape_help(doc)
            if escaped == escaped.strip():  # prometheus_client strips the line
                meta.append(f"# HELP {name} {escaped}".rstrip(" "))
                helps[name] = doc
        if kind != "untyped" or draw(st.booleans()):
            meta.append(f"# TYPE {name}{draw(GAPS)}{kind}")
            types[name] = kind
        if draw(st.booleans()):
            meta.reverse()
        lines.extend(meta)
        noise()
        for _series in range(draw(st.integers(0, 3))):
            label_names = draw(st.lists(LABEL_NAMES, max_size=3, unique=True))
            labels = {label: draw(LABEL_VALUES) for label in label_names}
            if kind == "histogram":
                rows = [(f"{name}_bucket", {**labels, "le": bound})
                        for bound in draw(st.lists(st.sampled_from(
                            ["0.1", "1", "2.5e+01", "+Inf"]), min_size=1, max_size=3))]
                rows += [(f"{name}_sum", labels), (f"{name}_count", labels)]
            elif kind == "summary":
                rows = [(name, {**labels, "quantile": q})
                        for q in draw(st.lists(st.sampled_from(["0.5", "0.99"]), max_size=2))]
                rows += [(f"{name}_sum", labels), (f"{name}_count", labels)]
            else:
                rows = [(name, labels)]
            for sample_name, sample_labels in rows:
                line = draw(PADS) + sample_name
                if sample_labels or draw(st.booleans()):
                    pairs = [f'{draw(PADS)}{k}{draw(PADS)}={draw(PADS)}"'
                             f'{_escape_label_value(v)}"{draw(PADS)}'
                             for k, v in sample_labels.items()]
                    trailing = "," + draw(PADS) if pairs and draw(st.booleans()) else ""
                    line += draw(PADS) + "{" + ",".join(pairs) + trailing + "}"
                line += draw(GAPS) + draw(VALUES)
                timestamp = draw(TIMESTAMPS)
                if timestamp is not None:
                    line += draw(GAPS) + timestamp
                lines.append(line + draw(PADS))
                count += 1
                noise()
    text = "\n".join(lines) + draw(st.sampled_from(["", "\n", "\n\n"]))
    return text, types, helps, count


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expositions())
@example(('# TYPE a_f0 counter\na_f0{x="\\\\\\"\\n"} +Inf 1\n', {"a_f0": "counter"}, {}, 1))
def test_generated_expositions_match_prometheus_client(case) -> None:
    text, types, helps, count = case
    result = parse_families(text)
    assert len(result.samples) == count
    assert our_samples(result.samples) == reference_samples(text)
    assert result.types == types
    assert result.helps == helps
    assert_same_outcome(text)
    assert_same_json(text)


# Random line soup from the format's own characters: mostly invalid, sometimes valid. Whatever
# it is, the fast path must agree with the careful tokenizer (same samples or same error), and
# when we accept a text prometheus_client (laxer than the Go parsers) must accept it too and
# yield the same samples.
_SOUP = st.text(alphabet=st.sampled_from(list('ab_:{}=",\\n #\t019.e+-NaIf') + ["\r", "é"]),
                max_size=40)
_LINE = st.one_of(
    _SOUP,
    st.builds(lambda name, body, value: f"{name}{{{body}}} {value}",
              st.sampled_from(["a", "b", "a_b", "a:b"]), _SOUP, st.sampled_from(["1", "NaN"])),
    st.builds(lambda body: f'a{{x="{body}"}} 1', _SOUP),
    st.builds(lambda a, b: f"a {a} {b}".rstrip(), st.sampled_from(["1", "+Inf", "1e5", "x", ""]),
              st.sampled_from(["", "5", "-5", "1.5", "99999999999999999999"])),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(_LINE, max_size=5).map("\n".join))
def test_fast_path_agrees_with_careful_tokenizer(text: str) -> None:
    assert_same_outcome(text)
    assert_same_json(text)
    try:
        ours = parse(text)
    except ParseError:
        return
    assert our_samples(ours) == reference_samples(text)


# --------------------------------------------------------------------------------------------
# parse_json_lines: `kpp parse`'s output, built without a Sample per line, must be byte for byte
# what encoding every parse() sample with orjson gives (the command's output before it existed)

def json_reference(text: str) -> bytes:
    return b"".join(orjson.dumps({"name": s.name, "labels": s.labels, "value": float_to_json(s.value),
                                  "timestamp_ms": s.timestamp_ms}, option=orjson.OPT_APPEND_NEWLINE)
                    for s in parse(text))


def assert_same_json(text: str) -> None:
    """parse_json_lines == json_reference, or both fail with the same line and reason."""
    try:
        expected = json_reference(text)
    except ParseError as exc:
        with pytest.raises(ParseError) as caught:
            parse_json_lines(text)
        assert (caught.value.line_number, caught.value.reason) == (exc.line_number, exc.reason)
        return
    assert b"".join(parse_json_lines(text)) == expected


def replicated(text: str, replicas: int) -> str:
    """Every sample line of `text` once per replica, with a `replica` label added last."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            out.append(line)
            continue
        head, _, rest = line.partition(" ")
        for replica in range(replicas):
            label = f'replica="{replica}"'
            out.append(f"{head[:-1]},{label}}} {rest}" if head.endswith("}") else f"{head}{{{label}}} {rest}")
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_json_lines_of_captures_are_the_encoded_samples(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert_same_json(text)
    # more samples than one encoded chunk, as in the benchmark's replicated capture
    big = replicated(text, 80)
    assert len(parse(big)) > parser_module._JSON_CHUNK
    assert_same_json(big)


# Label values of the simple shape (no quote, backslash or newline) with the characters an
# encoder might escape: non-ASCII, HTML-ish, DEL, Unicode line separators, control characters.
_SIMPLE_VALUES = st.text(alphabet=st.characters(codec="utf-8", exclude_characters='"\\\n'),
                         max_size=12) | st.sampled_from(["<>&/'", "\x7f", "\u2028", "\t", "\x00",
                                                          "日本", "\ufeff", "} 1", "a,b=c"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b_c", "x:y"]), _SIMPLE_VALUES, _SIMPLE_VALUES,
                          st.sampled_from(["1", "0", "-0", "1e+06", "0.001", "NaN", "+Inf", "Inf",
                                           "-Inf", "123456789012345678901234567890", "1 1700000000123",
                                           "2 -5", "3 007"])),
                max_size=6))
def test_json_lines_of_simple_label_values_match(lines) -> None:
    assert_same_json("\n".join(f'{name}{{a="{v1}",b="{v2}"}} {value}' for name, v1, v2, value in lines))


# --------------------------------------------------------------------------------------------
# Hand-picked valid edge cases, each checked against prometheus_client

@pytest.mark.parametrize("text", [
    "a 1\n",
    "a:b:c 1",
    "a{} 1",
    'a{x=""} 1',
    'a{x="1",} 1',
    'a { x = "1" , y = "2" , } 1',
    'a{x="1"}\t2\t3',
    "  a  1  2  ",
    'a{x="a\\\\b\\"c\\nd"} 1',
    'a{x="日本 \u2028 \x85 \r"} 1',
    'a{x="}{,=\\" # "} 1',
    "a NaN\nb +Inf\nc -Inf\nd Inf\ne nan\nf -infinity\ng 1e308\nh -0\ni .5\nj 5.\n",
    "a 1 -1\nb 1 0\nc 1 9223372036854775807\nd 1 -9223372036854775808\ne 1 +7",
    "# HELP a first \\\\ line\\nsecond \\t kept\n# TYPE a gauge\na 1",
    "# TYPE a counter\na 1\n# TYPE b_total counter\nb_total 2",
    '# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 3\nh_count 2',
    '# TYPE s summary\ns{quantile="0.5"} 1\ns_sum 3\ns_count 2',
    "# just a comment\n#\n\n   \n\t\n#HELP not meta\na 1",
    "# HELP a  two blanks before, blanks after \t \n#  TYPE  a \t gauge \na 1\n# HELP b\ttab\n"
    "b 2\n# HELP c\nc 3\n# HELP d \n  # TYPE d counter\nd 4",
])
def test_edge_cases_match_prometheus_client(text: str) -> None:
    assert our_samples(parse(text)) == reference_samples(text)
    assert_same_outcome(text)
    assert_same_json(text)
    helps = parse_families(text).helps
    for family in text_string_to_metric_families(text):
        if family.name in helps or family.documentation:
            assert helps.get(family.name) == family.documentation, family.name


def test_values_and_timestamps_are_exact() -> None:
    samples = parse("a 0.1 1700000000123\nb -Infinity -5\nc NaN\nd 12345678901234567890\n")
    assert [s.timestamp_ms for s in samples] == [1700000000123, -5, None, None]
    assert all(isinstance(s.value, float) for s in samples)
    assert samples[0].value == float("0.1") and samples[1].value == -math.inf
    assert math.isnan(samples[2].value) and samples[3].value == float("12345678901234567890")


def test_help_unescaping_and_family_of_histogram() -> None:
    result = parse_families('# HELP h a\\\\b\\nc \\x\n# TYPE h histogram\nh_bucket{le="1"} 0\n'
                            "h_sum 0\nh_count 0\nh_total 0\n")
    assert result.helps == {"h": "a\\b\nc \\x"}
    assert result.family_of == {"h_bucket": "h", "h_sum": "h", "h_count": "h",
                                "h_total": "h_total"}
    assert result.family_type("h_sum") == "histogram"
    assert result.family_type("h_total") == "untyped"


# --------------------------------------------------------------------------------------------
# Errors: the whole input fails, with the line and what was wrong

_PREFIX = "# HELP ok fine\nok 1\n\n"  # the broken line is line 4


@pytest.mark.parametrize("line, fragment", [
    ('foo{code 200} 1', "expected '=' after label name 'code'"),
    ('foo{code=200} 1', "expected '\"' to open the value of label 'code'"),
    ('foo{a="b} 1', "unterminated quoted value of label 'a'"),
    ('foo{a="b\\', "unterminated quoted value of label 'a'"),
    ('foo{a="b"', "unterminated label set"),
    ('foo{a="b" c="d"} 1', "expected ',' or '}' after the value of label 'a'"),
    ('foo{a="x"y"} 1', "expected ',' or '}' after the value of label 'a'"),
    ('foo{,} 1', "expected a label name or '}' after '{'"),
    ('foo{a="1",,b="2"} 1', "two commas in a row"),
    ('foo{9a="b"} 1', "expected a label name or '}'"),
    ('foo{a.b="c"} 1', "expected '=' after label name 'a'"),
    ('foo{__name__="x"} 1', "label name '__name__' is reserved"),
    ('foo{__x="y"} 1', "label name '__x' is reserved"),
    ('foo{a="1",a="2"} 1', "duplicate label name 'a'"),
    ('foo{a="\\t"} 1', "invalid escape sequence '\\t' in the value of label 'a'"),
    ('{a="b"} 1', "expected a metric name before '{'"),
    ('9foo 1', "invalid metric name"),
    ('foo-bar 1', "invalid character '-' in metric name, after 'foo'"),
    ('foo{a="b"}1', "expected a blank after '}'"),
    ("foo", "missing value for metric 'foo'"),
    ('foo{a="b"}', "missing value for metric 'foo'"),
    ("foo abc", "invalid value 'abc' for metric 'foo'"),
    ("foo 1_000", "invalid value '1_000'"),
    ("foo +nan", "invalid value '+nan'"),
    ("foo 1e999", "invalid value '1e999'"),
    ("foo " + "9" * 400, "invalid value '999"),  # an integer literal too large for a float
    ("foo ٣", "invalid value"),
    ("foo 0x1p3", "invalid value"),
    ("foo 1\r", "carriage return"),
    ("foo 1 1.5", "invalid timestamp '1.5'"),
    ("foo 1 9223372036854775808", "invalid timestamp"),
    ("foo 1 ٣", "invalid timestamp"),
    ("foo 1 2 3", "unexpected text '3' after the timestamp"),
    ("# TYPE foo counters", "unknown metric type 'counters'"),
    ("# TYPE foo COUNTER", "unknown metric type 'COUNTER'"),
    ("# TYPE foo", "TYPE line for 'foo' without a type"),
    ("# TYPE", "TYPE line without a metric name"),
    ("# HELP", "HELP line without a metric name"),
    ("# TYPE 1foo gauge", "invalid metric name '1foo' in TYPE line"),
    ("# HELP foo.bar text", "invalid metric name 'foo.bar' in HELP line"),
    ("# TYPE ok gauge", "TYPE line for 'ok' after samples of that family"),
    ("# HELP ok again", "second HELP line for metric 'ok'"),
])
def test_errors_name_line_and_cause(line: str, fragment: str) -> None:
    text = _PREFIX + line + "\nlater 1\n"
    with pytest.raises(ParseError) as caught:
        parse(text)
    error = caught.value
    assert error.line_number == 4
    assert fragment in error.reason
    assert str(error) == f"line 4: {error.reason}"
    assert_same_outcome(text)
    assert_same_json(text)


@pytest.mark.parametrize("text, line_number, fragment", [
    ("# TYPE foo gauge\n# TYPE foo gauge\n", 2, "second TYPE line for metric 'foo'"),
    ("# TYPE foo gauge\nfoo 1\n# TYPE foo counter\n", 3, "second TYPE line"),
    ('# TYPE h histogram\nh_bucket{le="1"} 1\n# TYPE h gauge', 3, "second TYPE line"),
    ("h_sum 1\n# TYPE h_sum summary\n", 2, "TYPE line for 'h_sum' after samples"),
    ("a 1\n" * 16 + 'foo{code:"200"} 1', 17, "expected '=' after label name 'code'"),
])
def test_errors_depending_on_earlier_lines(text: str, line_number: int, fragment: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse(text)
    assert caught.value.line_number == line_number
    assert fragment in caught.value.reason
    assert_same_outcome(text)
    assert_same_json(text)


def test_parse_error_is_a_kpp_error_and_picklable() -> None:
    with pytest.raises(KppError) as caught:
        parse("a 1\nb{")
    error = caught.value
    assert isinstance(error, ParseError) and error.exit_code == 1
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.line_number, copy.reason, str(copy)) == (2, error.reason, str(error))

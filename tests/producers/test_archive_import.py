"""`kpp archive` and `kpp import` against the real broker and the real VictoriaMetrics:
archive → import into a wiped (new) prefix → replay gives the original derived records;
a VictoriaMetrics export imported and replayed agrees with VictoriaMetrics' own
histogram_quantile."""

from __future__ import annotations

import gzip
import json
import math
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict

import httpx
import pytest

from contracts.derived import DerivedRecord
from producers.parser import parse_families
from simulator import Cluster
from streams.config import StreamSettings
from tests.conftest import REPO
from tests.streams.harness import produce, unique_prefix
from tests.streams.reference import run_reference
from tests.streams.harness import create_topics
from tests.streams.replay_helpers import KINDS, derived, read_all, rfc3339, run_kpp, validate_all
from tests.streams.simdata import scrape_records


START = 1_700_002_500  # 5 minutes before an hour boundary (1_700_002_800 = 2023-11-14T23:00:00Z)
HOUR_BOUNDARY = 1_700_002_800


def _replay(kafka, prefix: str, namespace: str, start_s: int, end_s: int) -> tuple[list, str]:
    proc, _ = run_kpp("replay", "--from", rfc3339(start_s * 1000), "--to", rfc3339(end_s * 1000),
                      "--namespace", namespace, "--topic-prefix", prefix, "--kafka-bootstrap", kafka.bootstrap,
                      "--progress", "off")
    return derived(kafka, f"{namespace}.{prefix}"), proc.stderr.strip().splitlines()[-1]


@pytest.mark.integration
def test_archive_wipe_import_replay_gives_the_original_records(kafka, tmp_path):
    a, b = unique_prefix(), unique_prefix()
    create_topics(kafka, a, 2)
    create_topics(kafka, b, 2)
    records = scrape_records(nodes=4, minutes=12, seed=21, start_s=START)
    messages = [(r.key, r.encode(), r.scrape_ts_ms) for r in records]
    first = [m for m in messages if m[2] < (START + 600) * 1000]
    kafka_args = ("--kafka-bootstrap", kafka.bootstrap)
    archive = tmp_path / "archive"

    # archive what is there, then (resuming from the committed offsets) what came later
    produce(kafka, f"{a}.samples", first)
    proc, t_archive = run_kpp("archive", "--until-now", "--dir", str(archive), "--topic-prefix", a, *kafka_args)
    assert f"{len(first)} records archived" in proc.stderr
    produce(kafka, f"{a}.samples", messages[len(first):])
    proc, _ = run_kpp("archive", "--until-now", "--dir", str(archive), "--topic-prefix", a, *kafka_args)
    assert f"{len(messages) - len(first)} records archived" in proc.stderr
    proc, _ = run_kpp("archive", "--until-now", "--dir", str(archive), "--topic-prefix", a, *kafka_args)
    assert "0 records archived" in proc.stderr

    index = json.loads((archive / "index.json").read_text())
    files = index["files"]
    assert sum(f["records"] for f in files) == len(messages)
    assert {f["hour"] for f in files} == {"2023-11-14T22:00:00Z", "2023-11-14T23:00:00Z"}
    assert {f["partition"] for f in files} == {0, 1}
    seen = set()
    for f in files:
        lines = [json.loads(line) for line in gzip.open(archive / f["file"])]
        assert len(lines) == f["records"] and f["file"].endswith(".jsonl.gz")
        assert {(x["partition"], x["offset"]) for x in lines}.isdisjoint(seen)
        seen |= {(x["partition"], x["offset"]) for x in lines}
        assert f["first_offset"] == lines[0]["offset"] and f["last_offset"] == lines[-1]["offset"]
        assert f["hour_start_ms"] <= f["min_scrape_ts_ms"] <= f["max_scrape_ts_ms"] < f["hour_start_ms"] + 3_600_000
    assert not list(archive.rglob("*.part"))

    # import into a new prefix: the same messages, keys and timestamps, partition by partition
    proc, t_import = run_kpp("import", str(archive), "--topic-prefix", b, *kafka_args)
    assert f"{len(messages)} messages published" in proc.stderr
    original = read_all(kafka, [f"{a}.samples"])
    imported = read_all(kafka, [f"{b}.samples"])
    assert [m[1:] for m in imported] == [m[1:] for m in original]  # partition, offset, key, value, ts

    # derived from the import == derived from the original == the in-process reference
    end = START + 12 * 60 + 300
    from_original, _ = _replay(kafka, a, "orig", START, end)
    from_import, summary = _replay(kafka, b, "imp", START, end)
    expected = {(k, key, v) for t, key, v in run_reference(StreamSettings(topic_prefix="x", partitions=2),
                                                           [(m[0], m[1]) for m in messages])
                for k in [t.split(".")[-1]] if k in KINDS}
    assert set(from_import) == set(from_original) == expected
    assert validate_all(from_import) == len(expected)

    # importing the same archive again does not double-count: the copies are duplicates or late
    run_kpp("import", str(archive / "index.json"), "--topic-prefix", b, *kafka_args)
    twice, summary = _replay(kafka, b, "twice", START, end)
    once = {r for r in from_import}
    assert {r for r in twice if r[0] != "health"} == {r for r in once if r[0] != "health"}

    def without_duplicates(recs):
        out = set()
        for kind, key, value in recs:
            if kind == "health":
                obj = json.loads(value)
                obj["values"].pop("duplicates")
                value = json.dumps(obj, sort_keys=True).encode()
            out.add((kind, key, value))
        return out

    assert without_duplicates(twice) == without_duplicates(once)
    late = int(summary.split("late ")[1].split(",")[0])
    dups = int(summary.split("duplicates ")[1].split(";")[0])
    assert late > 0 and dups > 0 and late + dups == len(messages), summary  # every copy: late or a duplicate
    counted = sum(json.loads(v)["values"]["duplicates"] for k, _key, v in twice if k == "health"
                  and json.loads(v)["scope"] == "node" and json.loads(v)["window"]["size_s"] == 60)
    assert counted == dups  # and each duplicate shows in its node's health record
    print(f"archive {len(messages)} scrapes in {len(files)} files ({t_archive:.1f} s), import {t_import:.1f} s; "
          f"re-import: {late} late, {dups} duplicates in node windows; {summary}")


@pytest.mark.integration
def test_archive_runs_until_sigterm_and_never_archives_twice(kafka, tmp_path):
    prefix = unique_prefix()
    create_topics(kafka, prefix, 2)
    records = scrape_records(nodes=3, minutes=4, seed=2, start_s=START)
    produce(kafka, f"{prefix}.samples", [(r.key, r.encode(), r.scrape_ts_ms) for r in records])
    archive = tmp_path / "archive"
    proc = subprocess.Popen([sys.executable, "-m", "kpp", "archive", "--dir", str(archive), "--topic-prefix", prefix,
                             "--kafka-bootstrap", kafka.bootstrap], cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30  # open files are .part until they close
        while len(list(archive.rglob("*.part"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"{len(records)} records archived" in err, err
    index = json.loads((archive / "index.json").read_text())
    assert sum(f["records"] for f in index["files"]) == len(records)
    assert not list(archive.rglob("*.part"))

    # a consumer group without commits (as after a crash between index and commit) reads
    # everything again: the index says it is archived, nothing is written twice
    proc, _ = run_kpp("archive", "--until-now", "--dir", str(archive), "--topic-prefix", prefix, "--group",
                      "other", "--kafka-bootstrap", kafka.bootstrap)
    assert f"0 records archived in 0 file(s), {len(records)} already archived skipped" in proc.stderr
    assert json.loads((archive / "index.json").read_text()) == index


@pytest.mark.parametrize("with_types", [True, False])
def test_prometheus_text_with_timestamps_becomes_the_original_scrapes(with_types):
    """A text dump with TYPE lines (or without: types inferred from the names) groups into
    the scrape records the producer would have built: the same derived records."""
    from producers.importer import Identity, text_records

    records = scrape_records(nodes=2, minutes=4, seed=9, start_s=START)
    families: dict[str, list[str]] = defaultdict(list)
    types: dict[str, str] = {}
    for r in records:
        for s in r.samples:
            family = next((f for f in r.families if s.name == f or s.name.startswith(f + "_")
                           and r.families[f] == "histogram"), s.name)
            types[family] = r.families.get(family, "untyped")
            families[family].append(_exposition_line(s.name, {**s.labels, "node": r.node}, s.value, r.scrape_ts_ms))
    text = "".join((f"# TYPE {f} {types[f]}\n" if with_types else "") + "\n".join(lines) + "\n"
                   for f, lines in families.items())
    imported = text_records(text.encode(), "dump.prom", Identity(cluster="sim"))
    assert [(r.node, r.scrape_ts_ms) for r in imported] == [(r.node, r.scrape_ts_ms) for r in records]
    settings = StreamSettings(topic_prefix="x", partitions=1)
    want = run_reference(settings, [(r.key, r.encode()) for r in records])
    got = run_reference(settings, [(r.key, r.encode()) for r in imported])
    assert sorted(got) == sorted(want)


# -- backfill from VictoriaMetrics -----------------------------------------------------------

def _exposition_line(name: str, labels: dict[str, str], value: float, ts_ms: int) -> str:
    esc = {k: v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for k, v in labels.items()}
    text = ",".join(f'{k}="{v}"' for k, v in sorted(esc.items()))
    if math.isnan(value):
        number = "NaN"
    elif math.isinf(value):
        number = "+Inf" if value > 0 else "-Inf"
    else:
        number = repr(value)
    return f"{name}{{{text}}} {number} {ts_ms}"


@pytest.mark.integration
def test_backfill_from_a_victoriametrics_export_matches_vm_histogram_quantile(kafka, vm_url, tmp_path):
    tag = f"bf{uuid.uuid4().hex[:8]}"
    nodes, minutes, interval = 3, 10, 15
    sim = Cluster(nodes=nodes, seed=5, version="1.28", start=float(START))
    lines = []
    for i in range(1, minutes * 60 // interval + 1):
        at = START + i * interval
        for name in sim.node_names:
            for s in parse_families(sim.render(name, at=float(at))).samples:
                if s.name.startswith("kubeproxy_"):
                    lines.append(_exposition_line(s.name, {**s.labels, "node": f"{tag}-{name}"}, s.value, at * 1000))
    with httpx.Client(base_url=vm_url, timeout=30) as vm:
        vm.post("/api/v1/import/prometheus", content="\n".join(lines) + "\n").raise_for_status()
        vm.get("/internal/force_flush").raise_for_status()
        export = vm.get("/api/v1/export", params={"match[]": f'{{__name__=~"kubeproxy_.*",node=~"{tag}-.*"}}',
                                                   "start": START, "end": START + minutes * 60 + 60})
        export.raise_for_status()
        path = tmp_path / "export.jsonl"
        path.write_bytes(export.content)
        assert len(export.content.splitlines()) > 50

        prefix = unique_prefix()
        create_topics(kafka, prefix, 2)
        proc, _ = run_kpp("import", str(path), "--cluster", "sim", "--topic-prefix", prefix,
                          "--kafka-bootstrap", kafka.bootstrap)
        assert f"{nodes * minutes * 60 // interval} messages published" in proc.stderr, proc.stderr
        out, summary = _replay(kafka, prefix, "bf", START, START + minutes * 60 + 300)
        validate_all(out)
        quantiles = [DerivedRecord.decode(v) for k, _key, v in out if k == "quantiles"]
        ours = [q for q in quantiles if q.scope == "node" and q.metric == "sync_proxy_rules_duration_seconds"
                and q.window_size_s == 60]
        first = defaultdict(lambda: math.inf)
        for q in ours:
            first[q.node] = min(first[q.node], q.window_start_ms)
        compared, worst, worst_at_end = 0, 0.0, 0.0
        for q in sorted(ours, key=lambda q: (q.node, q.window_start_ms)):
            if q.window_start_ms == first[q.node] or q.values["p99"] is None:
                continue  # our first window has no baseline; VM guesses one (see docs/history.md)
            query = ('histogram_quantile(0.99, sum by (le) (increase('
                     f'kubeproxy_sync_proxy_rules_duration_seconds_bucket{{node="{q.node}"}}[60s])))')

            def at(t_ms: int) -> float:
                r = vm.get("/api/v1/query", params={"query": query, "time": f"{t_ms / 1000:.3f}", "nocache": 1})
                r.raise_for_status()
                result = r.json()["data"]["result"]
                return float(result[0]["value"][1]) if result else math.nan

            vm_value = at(q.window_end_ms - 1)  # the last instant of [start, end)
            ours_value = q.values["p99"]
            rel = abs(vm_value - ours_value) / max(abs(ours_value), 1e-12)
            assert rel <= 1e-9, (q.node, q.window_start_ms, ours_value, vm_value)
            worst = max(worst, rel)
            worst_at_end = max(worst_at_end, abs(at(q.window_end_ms) - ours_value) / max(abs(ours_value), 1e-12))
            compared += 1
    assert compared >= nodes * (minutes - 1)
    print(f"VM backfill: {compared} node p99 windows agree with VictoriaMetrics at end-1ms within "
          f"{worst:.1e} relative; evaluated exactly at the window end they differ by up to {worst_at_end:.0%}")

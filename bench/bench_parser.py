"""Benchmark: producers.parser against prometheus_client's text parser.

    python bench/bench_parser.py [--repeat N] [--out FILE] [--fixtures DIR] [--synthetic-samples N]

Times both parsers on every kube-proxy capture in tests/fixtures/kube-proxy/ and on a large
synthetic exposition (~200k samples, generated deterministically), and prints a markdown table
with the machine it ran on. Not a test (nothing is asserted beyond both parsers agreeing on the
sample count); `make bench` runs it.

Our parser is timed twice:
- warm: caches primed by an earlier parse of the same text, as when a producer scrapes the same
  target again (the steady state: series and names repeat from scrape to scrape);
- cold: caches cleared before every run, as for the first scrape of a target.
prometheus_client is timed consuming every family and sample (`text_string_to_metric_families`
is a generator). Every figure is the best of --repeat runs; runs on tiny inputs are looped
until they last at least --min-time seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import cpu_model, emit  # noqa: E402
from producers.parser import clear_caches, parse  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FIXTURES = REPO / "tests" / "fixtures" / "kube-proxy"


# --------------------------------------------------------------------------------------------
# Inputs

def synthetic_exposition(target_samples: int = 200_000) -> str:
    """A kube-proxy-like exposition with many label values, the same on every run.

    Each "shard" (a made-up `instance` label multiplying the series) carries kube-proxy's
    histograms (sync_proxy_rules_duration_seconds with 15 finite buckets per ip_family,
    network_programming_duration_seconds with 81), its counters and gauges, and client-go's
    rest_client_requests_total. Values come from a fixed linear congruential generator; a few
    are NaN / +Inf. Includes HELP and TYPE lines like the real thing.
    """
    sync_bounds = [f"{0.001 * 2**k:g}" for k in range(15)] + ["+Inf"]
    npl_bounds = (["0", "0.25", "0.5"] + [str(s) for s in range(1, 60)]
                  + [str(s) for s in range(60, 120, 5)] + [str(s) for s in range(120, 301, 30)])
    npl_bounds = npl_bounds + ["+Inf"]
    state = 12345

    def rnd() -> int:
        nonlocal state
        state = (state * 1103515245 + 12345) % 2**31
        return state

    per_shard = 2 * (len(sync_bounds) + 2) + 2 * (len(npl_bounds) + 2) + 4 * 3 + 2 * 4 + 3
    shards = max(1, target_samples // per_shard)
    lines: list[str] = []
    out = lines.append
    families = [
        ("kubeproxy_sync_proxy_rules_duration_seconds", "histogram", sync_bounds),
        ("kubeproxy_network_programming_duration_seconds", "histogram", npl_bounds),
    ]
    for family, kind, bounds in families:
        out(f"# HELP {family} [ALPHA] synthetic {kind}")
        out(f"# TYPE {family} {kind}")
        for shard in range(shards):
            for ip_family in ("IPv4", "IPv6"):
                base = f'instance="node-{shard:05d}",ip_family="{ip_family}"'
                count = 0
                for bound in bounds:
                    count += rnd() % 50
                    out(f'{family}_bucket{{{base},le="{bound}"}} {count}')
                out(f"{family}_sum{{{base}}} {rnd() / 1000:.6f}")
                out(f"{family}_count{{{base}}} {count}")
    out("# HELP rest_client_requests_total [STABLE] synthetic counter")
    out("# TYPE rest_client_requests_total counter")
    for shard in range(shards):
        for code, method in (("200", "GET"), ("200", "PATCH"), ("201", "POST"), ("404", "GET")):
            for host in ("10.96.0.1:443", "172.18.0.2:6443", "api.example.com:443"):
                out(f'rest_client_requests_total{{instance="node-{shard:05d}",code="{code}",'
                    f'host="{host}",method="{method}"}} {rnd()}')
    out("# HELP kubeproxy_sync_proxy_rules_iptables_total [ALPHA] synthetic gauge")
    out("# TYPE kubeproxy_sync_proxy_rules_iptables_total gauge")
    for shard in range(shards):
        for table in ("filter", "nat", "mangle", "raw"):
            for ip_family in ("IPv4", "IPv6"):
                out(f'kubeproxy_sync_proxy_rules_iptables_total{{instance="node-{shard:05d}",'
                    f'ip_family="{ip_family}",table="{table}"}} {rnd() % 5000}')
    out("# HELP kubeproxy_sync_proxy_rules_last_timestamp_seconds [ALPHA] synthetic gauge")
    out("# TYPE kubeproxy_sync_proxy_rules_last_timestamp_seconds gauge")
    for shard in range(shards):
        instance = f'instance="node-{shard:05d}"'
        out(f"kubeproxy_sync_proxy_rules_last_timestamp_seconds{{{instance}}} "
            f"{1.7e9 + rnd() / 1e3:.9e}")
        out(f"kubeproxy_sync_proxy_rules_endpoint_changes_pending{{{instance}}} NaN")
        out(f"rest_client_exec_plugin_ttl_seconds{{{instance}}} +Inf")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Timing

def _consume_prometheus_client(text: str) -> int:
    count = 0
    for family in text_string_to_metric_families(text):
        for _sample in family.samples:
            count += 1
    return count


def _best_rate(samples: int, run: Callable[[], object], repeat: int, min_time: float,
               before_each: Callable[[], None] | None = None) -> float:
    """Best samples/s over `repeat` measurements, each looping `run` for >= min_time s;
    `before_each` runs untimed before every call."""
    best = 0.0
    for _ in range(repeat):
        elapsed = 0.0
        calls = 0
        while elapsed < min_time or calls == 0:
            if before_each is not None:
                before_each()
            start = time.perf_counter()
            run()
            elapsed += time.perf_counter() - start
            calls += 1
        best = max(best, samples * calls / elapsed)
    return best


# --------------------------------------------------------------------------------------------
# `kpp parse FILE > out.jsonl` as a whole process

def replicated_exposition(text: str, replicas: int) -> str:
    """A real capture made large: each family's HELP/TYPE once, then its sample lines once per
    replica with a `replica="NNNN"` label added last (every series distinct, as on a big target)."""
    blocks: list[tuple[list[str], list[str]]] = []
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("#"):
            if not blocks or blocks[-1][1]:
                blocks.append(([], []))
            blocks[-1][0].append(line)
        else:
            if not blocks:
                blocks.append(([], []))
            blocks[-1][1].append(line)
    out: list[str] = []
    for comments, samples in blocks:
        out.extend(comments)
        for replica in range(replicas):
            label = f'replica="{replica:04d}"'
            for sample in samples:
                head, _, rest = sample.partition(" ")
                if head.endswith("{}"):
                    out.append(f"{head[:-1]}{label}}} {rest}")
                elif head.endswith("}"):
                    out.append(f"{head[:-1]},{label}}} {rest}")
                else:
                    out.append(f"{head}{{{label}}} {rest}")
    return "\n".join(out) + "\n"


def _child_run(argv: list[str], stdout_path: Path) -> tuple[float, float]:
    """(wall s, CPU s = user + system of the child) of one run of `argv`, stdout to a file."""
    with open(stdout_path, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.read().decode()[:500]}")
    proc.stderr.close()
    return wall, usage.ru_utime + usage.ru_stime


def whole_process(capture: Path, replicas: int, repeat: int) -> dict:
    """`kpp parse FILE > out.jsonl` (start-up, parse, JSON out) against prometheus_client parsing
    the same text in-process; best of `repeat` for each, wall and CPU."""
    kpp = Path(sys.executable).with_name("kpp")
    text = replicated_exposition(capture.read_text(encoding="utf-8"), replicas)
    with tempfile.TemporaryDirectory(prefix="kpp-bench-parse-") as tmp:
        source = Path(tmp) / "exposition.txt"
        source.write_text(text, encoding="utf-8")
        out = Path(tmp) / "out.jsonl"
        tiny = Path(tmp) / "tiny.txt"
        tiny.write_text("a 1\n", encoding="utf-8")
        ours = [_child_run([str(kpp), "parse", str(source)], out) for _ in range(repeat)]
        lines = out.read_bytes().count(b"\n")
        startup = [_child_run([str(kpp), "parse", str(tiny)], Path(tmp) / "tiny.jsonl") for _ in range(repeat)]
    reference = []
    for _ in range(repeat):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        count = _consume_prometheus_client(text)
        reference.append((time.perf_counter() - wall0, time.process_time() - cpu0))
    if count != lines:
        raise RuntimeError(f"kpp parse printed {lines} lines, prometheus_client parsed {count} samples")
    return {"samples": count, "mb": len(text.encode()) / 1e6, "replicas": replicas,
            "ours_wall": min(w for w, _ in ours), "ours_cpu": min(c for _, c in ours),
            "startup_wall": min(w for w, _ in startup), "startup_cpu": min(c for _, c in startup),
            "ref_wall": min(w for w, _ in reference), "ref_cpu": min(c for _, c in reference)}


WHOLE_ROW = "| `kpp parse` whole process |"


def previous_whole(results: Path = REPO / "bench" / "RESULTS.md") -> str:
    """'wall s / CPU s' of the whole-process row in the last committed results, or '–'."""
    if results.is_file():
        for line in results.read_text(encoding="utf-8").splitlines():
            if line.startswith(WHOLE_ROW):
                cells = [c.strip() for c in line.strip("|").split("|")]
                return f"{cells[1]} / {cells[2]}"
    return "–"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5,
                        help="measurements per parser and input; the best counts (default 5)")
    parser.add_argument("--min-time", type=float, default=0.2,
                        help="minimum seconds per measurement on small inputs (default 0.2)")
    parser.add_argument("--out", type=Path, help="also write the markdown report to FILE")
    parser.add_argument("--fixtures", type=Path, default=DEFAULT_FIXTURES,
                        help="directory of *.txt captures (default tests/fixtures/kube-proxy)")
    parser.add_argument("--synthetic-samples", type=int, default=200_000,
                        help="approximate size of the synthetic input (default 200000)")
    parser.add_argument("--replicas", type=int, default=344,
                        help="copies of the v1.28 capture in the whole-process input (default 344: "
                             "211,560 samples)")
    args = parser.parse_args(argv)

    inputs: list[tuple[str, str]] = []
    for path in sorted(args.fixtures.glob("*.txt")):
        inputs.append((path.name, path.read_text(encoding="utf-8")))
    if not inputs:
        print(f"bench_parser: no *.txt captures in {args.fixtures}", file=sys.stderr)
        return 1
    synthetic = synthetic_exposition(args.synthetic_samples)
    inputs.append((f"synthetic ({len(synthetic) / 1e6:.1f} MB)", synthetic))

    rows = []
    for label, text in inputs:
        ours_count = len(parse(text))
        reference_count = _consume_prometheus_client(text)
        if ours_count != reference_count:
            print(f"bench_parser: {label}: {ours_count} samples from ours, "
                  f"{reference_count} from prometheus_client", file=sys.stderr)
            return 1
        cold = _best_rate(ours_count, lambda: parse(text), args.repeat, args.min_time,
                          before_each=clear_caches)
        parse(text)  # prime the caches
        warm = _best_rate(ours_count, lambda: parse(text), args.repeat, args.min_time)
        reference = _best_rate(ours_count, lambda: _consume_prometheus_client(text),
                               args.repeat, args.min_time)
        rows.append((label, ours_count, warm, cold, reference))
        print(f"  {label}: done", file=sys.stderr)

    previous = previous_whole()
    load_before_whole = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    whole = whole_process(args.fixtures / "v1.28.0-iptables.txt", args.replicas, max(3, args.repeat // 2 + 1))
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    report = [
        "# Parser benchmark: producers.parser vs prometheus_client",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {platform.platform()}, CPU {cpu_model()} ({os.cpu_count()} logical CPUs), "
        f"load average {load}",
        f"- python: {platform.python_implementation()} {platform.python_version()}; "
        f"best of {args.repeat} runs, each >= {args.min_time}s",
        "- ours warm: caches primed (repeated scrapes of a target); "
        "cold: caches cleared before every run (first scrape)",
        "",
        "| input | samples | ours warm samples/s | ours cold samples/s "
        "| prometheus_client samples/s | ratio warm | ratio cold |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, count, warm, cold, reference in rows:
        report.append(f"| {label} | {count:,} | {warm:,.0f} | {cold:,.0f} | {reference:,.0f} "
                      f"| {warm / reference:.1f}x | {cold / reference:.1f}x |")
    report += [
        "",
        "## `kpp parse FILE > out.jsonl`, whole process, vs prometheus_client's parse of the same file",
        "",
        f"- input: tests/fixtures/kube-proxy/v1.28.0-iptables.txt repeated {whole['replicas']} times with a "
        f"`replica` label: {whole['samples']:,} samples, {whole['mb']:.1f} MB",
        f"- load average before this part: {load_before_whole}; after: {load}",
        f"- ours: the `kpp` console script in a subprocess, stdout to a file (start-up, parse, JSON lines); "
        f"CPU = the child's user + system time (wait4). prometheus_client: "
        f"`text_string_to_metric_families` consuming every sample, in-process, no start-up, no output. "
        f"Best of {max(3, args.repeat // 2 + 1)} each. Previous run: the figures of the last committed "
        f"bench/RESULTS.md: {previous} (wall / CPU s).",
        "",
        "| measure | wall s | CPU s | samples/s (CPU) |",
        "|---|---:|---:|---:|",
        f"{WHOLE_ROW} {whole['ours_wall']:.2f} | {whole['ours_cpu']:.2f} "
        f"| {whole['samples'] / whole['ours_cpu']:,.0f} |",
        f"| of which start-up (`kpp parse` of a one-line file) | {whole['startup_wall']:.2f} "
        f"| {whole['startup_cpu']:.2f} | – |",
        f"| prometheus_client parse only, in-process | {whole['ref_wall']:.2f} | {whole['ref_cpu']:.2f} "
        f"| {whole['samples'] / whole['ref_cpu']:,.0f} |",
        f"| ratio prometheus_client / `kpp parse` (goal ≥ 5×) | {whole['ref_wall'] / whole['ours_wall']:.1f}× "
        f"| {whole['ref_cpu'] / whole['ours_cpu']:.1f}× | |",
        "",
        "`kpp import` of Prometheus text shares the parser (`parse_families`) but not the JSON-lines "
        "output, which is `kpp parse`'s own.",
    ]
    text = "\n".join(report) + "\n"
    emit(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

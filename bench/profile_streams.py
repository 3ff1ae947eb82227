"""CPU per scrape of the stream stages in-process (NodeStage + ClusterStage over dict tables,
batches as the agents drive them, no Kafka), and optionally a cProfile summary of where it goes.

    .venv/bin/python bench/profile_streams.py [--nodes 50] [--minutes 30] [--batch 500] [--profile]
    .venv/bin/python bench/profile_streams.py --rss --nodes 5000 --minutes 3
    .venv/bin/python bench/profile_streams.py --worker [--nodes 50] [--minutes 60]

--worker profiles a real `kpp stream` process instead (cProfile, Faust and aiokafka included)
against the local broker: the scrapes are published to a fresh topic first, the worker runs
until its group has committed them all (lag 0 on every topic it reads), then stops; the table
is the worker's whole run, start-up included (its share is printed).

--rss feeds the scrapes as they are simulated (in a child process, not held in memory) and
prints the memory of the process holding the stage's state of every node, split into what the
C heap holds free (glibc) and pymalloc's arenas.

The input is the benchmark's (bench/bench_streams.py): simulated 1.28 scrapes, ~154 selected
samples each. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import ctypes
import ctypes.util
import gc
import io
import os
import pstats
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import BinaryIO, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from producers.node import NodeSettings, build_record  # noqa: E402
from producers.scrape import ScrapeOutcome  # noqa: E402
from producers.select import Selector  # noqa: E402
from simulator import Cluster  # noqa: E402
from streams.config import StreamSettings  # noqa: E402
from streams.heap import libc_malloc_trim  # noqa: E402
from streams.stages import ClusterStage, NodeStage  # noqa: E402
from tests.streams.reference import partition_of, run_reference  # noqa: E402
from tests.streams.simdata import START_S, scrape_records  # noqa: E402


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


FRAME = struct.Struct("<II")  # key length, value length; then the key and the value


def emit_scrapes(nodes: int, minutes: int, out: BinaryIO) -> None:
    """Write the encoded scrapes of `nodes` x `minutes`, interval by interval, as FRAMEs to
    `out` (run in a child process by `rss`: the simulator's model of every node, and the
    objects it renews each interval, are not the worker's memory)."""
    sim = Cluster(nodes=nodes, seed=7, version="1.28", start=float(START_S))
    selector = Selector()
    for i in range(1, minutes * 4 + 1):
        at = START_S + i * 15
        for name in sim.node_names:
            body = sim.render(name, at=float(at))
            outcome = ScrapeOutcome(body=body, duration_s=0.01, body_bytes=len(body), reason="ok")
            record, _ = build_record(NodeSettings(node=name, cluster="sim"), f"http://{name}:10249/metrics",
                                     at * 1000, outcome, selector)
            key, value = record.key or b"", record.encode()
            out.write(FRAME.pack(len(key), len(value)) + key + value)
    out.flush()


def read_frames(stream: BinaryIO) -> Iterator[tuple[bytes, bytes]]:
    while header := stream.read(FRAME.size):
        key_len, value_len = FRAME.unpack(header)
        yield stream.read(key_len), stream.read(value_len)


def heap_free_kib() -> tuple[int, int] | None:
    """(bytes the C heap holds free, bytes in use) in KiB from glibc's mallinfo2; None elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError):
        return None

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")]

    mallinfo2.restype = MallInfo2
    info = mallinfo2()
    return info.fordblks // 1024, (info.uordblks + info.hblkhd) // 1024


def pymalloc_kib() -> tuple[int, int] | None:
    """(KiB of pymalloc arenas, KiB of their pools that hold no object) from sys._debugmallocstats;
    None when pymalloc is not the allocator (PYTHONMALLOC, tracemalloc)."""
    err = tempfile.TemporaryFile()
    saved = os.dup(2)
    os.dup2(err.fileno(), 2)
    try:
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    err.seek(0)
    text = err.read().decode()
    arenas = re.search(r"arenas \* \d+ bytes/arena\s+=\s+([\d,]+)", text)
    unused = re.search(r"unused pools \* \d+ bytes\s+=\s+([\d,]+)", text)
    if arenas is None or unused is None:
        return None
    return int(arenas.group(1).replace(",", "")) // 1024, int(unused.group(1).replace(",", "")) // 1024


def rss(nodes: int, minutes: int, batch: int, partitions: int = 1) -> None:
    """Memory of a process whose stages hold `nodes` nodes (dict tables, as the worker's
    in-memory Faust tables hold them), fed one interval at a time by a child process that
    simulates the scrapes (see emit_scrapes)."""
    settings = StreamSettings(topic_prefix="p", partitions=partitions)
    node_table: dict = {}
    cluster_table: dict = {}
    partials: dict = {0: []}
    sent = [0]
    gc.collect()
    before = _status_kib("VmRSS")
    child = subprocess.Popen([sys.executable, __file__, "--emit-scrapes", "--nodes", str(nodes),
                              "--minutes", str(minutes)], stdout=subprocess.PIPE)

    async def send(topic, key, value, ts_ms, part):
        # like a Kafka producer, which copies what it sends: only the cluster partials are kept
        if topic == settings.cluster_partials_topic:
            partials[0].append((key, value))
        else:
            sent[0] += 1
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def run() -> int:
        node = NodeStage(settings, node_table, send)
        cluster = ClusterStage(settings, cluster_table, send)
        offset = cluster_offset = 0
        offsets = dict.fromkeys(range(partitions), 0)
        for key, value in read_frames(child.stdout):
            part = partition_of(key, partitions)
            await node.sample(part, offsets[part], key, value)
            offsets[part] += 1
            offset += 1
            if offset % batch == 0:
                await node.flush()
                for _key, value in partials[0]:
                    await cluster.message(0, cluster_offset, _key, value)  # one partials partition
                    cluster_offset += 1
                partials[0].clear()
                await cluster.flush()
        await node.flush()
        return offset

    scrapes = asyncio.run(run())
    if child.wait() != 0:
        sys.exit(f"the scrape simulator exited with {child.returncode}")
    gc.collect()
    now = _status_kib("VmRSS")
    states = [v for k, v in node_table.items() if k.startswith("node:")]
    state_bytes = sum(len(v) for v in states)
    print(f"{scrapes} scrapes of {nodes} nodes fed; node states held: {len(states)} "
          f"({state_bytes / 1e6:.1f} MB encoded, {state_bytes / max(1, len(states)) / 1e3:.1f} kB each); "
          f"cluster table {sum(len(v) for v in cluster_table.values()) / 1e6:.1f} MB")
    print(f"RSS before the stages: {before / 1024:.0f} MiB; now {now / 1024:.0f} MiB "
          f"({(now - before) * 1024 / max(1, nodes) / 1e3:.0f} kB per node); "
          f"peak (VmHWM) {_status_kib('VmHWM') / 1024:.0f} MiB")
    heap, pools = heap_free_kib(), pymalloc_kib()
    parts = []
    if heap:
        parts.append(f"C heap free (held, not returned) {heap[0] / 1024:.0f} MiB, in use {heap[1] / 1024:.0f} MiB")
    if pools:
        parts.append(f"pymalloc arenas {pools[0] / 1024:.0f} MiB, {pools[1] / 1024:.0f} MiB of them empty pools")
    print("of which: " + "; ".join(parts or ["(no allocator statistics here)"]))
    # the stages trim the C heap at most every heap.TRIM_INTERVAL_S: "now" may hold a recent
    # window close's freed memory; after a trim is the floor the process comes back to
    if heap_trim := libc_malloc_trim():
        heap_trim()
        print(f"RSS after a malloc_trim: {_status_kib('VmRSS') / 1024:.0f} MiB "
              f"({(_status_kib('VmRSS') - before) * 1024 / max(1, nodes) / 1e3:.0f} kB per node)")


def print_top(stats: pstats.Stats, scrapes: int, top: int, key: int = 3) -> None:
    """The `top` functions by cumulative (key 3) or own (key 2) time, per scrape."""
    total = stats.total_tt
    print("\n| function | cumulative % | µs per scrape (cumulative) | own µs per scrape |\n|---|---:|---:|---:|")
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][key], reverse=True)
    for (file, line, func), (_cc, _nc, tt, ct, _callers) in rows[:top]:
        name = f"{Path(file).parent.name}/{Path(file).name}:{func}" if line else func
        print(f"| {name} | {100 * ct / total:.0f} | {ct / scrapes * 1e6:.0f} | {tt / scrapes * 1e6:.0f} |")


def profile_worker(nodes: int, minutes: int, top: int, bootstrap: str) -> None:
    """cProfile of a real `kpp stream` worker over `nodes` x `minutes` scrapes (see the docstring)."""
    from bench.bench_streams import cpu_seconds, produce, progress
    from kafka_io.admin import GroupLagReader, TopicSpec, ensure_topics
    from kafka_io.connection import KafkaConnection

    conn = KafkaConnection(bootstrap=bootstrap)
    prefix = f"prof{uuid.uuid4().hex[:8]}"
    settings = StreamSettings(topic_prefix=prefix, partitions=1)
    records = scrape_records(nodes=nodes, minutes=minutes, version="1.28")
    total = len(records)
    ensure_topics(conn, [TopicSpec(settings.topics.samples, 1, {"retention.ms": "-1"})])
    produce(conn, settings.topics.samples, [(r.key, r.encode(), r.scrape_ts_ms) for r in records])
    work = tempfile.mkdtemp(prefix="kpp-profile-")
    out = os.path.join(work, "worker.prof")
    log = open(os.path.join(work, "worker.log"), "wb")
    proc = subprocess.Popen([sys.executable, "-m", "cProfile", "-o", out, "-m", "kpp", "stream",
                             "--kafka-bootstrap", bootstrap, "--topic-prefix", prefix, "--partitions", "1",
                             "--data-dir", os.path.join(work, "data"), "--idle-timeout", "600"],
                            cwd=Path(__file__).resolve().parent.parent, stdout=log, stderr=subprocess.STDOUT)
    topics = [settings.topics.samples, settings.ticks_topic, settings.cluster_partials_topic]
    with GroupLagReader(conn, f"kpp-streams.{prefix}", topics, client_id="kpp-profile-lag") as reader:
        started = None
        deadline = time.monotonic() + 1800
        while True:
            done, lag = progress(reader, topics, total)
            if done and started is None:
                started = cpu_seconds(proc.pid)  # CPU spent before the first commit: start-up
            if done >= total and lag == 0:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the worker exited or did not finish; see {log.name}")
            time.sleep(0.5)
    cpu = cpu_seconds(proc.pid)
    proc.send_signal(signal.SIGTERM)
    proc.wait(120)
    log.close()
    stats = pstats.Stats(out)
    print(f"{total} scrapes of {nodes} nodes through a profiled `kpp stream`: process CPU {cpu:.1f} s "
          f"(start-up before the first commit {started or 0:.1f} s); profile total {stats.total_tt:.1f} s")
    print("\nBy cumulative time:")
    print_top(stats, total, top, key=3)
    print("\nBy own time:")
    print_top(stats, total, top, key=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3, help="runs to time (the best is reported)")
    parser.add_argument("--profile", action="store_true", help="print the top functions by cumulative time")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--rss", action="store_true", help="measure memory instead (see above)")
    parser.add_argument("--partitions", type=int, default=1, help="samples partitions (--rss)")
    parser.add_argument("--worker", action="store_true", help="profile a real `kpp stream` (see above)")
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--emit-scrapes", action="store_true", help=argparse.SUPPRESS)  # rss's child
    args = parser.parse_args()
    if args.emit_scrapes:
        emit_scrapes(args.nodes, args.minutes, sys.stdout.buffer)
        return
    if args.worker:
        profile_worker(args.nodes, args.minutes, args.top, args.bootstrap)
        return
    if args.rss:
        rss(args.nodes, args.minutes, args.batch, args.partitions)
        return
    records = scrape_records(nodes=args.nodes, minutes=args.minutes, version="1.28")
    messages = [(r.key, r.encode()) for r in records]
    samples = sum(len(r.samples) for r in records) / len(records)
    settings = StreamSettings(topic_prefix="p", partitions=1)
    best = float("inf")
    for _ in range(args.repeat):
        t0 = time.process_time()
        sent = run_reference(settings, messages, batch=args.batch)
        best = min(best, time.process_time() - t0)
    per_scrape_us = best / len(messages) * 1e6
    print(f"{len(messages)} scrapes of {args.nodes} nodes, {samples:.0f} samples each, batch {args.batch}: "
          f"{per_scrape_us:.0f} µs CPU per scrape ({len(messages) / best:,.0f} scrapes/s), "
          f"{len(sent) / len(messages):.1f} outputs per scrape")
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        run_reference(settings, messages, batch=args.batch)
        prof.disable()
        print_top(pstats.Stats(prof, stream=io.StringIO()), len(messages), args.top)


if __name__ == "__main__":
    main()

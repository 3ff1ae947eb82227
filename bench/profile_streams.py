"""CPU per scrape of the stream stages in-process (NodeStage + ClusterStage over dict tables,
batches as the agents drive them, no Kafka), and optionally a cProfile summary of where it goes.

    .venv/bin/python bench/profile_streams.py [--nodes 50] [--minutes 30] [--batch 500] [--profile]

The input is the benchmark's (bench/bench_streams.py): simulated 1.28 scrapes, ~154 selected
samples each. Not a test.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streams.config import StreamSettings  # noqa: E402
from tests.streams.reference import run_reference  # noqa: E402
from tests.streams.simdata import scrape_records  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3, help="runs to time (the best is reported)")
    parser.add_argument("--profile", action="store_true", help="print the top functions by cumulative time")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
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
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out)
        total = stats.total_tt
        print(f"\n| function | cumulative % | µs per scrape (cumulative) | own µs per scrape |\n|---|---:|---:|---:|")
        rows = sorted(stats.stats.items(), key=lambda kv: kv[1][3], reverse=True)
        for (file, line, func), (_cc, _nc, tt, ct, _callers) in rows[: args.top]:
            name = f"{Path(file).parent.name}/{Path(file).name}:{func}" if line else func
            print(f"| {name} | {100 * ct / total:.0f} | {ct / len(messages) * 1e6:.0f} | "
                  f"{tt / len(messages) * 1e6:.0f} |")


if __name__ == "__main__":
    main()

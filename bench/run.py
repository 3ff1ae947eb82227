"""`make bench`: run every bench/bench_*.py against the local stack and collect their reports
into bench/RESULTS.md (committed, with the machine and date each ran on), followed by the
last soak report (bench/SOAK.md)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out"


def main() -> int:
    OUT.mkdir(exist_ok=True)
    sections, failed = [], []
    scripts = sorted(BENCH.glob("bench_*.py"))
    for number, script in enumerate(scripts, 1):
        report = OUT / f"{script.stem}.md"
        print(f"[{number}/{len(scripts)}] {script.name} ...", flush=True)
        started = time.monotonic()
        result = subprocess.run([sys.executable, str(script), "--out", str(report)], cwd=BENCH.parent)
        print(f"[{number}/{len(scripts)}] {script.name}: exit {result.returncode} "
              f"in {time.monotonic() - started:.0f} s", flush=True)
        if result.returncode != 0 or not report.is_file():
            failed.append(script.name)
            continue
        sections.append(report.read_text().strip())
    # The soak (`make soak`, 15+ minutes) is not re-run by `make bench`: its last committed
    # report (bench/SOAK.md, with its plot bench/soak.png) is carried into RESULTS.md.
    soak = BENCH / "SOAK.md"
    if soak.is_file():
        sections.append(soak.read_text().strip())
    results = BENCH / "RESULTS.md"
    results.write_text(
        "# Benchmark results\n\nProduced by `make bench`; each section names the machine and date it ran on, "
        "and compares against a baseline measured in the same run.\n\n" + "\n\n".join(sections) + "\n")
    print(f"wrote {results}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

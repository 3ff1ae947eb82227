"""`make bench`: run every bench/bench_*.py against the local stack and collect their reports
into bench/RESULTS.md (committed, with the machine and date each ran on), followed by the
last soak report (bench/SOAK.md).

    python bench/run.py                      # every benchmark, RESULTS.md rewritten
    python bench/run.py bench_streams.py     # only these; their sections of RESULTS.md replaced,
                                             # the others kept as they are"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out"


HEADER = ("# Benchmark results\n\nProduced by `make bench`; each section names the machine and date it ran on, "
          "and compares against a baseline measured in the same run.\n\n")


def replace_sections(results: str, reports: list[str]) -> str:
    """`results` with each section (from a line `# Title` to the next one) whose title is a
    report's first line replaced by that report; a report with a new title is added before the
    soak section (the last one)."""
    chunks = [c.strip() for c in re.split(r"(?m)^(?=# )", results) if c.strip()]
    for report in reports:
        title = report.strip().splitlines()[0]
        for index, chunk in enumerate(chunks):
            if chunk.splitlines()[0] == title:
                chunks[index] = report.strip()
                break
        else:
            soak = next((i for i, c in enumerate(chunks) if c.startswith("# Soak")), len(chunks))
            chunks.insert(soak, report.strip())
    return "\n\n".join(chunks) + "\n"


def main(argv: list[str] | None = None) -> int:
    names = sys.argv[1:] if argv is None else argv
    OUT.mkdir(exist_ok=True)
    sections, failed = [], []
    scripts = [BENCH / name for name in names] if names else sorted(BENCH.glob("bench_*.py"))
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
    results = BENCH / "RESULTS.md"
    if names and results.is_file():
        results.write_text(replace_sections(results.read_text(), sections))
    else:
        # The soak (`make soak`, 15+ minutes) is not re-run by `make bench`: its last committed
        # report (bench/SOAK.md, with its plot bench/soak.png) is carried into RESULTS.md.
        soak = BENCH / "SOAK.md"
        if soak.is_file():
            sections.append(soak.read_text().strip())
        results.write_text(HEADER + "\n\n".join(sections) + "\n")
    print(f"wrote {results}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""What every benchmark report shares: the machine it ran on, and how it is written."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe() -> list[str]:
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {platform.system()} {platform.release()}, {cpu_model()}, {os.cpu_count()} logical CPUs",
        f"- python: {platform.python_implementation()} {platform.python_version()}",
        f"- load average at start: {load}",
    ]


def emit(report: str, out: Path | str | None) -> None:
    """Print the markdown report, and also write it to `out` when given (`make bench` collects those)."""
    print(report)
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report, encoding="utf-8")

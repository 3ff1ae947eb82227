"""Run a module as `python -m MODULE ARGS` would and, at exit, write the process's own peak
resident memory (VmHWM, in bytes) to the file named by $PEAK_RSS_FILE.

A test cannot take this from os.wait4's ru_maxrss: Linux records the high-water mark of the
address space a child leaves at exec, which for a forked or vforked child is the parent's.
Under a test process grown large (the fault suite's golden run), ru_maxrss measures pytest.
VmHWM belongs to the address space exec gave the command."""

from __future__ import annotations

import atexit
import os
import runpy
import sys


def _write_peak() -> None:
    with open("/proc/self/status") as status:
        peak_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    with open(os.environ["PEAK_RSS_FILE"], "w") as out:
        out.write(str(peak_kib * 1024))


if __name__ == "__main__":
    atexit.register(_write_peak)
    module, sys.argv = sys.argv[1], [sys.argv[1], *sys.argv[2:]]
    sys.path[0] = os.getcwd()  # like `python -m`: the working directory, not this file's folder
    runpy.run_module(module, run_name="__main__", alter_sys=True)

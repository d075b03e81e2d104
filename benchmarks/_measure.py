"""Process-level measuring helpers for ``benchmarks/scaling.py`` (Linux only).

Peak memory is the peak resident set size (``VmHWM`` in ``/proc/self/status``)
above a baseline: the caller frees what it can (``gc.collect`` +
``malloc_trim``), resets the high-water mark to the current RSS by writing
``5`` to ``/proc/self/clear_refs`` and reads the baseline ``VmRSS`` right
before the measured call, then reads ``VmHWM`` right after it.
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import subprocess
import time
from pathlib import Path

MiB = 2**20
GiB = 2**30

try:
    _libc = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc: trimming is only an improvement
    _libc = None


def _status_kib(pid: int | str, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def rss_bytes(pid: int | str = "self") -> int:
    """Current resident set size of a process."""
    return _status_kib(pid, "VmRSS") * 1024


def peak_rss_bytes() -> int:
    """This process's peak resident set size since start or since :func:`start_peak`."""
    return _status_kib("self", "VmHWM") * 1024


def start_peak() -> int:
    """Free what can be freed, reset the high-water mark, and return the baseline RSS."""
    gc.collect()
    if _libc is not None:
        _libc.malloc_trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError as error:  # without the reset, VmHWM may be an older, higher peak
        raise RuntimeError("cannot reset the peak RSS through /proc/self/clear_refs") from error
    return rss_bytes()


def run_watched(command: list[str], *, env: dict | None = None, mem_limit: int,
                time_limit: float) -> tuple[int, str | None]:
    """Run ``command``; kill it once its RSS exceeds ``mem_limit`` bytes or it runs
    longer than ``time_limit`` seconds. Returns ``(returncode, why it was killed or None)``."""
    process = subprocess.Popen(command, env=env)
    start, why = time.monotonic(), None
    while process.poll() is None:
        try:
            rss = rss_bytes(process.pid)
        except (OSError, KeyError):  # exiting
            rss = 0
        if rss > mem_limit:
            why = f"killed: RSS reached {rss / GiB:.2f} GiB > memory limit {mem_limit / GiB:.2f} GiB"
        elif time.monotonic() - start > time_limit:
            why = f"killed: still running after {time_limit:.0f} s"
        if why:
            process.kill()
            process.wait()
            break
        time.sleep(0.05)
    return process.returncode, why


def _meminfo_bytes(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def total_memory_bytes() -> int:
    return _meminfo_bytes("MemTotal")


def machine() -> dict[str, str]:
    """Platform, CPU model, core count and RAM, for the results header."""
    cpu = platform.processor() or "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {"platform": platform.platform(), "cpu": cpu, "cores": str(os.cpu_count()),
            "memory": f"{total_memory_bytes() / GiB:.1f} GiB", "python": platform.python_version()}

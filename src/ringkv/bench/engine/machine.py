"""Where a storage-engine benchmark ran, for its report: CPU, memory, OS, Python, the filesystem
of the data directory and the git revision of the ringkv checkout measured.

Linux: read from /proc. Every function answers "?" (or says so) rather than failing: a report
with an unknown CPU model is still a report.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


def src_root() -> Path:
    """The directory that holds the `ringkv` package (the workers' PYTHONPATH; the checkout)."""
    import ringkv

    return Path(ringkv.__file__).resolve().parent.parent


def machine_lines() -> list[str]:
    """CPU, memory, OS and Python, a line each."""
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = _meminfo_kib("MemTotal")
    return [
        f"CPU: {model}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable)",
        f"Memory: {mem_kib / 1024 / 1024:.1f} GiB" if mem_kib else "Memory: ?",
        f"OS: {platform.system()} {platform.release()}",
        f"Python: {platform.python_implementation()} {platform.python_version()}",
    ]


def _meminfo_kib(field: str) -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def filesystem_of(path: Path) -> str:
    """The type, device and mount point of the filesystem that holds `path`."""
    best, fstype, device = "", "?", "?"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "?"
    resolved = str(path.resolve())
    for line in mounts:
        fields = line.split()
        if len(fields) >= 3:
            mount_point = fields[1]
            inside = resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) > len(best):
                best, fstype, device = mount_point, fields[2], fields[0]
    return f"{fstype} ({device} on {best})"


def git_revision() -> str:
    """The checkout's short revision, and whether ringkv's sources differ from it."""
    try:
        src = src_root()
        rev = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return f"git {rev}" + (" with uncommitted changes" if dirty else "")

"""Facts about this machine that several API groups report."""

from __future__ import annotations


def mem_total() -> int:
    """Physical memory in bytes (``/proc/meminfo``), 0 if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0

"""The machine and the software the benchmarks ran on, as one table.

Usage: .venv/bin/python bench/machine.py
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
from importlib import metadata

from benchlib import load_average, table

from tests.lab.lab import find_tool


def main() -> int:
    rows = [
        ("CPU", _cpu_model()),
        ("CPUs (nproc)", str(os.cpu_count())),
        ("memory", f"{_mem_total_gib():.1f} GiB"),
        ("OS", _os_release()),
        ("kernel", platform.release()),
        ("temporary files", _filesystem(tempfile.gettempdir())),
        ("Python", platform.python_version()),
        ("certbot", metadata.version("certbot")),
        ("dnspython", metadata.version("dnspython")),
        ("BIND", _first_line([find_tool("named"), "-v"])),
        ("Unbound", _first_line([find_tool("unbound"), "-V"])),
        ("Knot DNS", _first_line([find_tool("knotd"), "--version"])),
        ("OpenSSL", _first_line(["openssl", "version"])),
        ("load average (1/5/15 min)", load_average()),
    ]
    print(table(["", "value"], rows))
    return 0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float:
    with open("/proc/meminfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return 0.0


def _os_release() -> str:
    try:
        with open("/etc/os-release", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


def _filesystem(path: str) -> str:
    done = subprocess.run(["df", "-T", path], capture_output=True, text=True, check=False)
    fields = done.stdout.splitlines()[-1].split() if done.returncode == 0 else []
    return f"{path} on {fields[1]}" if len(fields) > 1 else path


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


if __name__ == "__main__":
    sys.exit(main())

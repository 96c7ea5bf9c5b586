"""A description of the machine and software that a benchmark ran on."""

import os
import platform
import shutil
import subprocess
from importlib import metadata

from .load import cpu_count


def cpu_model():
    """Return the CPU model name from /proc/cpuinfo, or platform's guess."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package):
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _tool_version(argv):
    if shutil.which(argv[0]) is None:
        return None
    try:
        completed = subprocess.run(
            argv, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    output = (completed.stdout or completed.stderr).strip()
    return output.splitlines()[0] if output else None


def _compiled_table():
    try:
        import fastlimit
    except ImportError:
        return None
    return bool(getattr(fastlimit, "COMPILED", False))


def describe():
    """Return the machine, interpreter and package versions as a dict."""
    return {
        "cpu": cpu_model(),
        "cores": cpu_count(),
        "logical_cpus": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sanic": _version("sanic"),
        "aiohttp": _version("aiohttp"),
        "limits": _version("limits"),
        "redis_client": _version("redis"),
        "uvloop": _version("uvloop"),
        "fastlimit_compiled": _compiled_table(),
        "wrk": _tool_version(["wrk", "-v"]),
        "redis_server": _tool_version(["redis-server", "--version"]),
    }


def format_text(machine):
    """Return the description as one line per item."""
    return [f"{name:<20}{value}" for name, value in machine.items()]

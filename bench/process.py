"""Start a server process on a free loopback port, wait for it, stop it by pid.

Used for `python -m server` and for the comparison apps. Every wait is
bounded, and stopping sends SIGINT to the server's pid, then SIGKILL to that
pid and to any worker it left behind, each by its own pid.
"""

import collections
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

# The repository root, where `python -m server` and `python -m bench.apps` run.
ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


class ServerError(RuntimeError):
    """A server that exited or did not become healthy in time."""


def free_port(host="127.0.0.1"):
    """Return a TCP port that was free on `host` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def child_pids(pid):
    """Return the pids of every live descendant of `pid`, read from /proc.

    Returns an empty list where /proc is missing.
    """
    parents = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry))
    found = []
    pending = [pid]
    while pending:
        for child in parents.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def cpu_seconds(pids):
    """Return the user plus system CPU seconds used so far by `pids`.

    Reads /proc, so it returns None where /proc is missing. A pid that has
    exited counts as zero.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    seen = False
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        seen = True
        # utime and stime are fields 14 and 15 of stat(5), so 12 and 13 here.
        total += int(fields[11]) + int(fields[12])
    if not seen:
        return None
    return total / ticks


class ServerProcess:
    """A server started as `argv` with `env`, listening on `url`.

    Use as a context manager: entering starts the process and waits until
    one of `health_paths` returns a status below 500, and leaving stops it.
    A path that returns 404 is dropped, so /healthz falls back to /.
    """

    def __init__(self, argv, url, env=None, cwd=None, health_paths=("/healthz", "/")):
        self.argv = list(argv)
        self.url = url.rstrip("/")
        self.env = env
        self.cwd = cwd
        self.health_paths = health_paths
        self.process = None
        self.workers = []

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()

    @property
    def pid(self):
        return self.process.pid

    def start(self, timeout=START_TIMEOUT):
        """Start the process and wait until it is healthy.

        Raises ServerError, with the end of the server's output, when the
        process exits or stays unhealthy for `timeout` seconds.
        """
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._output = _OutputTail(self.process.stdout)
        try:
            self._wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        self.workers = child_pids(self.process.pid)

    def _wait_healthy(self, timeout):
        deadline = time.monotonic() + timeout
        paths = list(self.health_paths)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(
                    f"server exited with status {self.process.returncode} "
                    f"before it was healthy: {' '.join(self.argv)}\n"
                    f"{self._output.text()}"
                )
            for path in list(paths):
                status = _probe(self.url + path)
                if status == 404 and len(paths) > 1:
                    paths.remove(path)
                elif status is not None and status < 500:
                    return
            time.sleep(0.1)
        raise ServerError(
            f"server not healthy at {self.url} after {timeout:.0f} s: "
            f"{' '.join(self.argv)}\n{self._output.text()}"
        )

    def output(self):
        """Return the last lines that the server printed."""
        return self._output.text()

    def cpu_seconds(self):
        """Return the CPU seconds used so far by the server and its workers."""
        return cpu_seconds([self.process.pid, *self.workers])

    def cpu_seconds_by_pid(self):
        """Return {pid: CPU seconds} for the server and its current workers.

        The workers are looked up again on every call, so a restarted worker
        shows up under its new pid. Returns {} where /proc is missing.
        """
        self.workers = child_pids(self.process.pid)
        found = {}
        for pid in [self.process.pid, *self.workers]:
            seconds = cpu_seconds([pid])
            if seconds is not None:
                found[pid] = seconds
        return found

    def stop(self, timeout=STOP_TIMEOUT):
        """Stop the server by pid: SIGINT, then SIGKILL after `timeout` s."""
        if self.process is None or self.process.poll() is not None:
            self._close()
            return
        workers = [(pid, _start_time(pid)) for pid in child_pids(self.process.pid)]
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)
        for pid, started in workers:
            _kill_if_alive(pid, started)
        self._close()

    def _close(self):
        if self.process is not None and self.process.stdout is not None:
            self._output.join()
            self.process.stdout.close()


class _OutputTail:
    """The last lines a process wrote, read by a thread so the pipe never fills."""

    def __init__(self, stream, lines=40):
        self._lines = collections.deque(maxlen=lines)
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream):
        for line in iter(stream.readline, b""):
            self._lines.append(line.decode(errors="replace").rstrip())

    def join(self):
        self._thread.join(5)

    def text(self):
        return "\n".join(self._lines)


def _probe(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None


def _start_time(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[19]
    except OSError:
        return None


def _kill_if_alive(pid, started):
    # A worker that already exited may have had its pid reused, so the start
    # time (field 22 of stat(5)) must still match before the signal is sent.
    if started is None or _start_time(pid) != started:
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def python_argv(*args):
    """Return the argv that runs this interpreter with `args`."""
    return [sys.executable, *args]

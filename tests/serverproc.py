"""Start `python -m server` as a subprocess on a free loopback port.

    with ServerProcess({"FASTLIMIT_LIMIT": "10/hour"}, workers=2) as server:
        urllib.request.urlopen(server.url("/"))

The server runs in its own session with its output in a log file. It
starts in a temporary working directory, so a .env in the repository does
not leak in, and it gets a table file of its own unless the env names one.
Variables starting with FASTLIMIT_ or SANIC_ in the caller's environment
are not passed on. Stopping sends SIGTERM to the server's pid, then
SIGKILL to its process group if it has not exited in time.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
_WORKER_STARTED = re.compile(r"worker started: pid (\d+)")
_READY = re.compile(r"ready: \d+ (workers|process) serving")
# Sanic's main process sees the workers ready within 0.1 s of the ready
# line; a SIGTERM before that makes it hang, so stop() waits this long.
READY_MARGIN = 0.3


def free_port(host="127.0.0.1"):
    """Return a TCP port that is free on host at the time of the call."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def ipv6_loopback_available():
    """Return True if a socket can listen on ::1."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def server_environment(env=None, directory=None):
    """Return the environment for a server subprocess."""
    result = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("FASTLIMIT_", "SANIC_"))
    }
    result["PYTHONPATH"] = REPOSITORY + os.pathsep + result.get("PYTHONPATH", "")
    result["PYTHONUNBUFFERED"] = "1"
    if directory is not None:
        result["FASTLIMIT_TABLE"] = os.path.join(directory, "test.table")
        # A small table keeps start-up fast; the tests use few keys.
        result["FASTLIMIT_SLOTS"] = "65536"
    result.update(env or {})
    return result


def run_server(env=None, args=(), timeout=20.0, cwd=None):
    """Run python -m server to completion and return the CompletedProcess.

    For configurations that must fail at startup. Raises TimeoutExpired if
    the server is still running after timeout seconds (and kills it).
    """
    with tempfile.TemporaryDirectory() as directory:
        return subprocess.run(
            [sys.executable, "-m", "server", *args],
            env=server_environment(env, directory),
            cwd=cwd or directory,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


class ServerProcess:
    """A running `python -m server` on a free port of host.

    `command` replaces `python -m server` with another program that takes
    --host, --port and --workers and logs the same start lines.
    """

    def __init__(
        self, env=None, workers=2, host="127.0.0.1", args=(), cwd=None, command=None
    ):
        self._directory = tempfile.TemporaryDirectory()
        self.directory = self._directory.name
        self.host = host
        self.port = free_port(host)
        self.workers = workers
        self.env = server_environment(env, self.directory)
        self.table = self.env.get("FASTLIMIT_TABLE")
        self.args = [
            "--host",
            host,
            "--port",
            str(self.port),
            "--workers",
            str(workers),
            *args,
        ]
        self.cwd = cwd or self.directory
        self.command = command or [sys.executable, "-m", "server"]
        self.log_path = os.path.join(self.directory, "server.log")
        self.process = None
        self._ready_at = None

    @property
    def pid(self):
        return self.process.pid

    def url(self, path="/"):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"

    def output(self):
        """Return everything the server wrote to stdout and stderr so far."""
        with open(self.log_path, encoding="utf-8", errors="replace") as log:
            return log.read()

    def start(self, timeout=START_TIMEOUT):
        """Start the server and wait until /healthz returns 200 and all workers run."""
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [*self.command, *self.args],
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=START_TIMEOUT, workers=None):
        """Wait until /healthz returns 200 and `workers` workers have started.

        Raises RuntimeError with the server output if the server exits or
        does not become ready within timeout seconds.
        """
        expected = self.workers if workers is None else workers
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with status {self.process.returncode}:\n"
                    + self.output()
                )
            output = self.output()
            started = len(_WORKER_STARTED.findall(output))
            if started >= expected and _READY.search(output) and self._healthy():
                self._ready_at = time.monotonic()
                return
            time.sleep(0.1)
        raise RuntimeError(
            f"server not ready within {timeout} s:\n" + self.output()
        )

    def _healthy(self):
        try:
            with urllib.request.urlopen(self.url("/healthz"), timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def worker_pids(self):
        """Return the pids of workers that logged their start, oldest first."""
        return [int(pid) for pid in _WORKER_STARTED.findall(self.output())]

    def live_worker_pids(self):
        """Return the started workers that are still running children."""
        children = set()
        task_directory = f"/proc/{self.pid}/task"
        try:
            for task in os.listdir(task_directory):
                path = os.path.join(task_directory, task, "children")
                with open(path, encoding="ascii") as file:
                    children.update(int(pid) for pid in file.read().split())
        except OSError:
            return []
        return [pid for pid in self.worker_pids() if pid in children]

    def stop(self, timeout=STOP_TIMEOUT):
        """Stop the server by pid and return its exit status."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        if self._ready_at is not None:
            time.sleep(max(0.0, self._ready_at + READY_MARGIN - time.monotonic()))
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait(timeout)

    def close(self):
        try:
            self.stop()
        finally:
            self._directory.cleanup()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.close()

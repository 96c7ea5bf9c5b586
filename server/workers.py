"""Restart Sanic worker processes that die.

Sanic 25.12's WorkerManager marks a worker that exits on its own (killed
by a signal, crashed) as FAILED and carries on with one worker fewer. The
watchdog here runs as a thread in the main process and asks the manager
to restart such a worker through the manager's own monitor pipe, the way
a worker asks for a restart with `app.m.restart()`.
"""

import logging
import threading
import time
from collections import deque

from sanic.worker.process import WorkerProcess

logger = logging.getLogger("fastlimit.server")

POLL_INTERVAL = 0.25
# A worker that dies this many times within RESTART_WINDOW seconds is left
# down, because it is failing at startup rather than being killed.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0


class WorkerWatchdog:
    """A thread that restarts dead server workers of a WorkerManager."""

    def __init__(self, manager):
        self.manager = manager
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="fastlimit-worker-watchdog", daemon=True
        )
        self._serving = {}
        self._requested = set()
        self._restarts = {}
        self._abandoned = set()

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2 * POLL_INTERVAL + 1)

    def _run(self):
        while not self._stop.wait(POLL_INTERVAL):
            # Sanic sets this flag when it starts to shut the workers down.
            if getattr(self.manager, "_shutting_down", False):
                return
            try:
                self._check()
            except Exception:
                logger.exception("worker watchdog check failed; checking again")

    def _state(self, name):
        try:
            return self.manager.worker_state.get(name, {}).get("state")
        except (BrokenPipeError, ConnectionResetError, EOFError):
            return None

    def _check(self):
        for process in list(self.manager.transient_processes):
            name = process.name
            if WorkerProcess.SERVER_LABEL not in name or name in self._abandoned:
                continue
            pid = process.pid
            if process.is_alive():
                if self._state(name) == "ACKED":
                    self._serving[name] = pid
                continue
            if process.exitcode in (None, 0) or self._serving.get(name) != pid:
                continue
            if pid in self._requested or self._stop.is_set():
                continue
            self._restart(process, pid)

    def _restart(self, process, pid):
        name = process.name
        now = time.monotonic()
        history = self._restarts.setdefault(name, deque())
        while history and now - history[0] > RESTART_WINDOW:
            history.popleft()
        if len(history) >= MAX_RESTARTS:
            self._abandoned.add(name)
            logger.error(
                "worker %s [pid %d] exited with status %s, its %d exit within "
                "%.0f s; not restarting it",
                name,
                pid,
                process.exitcode,
                len(history) + 1,
                RESTART_WINDOW,
            )
            return
        history.append(now)
        self._requested.add(pid)
        logger.warning(
            "worker %s [pid %d] exited with status %s; restarting it",
            name,
            pid,
            process.exitcode,
        )
        # NOTE: the main thread also writes to this pipe, but only while
        # starting and when a shutdown signal arrives.
        self.manager.monitor_publisher.send(f"{name}:")

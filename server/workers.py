"""Restart Sanic worker processes that die.

Sanic 25.12's WorkerManager marks a worker that exits on its own (killed
by a signal, crashed) as FAILED and carries on with one worker fewer. The
watchdog here runs as a thread in the main process. It requests the
restart of such a worker through the manager's own monitor pipe, with the
message that `app.m.restart()` sends from a worker.
"""

import asyncio
import logging
import os
import signal
import threading
import time
from collections import deque

from sanic.worker.process import WorkerProcess

logger = logging.getLogger("fastlimit.server")

POLL_INTERVAL = 0.25
# Key in a worker's Sanic worker state, set by the worker once it serves.
SERVING_KEY = "fastlimit_serving_pid"
# A worker that dies this many times within RESTART_WINDOW seconds is left
# down, because it is failing at startup rather than being killed.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
# How often a worker checks that the main process is still its parent.
PARENT_POLL_INTERVAL = 1.0


def _start_time(pid):
    """Return the start time of pid from /proc, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as file:
            return int(file.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _siblings(parent_pid):
    """Return (pid, start time) of the other children of parent_pid.

    Read from /proc, so empty where there is none. The start time
    distinguishes a sibling from a later process that reuses its pid.
    """
    children = set()
    try:
        for thread in os.listdir(f"/proc/{parent_pid}/task"):
            path = f"/proc/{parent_pid}/task/{thread}/children"
            with open(path, encoding="ascii") as file:
                children.update(int(pid) for pid in file.read().split())
    except OSError:
        return []
    children.discard(os.getpid())
    return [(pid, _start_time(pid)) for pid in sorted(children)]


async def watch_parent(parent_pid):
    """Stop this worker once its parent, the main process, has died.

    A main process killed with SIGKILL cannot stop its workers, which would
    go on serving and hold the port. The worker notices that it was
    reparented and sends SIGTERM to the processes that were its siblings
    when it started: the other workers and Sanic's state manager process,
    which would otherwise stay behind. Then it sends SIGTERM to itself,
    which Sanic handles as a stop.
    """
    siblings = _siblings(parent_pid)
    while True:
        await asyncio.sleep(PARENT_POLL_INTERVAL)
        if os.getppid() == parent_pid:
            continue
        logger.error(
            "main process %d is gone; stopping worker %d", parent_pid, os.getpid()
        )
        for pid, started in siblings:
            if started is not None and _start_time(pid) == started:
                try:
                    os.kill(pid, signal.SIGTERM)
                except OSError:
                    pass
        os.kill(os.getpid(), signal.SIGTERM)
        return


def mark_serving(app):
    """Record in the worker state that this worker process serves requests.

    Called in each worker after its server starts. Only a worker that got
    that far is restarted when it dies, so a worker that fails at startup
    is left to Sanic, which stops the server then.
    """
    app.m.state[SERVING_KEY] = os.getpid()


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
        self._ready = False
        self.gave_up = False

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
            return dict(self.manager.worker_state.get(name, {}))
        except (BrokenPipeError, ConnectionResetError, EOFError):
            return {}

    def _check(self):
        processes = [
            process
            for process in self.manager.transient_processes
            if WorkerProcess.SERVER_LABEL in process.name
        ]
        if not self._ready:
            states = [self._state(process.name).get("state") for process in processes]
            if states and all(state == "ACKED" for state in states):
                self._ready = True
                # NOTE: Sanic 25.12 hangs for 30 s or more if SIGTERM arrives
                # before its main process has seen every worker ready, which
                # happens within 0.1 s of this line.
                logger.info("ready: %d workers serving", len(states))
        for process in processes:
            name = process.name
            if name in self._abandoned:
                continue
            pid = process.pid
            state = self._state(name)
            if process.is_alive():
                if state.get("state") == "ACKED":
                    self._serving[name] = pid
                continue
            served = state.get(SERVING_KEY) == pid or self._serving.get(name) == pid
            if process.exitcode in (None, 0) or not served:
                continue
            if pid in self._requested or self._stop.is_set():
                continue
            self._restart(process, pid)

    def _stop_if_no_workers(self):
        # A server whose workers are all left down would keep its port open
        # and serve nothing; stop it so that a supervisor notices the exit.
        alive = [
            process
            for process in self.manager.transient_processes
            if WorkerProcess.SERVER_LABEL in process.name
            and process.name not in self._abandoned
        ]
        if alive:
            return
        self.gave_up = True
        logger.error("no server worker left; stopping the server")
        os.kill(os.getpid(), signal.SIGTERM)

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
            self._stop_if_no_workers()
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

"""The load generator: client processes that send requests with aiohttp.

Each client process runs one event loop with its share of the connections,
the requests and the rate, and records every request: the client id it
carried, when it was sent, when the response headers arrived, when the body
was read, the status and the server worker that sent the response. The parent
process starts the clients together, prints progress from a shared counter,
and merges their records.
"""

import array
import asyncio
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass, field

import aiohttp
from yarl import URL

# The response header in which a server may name its worker process.
WORKER_HEADER = "X-Worker-Pid"
IP_HEADERS = ("X-Real-IP", "X-Forwarded-For")
READY_TIMEOUT = 30.0
PROGRESS_INTERVAL = 0.5
PLAIN_PROGRESS_INTERVAL = 2.0


@dataclass
class LoadSpec:
    """The load of one run: target, client ids, connections, rate and length.

    `duration` is in seconds and `rate` in requests per second summed over
    all client processes. With neither `duration` nor `requests`, the run
    never stops, so the caller sets one of them.
    """

    url: str
    key_spec: str
    keys: list
    concurrency: int = 64
    processes: int = 1
    duration: float = None
    requests: int = None
    rate: float = None
    timeout: float = 10.0
    path: str = "/"
    keep_alive: bool = True


@dataclass
class Records:
    """Every request of a run, one entry per request in each column.

    `status` is 0 for a request that failed without a response, and its
    error's type name is counted in `errors`. `worker` indexes `workers`,
    or is -1 where the server did not name its worker.
    """

    key: array.array = field(default_factory=lambda: array.array("i"))
    sent: array.array = field(default_factory=lambda: array.array("d"))
    received: array.array = field(default_factory=lambda: array.array("d"))
    done: array.array = field(default_factory=lambda: array.array("d"))
    status: array.array = field(default_factory=lambda: array.array("h"))
    worker: array.array = field(default_factory=lambda: array.array("i"))
    workers: list = field(default_factory=list)
    errors: dict = field(default_factory=dict)
    started: float = 0.0
    stopped: float = 0.0
    client_cpu: float = 0.0

    def __len__(self):
        return len(self.status)

    def extend(self, other):
        """Append the records of `other`, renumbering its workers."""
        renumber = []
        for name in other.workers:
            if name not in self.workers:
                self.workers.append(name)
            renumber.append(self.workers.index(name))
        self.key.extend(other.key)
        self.sent.extend(other.sent)
        self.received.extend(other.received)
        self.done.extend(other.done)
        self.status.extend(other.status)
        self.worker.extend(renumber[i] if i >= 0 else -1 for i in other.worker)
        for name, count in other.errors.items():
            self.errors[name] = self.errors.get(name, 0) + count
        self.client_cpu += other.client_cpu


def parse_key_spec(spec):
    """Return (kind, name) for "ip", "query:NAME" or "header:NAME".

    Raises ValueError naming the spec for anything else.
    """
    kind, _, name = spec.partition(":")
    if kind == "ip" and not name:
        return "ip", ""
    if kind in ("query", "header") and name:
        return kind, name
    raise ValueError(f"invalid key spec {spec!r}: use ip, query:NAME or header:NAME")


def client_ids(count, kind, run_id):
    """Return `count` client ids that are unique to this run.

    For "ip" they are IPv4 addresses in 10.0.0.0/8 whose second byte comes
    from `run_id`, so at most 65,536. Other kinds get "<run_id>-<n>".
    """
    if kind == "ip":
        if count > 65536:
            raise ValueError(f"invalid key count {count}: ip keys allow at most 65536")
        second = int(run_id, 16) % 256
        return [f"10.{second}.{n // 256}.{n % 256}" for n in range(count)]
    return [f"{run_id}-{n}" for n in range(count)]


def _request_args(spec):
    """Return one (url, headers) pair per client id of `spec`."""
    kind, name = parse_key_spec(spec.key_spec)
    base = URL(spec.url.rstrip("/") + spec.path)
    pairs = []
    for key in spec.keys:
        if kind == "ip":
            pairs.append((base, {header: key for header in IP_HEADERS}))
        elif kind == "query":
            pairs.append((base.update_query({name: key}), {}))
        else:
            pairs.append((base, {name: key}))
    return pairs


def _share(total, parts, index):
    """Return the share of `total` that part `index` of `parts` takes."""
    return total // parts + (1 if index < total % parts else 0)


async def _run_client(spec, index, start_at, progress):
    records = Records()
    pairs = _request_args(spec)
    processes = spec.processes
    concurrency = _share(spec.concurrency, processes, index)
    budget = None
    if spec.requests is not None:
        budget = _share(spec.requests, processes, index)
    rate = spec.rate / processes if spec.rate else None
    deadline = start_at + spec.duration if spec.duration else None
    worker_index = {}
    # Every process cycles through all client ids, starting at its own
    # offset, so each id is sent from every process.
    offset = index * len(pairs) // processes
    slots = iter(range(budget) if budget is not None else _count())
    done = 0

    connector = aiohttp.TCPConnector(limit=concurrency, force_close=not spec.keep_alive)
    timeout = aiohttp.ClientTimeout(total=spec.timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.sleep(max(0.0, start_at - time.time()))

        async def send():
            nonlocal done
            for slot in slots:
                if rate is not None:
                    delay = start_at + slot / rate - time.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                if deadline is not None and time.time() >= deadline:
                    return
                key = (slot + offset) % len(pairs)
                url, headers = pairs[key]
                worker = -1
                t0 = time.time()
                try:
                    async with session.get(url, headers=headers) as response:
                        t1 = time.time()
                        status = response.status
                        name = response.headers.get(WORKER_HEADER)
                        await response.read()
                    t2 = time.time()
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    t1 = t2 = time.time()
                    status = 0
                    name = None
                    error = type(exc).__name__
                    records.errors[error] = records.errors.get(error, 0) + 1
                if name is not None:
                    worker = worker_index.get(name)
                    if worker is None:
                        worker = worker_index[name] = len(records.workers)
                        records.workers.append(name)
                records.key.append(key)
                records.sent.append(t0)
                records.received.append(t1)
                records.done.append(t2)
                records.status.append(status)
                records.worker.append(worker)
                done += 1
                progress[index] = done

        await asyncio.gather(*(send() for _ in range(concurrency)))
    return records


def _count():
    n = 0
    while True:
        yield n
        n += 1


def _client_main(spec, index, progress, connection):
    """Run one client process: report ready, wait for the start time, run."""
    try:
        import uvloop
    except ImportError:
        uvloop = None
    connection.send("ready")
    start_at = connection.recv()
    started_cpu = time.process_time()
    if uvloop is not None:
        records = uvloop.run(_run_client(spec, index, start_at, progress))
    else:
        records = asyncio.run(_run_client(spec, index, start_at, progress))
    records.client_cpu = time.process_time() - started_cpu
    connection.send(records)
    connection.close()


class Progress:
    """A live line on stderr, or plain lines every few seconds off a tty."""

    def __init__(self, stream=None, expected=None):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.expected = expected
        self.last = 0.0

    def update(self, elapsed, count, force=False):
        now = time.monotonic()
        interval = PROGRESS_INTERVAL if self.live else PLAIN_PROGRESS_INTERVAL
        if not force and now - self.last < interval:
            return
        self.last = now
        rate = count / elapsed if elapsed > 0 else 0.0
        total = f"/{self.expected}" if self.expected else ""
        line = f"{elapsed:6.1f} s  {count}{total} requests  {rate:,.0f} req/s"
        if self.live:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self):
        if self.live:
            self.stream.write("\n")
            self.stream.flush()


def run(spec, show_progress=True):
    """Run `spec` in `spec.processes` client processes and return Records.

    Lowers `spec.processes` in place when there are fewer connections or
    requests than processes. Raises RuntimeError when a client process does
    not start or dies.
    """
    if spec.duration is None and spec.requests is None:
        raise ValueError("set a duration or a number of requests")
    context = multiprocessing.get_context("spawn")
    processes = max(1, min(spec.processes, spec.concurrency))
    if spec.requests is not None:
        processes = max(1, min(processes, spec.requests))
    spec.processes = processes
    progress = context.RawArray("q", processes)
    clients = []
    for index in range(processes):
        parent, child = context.Pipe()
        process = context.Process(
            target=_client_main, args=(spec, index, progress, child), daemon=True
        )
        process.start()
        child.close()
        clients.append((process, parent))

    try:
        for process, connection in clients:
            if not connection.poll(READY_TIMEOUT):
                raise RuntimeError(f"client process {process.pid} did not start")
            connection.recv()
        start_at = time.time() + 0.1
        for _, connection in clients:
            connection.send(start_at)

        meter = Progress(expected=spec.requests) if show_progress else None
        pending = list(clients)
        results = []
        while pending:
            for item in list(pending):
                process, connection = item
                if connection.poll(0):
                    results.append(connection.recv())
                    pending.remove(item)
                elif not process.is_alive():
                    raise RuntimeError(
                        f"client process {process.pid} exited with status "
                        f"{process.exitcode} before it sent its records"
                    )
            if meter is not None:
                meter.update(max(0.0, time.time() - start_at), sum(progress))
            if pending:
                time.sleep(0.05)
        if meter is not None:
            meter.update(max(0.0, time.time() - start_at), sum(progress), force=True)
            meter.finish()
    finally:
        for process, connection in clients:
            connection.close()
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join(5)

    merged = Records(started=start_at)
    for records in results:
        merged.extend(records)
    merged.stopped = max(merged.done) if len(merged) else start_at
    return merged


def cpu_count():
    """Return the number of cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1

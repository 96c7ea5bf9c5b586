"""Summaries of a load run: counts, rates, latency and the exactness check."""

import json
import math
from collections import Counter

from . import exact

ALLOWED = 200
REJECTED = 429
MAX_KEY_LINES = 60


def percentile(sorted_values, fraction):
    """Return the nearest-rank percentile of an ascending list, or None if empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_summary(records):
    """Return p50, p90, p99 and max of the response time in milliseconds.

    The response time runs from sending the request to reading the whole
    body, over the requests that got a response.
    """
    values = sorted(
        (done - sent) * 1000.0
        for sent, done, status in zip(records.sent, records.done, records.status)
        if status
    )
    return {
        "p50": percentile(values, 0.50),
        "p90": percentile(values, 0.90),
        "p99": percentile(values, 0.99),
        "max": values[-1] if values else None,
    }


def exactness(records, keys, limit, window, slack=0.0):
    """Run the exactness check over the 200s and 429s of `records`."""
    columns = {key: ([], [], []) for key in keys}
    for index, sent, received, status in zip(
        records.key, records.sent, records.received, records.status
    ):
        if status not in (ALLOWED, REJECTED):
            continue
        sent_at, received_at, allowed = columns[keys[index]]
        sent_at.append(sent)
        received_at.append(received)
        allowed.append(status == ALLOWED)
    return exact.check(columns, limit=limit, window=window, slack=slack)


def summarize(records, spec, policy, server=None, slack=0.0):
    """Return the report of one run as a dict that JSON can encode.

    `server` is a dict describing the server (url, workers, cpu seconds),
    or None for a server that the benchmark did not start.
    """
    elapsed = max(records.stopped - records.started, 1e-9)
    statuses = Counter(records.status)
    failed = sum(
        count for status, count in statuses.items() if status not in (ALLOWED, REJECTED)
    )
    workers = Counter(records.workers[index] for index in records.worker if index >= 0)
    check = exactness(records, spec.keys, policy.limit, policy.window, slack=slack)
    summary = {
        "url": spec.url,
        "key_spec": spec.key_spec,
        "keys": len(spec.keys),
        "key_examples": spec.keys[:3],
        "limit": str(policy),
        "concurrency": spec.concurrency,
        "processes": spec.processes,
        "target_rate": spec.rate,
        "duration": spec.duration,
        "requests_target": spec.requests,
        "elapsed": elapsed,
        "requests": len(records),
        "requests_per_second": len(records) / elapsed,
        "statuses": {str(status): count for status, count in sorted(statuses.items())},
        "failed": failed,
        "errors": dict(records.errors),
        "latency_ms": latency_summary(records),
        "workers": dict(sorted(workers.items())),
        "client_cpu_seconds": records.client_cpu,
        "server": server,
        "clock_slack": slack,
        "exactness": check.to_dict(),
    }
    summary["ok"] = failed == 0 and check.exact
    return summary


def _milliseconds(value):
    return "-" if value is None else f"{value:.2f} ms"


def format_text(summary):
    """Return the report as lines of text for a terminal."""
    lines = []
    add = lines.append
    add(f"target          {summary['url']}")
    server = summary.get("server")
    if server:
        add(f"server workers  {server.get('workers')}")
    examples = ", ".join(summary["key_examples"])
    add(
        f"client ids      {summary['keys']} via {summary['key_spec']} "
        f"(for example {examples})"
    )
    add(f"limit           {summary['limit']} per client id")

    load = f"{summary['concurrency']} connections in {summary['processes']} processes"
    if summary["target_rate"]:
        load += f", paced at {summary['target_rate']:g} req/s"
    add(f"load            {load}")
    add(f"requests        {summary['requests']} in {summary['elapsed']:.2f} s")
    add(f"rate            {summary['requests_per_second']:,.1f} req/s")
    statuses = "  ".join(
        f"{code}: {count}" for code, count in summary["statuses"].items()
    )
    add(
        f"statuses        {statuses}"
        + ("   (0 = no response)" if "0" in summary["statuses"] else "")
    )
    if summary["errors"]:
        errors = ", ".join(
            f"{name}: {count}" for name, count in summary["errors"].items()
        )
        add(f"errors          {errors}")

    latency = summary["latency_ms"]
    add(
        "latency         "
        + "  ".join(
            f"{name} {_milliseconds(latency[name])}"
            for name in ("p50", "p90", "p99", "max")
        )
    )
    if summary["workers"]:
        spread = "  ".join(
            f"pid {pid}: {count}" for pid, count in summary["workers"].items()
        )
        add(f"server workers  {spread}")
    cpu = f"client {summary['client_cpu_seconds']:.1f} s"
    if server and server.get("cpu_seconds") is not None:
        cpu += f", server {server['cpu_seconds']:.1f} s"
    add(f"cpu time        {cpu}")
    by_pid = (server or {}).get("cpu_seconds_by_pid")
    if by_pid:
        parts = []
        for pid, seconds in by_pid.items():
            is_main = pid == str(server.get("pid"))
            # Helper processes that did no work would only crowd the line.
            if not is_main and seconds < 0.05:
                continue
            role = " (main)" if is_main else ""
            parts.append(f"pid {pid}{role}: {seconds:.1f} s")
        add("server cpu      " + "  ".join(parts))
    lines.extend(_format_check(summary["exactness"]))
    add("result          " + ("ok" if summary["ok"] else "FAILED"))
    return lines


def _format_check(check):
    lines = ["", "exactness check (200s allowed by the limit against 200s observed)"]
    keys = check["keys"]
    listed = (
        keys
        if len(keys) <= MAX_KEY_LINES
        else [key for key in keys if not key["exact"]]
    )
    if listed:
        lines.append(
            f"  {'client id':<22} {'attempts':>9} {'windows':>8} {'allowed':>8} "
            f"{'observed':>9} {'crossing':>9}  result"
        )
    for key in listed:
        notes = []
        if key["unresolved"]:
            notes.append(f"{key['unresolved']} spanned more than two windows")
        if key["late_allowed"]:
            notes.append(f"{key['late_allowed']} allowed after a rejection")
        result = "exact" if key["exact"] else "DIFFERENT"
        if notes:
            result += " (" + ", ".join(notes) + ")"
        lines.append(
            f"  {key['key']:<22} {key['attempts']:>9} {key['windows']:>8} "
            f"{key['allowed']:>8} {key['observed']:>9} {key['ambiguous']:>9}  {result}"
        )
    if len(listed) < len(keys):
        lines.append(f"  ({len(keys) - len(listed)} more client ids, all exact)")
    different = sum(1 for key in keys if not key["exact"])
    lines.append(
        f"  total: {check['attempts']} attempts, {check['allowed']} allowed, "
        f"{check['observed']} observed, {check['ambiguous']} crossed a window "
        f"boundary, {different} client ids different"
    )
    return lines


def write_json(summary, path):
    """Write `summary` to `path` as indented JSON."""
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(summary, stream, indent=2)
        stream.write("\n")

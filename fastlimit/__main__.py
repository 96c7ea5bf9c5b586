"""python -m fastlimit: show the statistics of a table file.

    python -m fastlimit [PATH] [--json]

PATH defaults to the table that Limiter uses when given no path.  The file
is opened read-only, so this is safe on the table of a running server.
"""

import argparse
import json
import sys

from .errors import TableError
from .limiter import default_path, table_stats

_ROWS = [
    ("path", "table"),
    ("file_size", "file size (bytes)"),
    ("slots", "counters"),
    ("slots_used", "counters in use"),
    ("live_keys", "live keys (window not ended)"),
    ("fullness", "fullness"),
    ("policy_layouts", "policy layouts"),
    ("allowed", "requests allowed"),
    ("rejected", "requests rejected"),
    ("full_events", "full-line events"),
    ("inserts", "keys inserted"),
    ("evictions", "expired keys evicted"),
    ("refunds", "refunds"),
    ("retries", "CAS retries"),
    ("probes", "policy checks"),
]


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m fastlimit",
        description="Show the statistics of a fastlimit table file.",
    )
    parser.add_argument(
        "path",
        nargs="?",
        default=default_path(),
        help="table file (default: %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    try:
        stats = table_stats(args.path)
    except TableError as exc:
        print(f"python -m fastlimit: {exc.strerror}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
        return 0
    width = max(len(label) for _, label in _ROWS)
    for name, label in _ROWS:
        value = stats[name]
        if name == "fullness":
            value = f"{value:.2%}"
        print(f"{label:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:
        # The reader went away (| head): not an error of this command.
        sys.stderr.close()
        sys.exit(0)

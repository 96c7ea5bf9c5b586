"""Measure false sharing and full lines against the number of live keys.

    python -m bench.keyspace [--slots 3145728] [--keys 100000,300000,1000000]
                             [--rounds 1]

For each count N, a new table of --slots counters gets N distinct keys of
limit 1 in one window, once each, --rounds times with a new table (and so
a new hash seed) each time.  A key rejected on its first hit shares
a counter with an earlier key (false sharing).  A key whose line of three
counters is already full of live keys is a full-line event, and is let
through (the default on_full).  Prints both rates per N.
"""

import argparse
import os
import sys
import tempfile

from fastlimit import Limiter
from fastlimit_ext._table import DEFAULT_SLOTS

WINDOW_START = 86400 * 20000.0


def measure(slots, keys, directory):
    path = os.path.join(directory, f"{slots}-{keys}.table")
    limiter = Limiter("1/hour", path=path, slots=slots)
    try:
        rejected = 0
        for number in range(keys):
            if not limiter.hit(b"client-%d" % number, now=WINDOW_START).allowed:
                rejected += 1
        stats = limiter.stats(now=WINDOW_START)
    finally:
        limiter.close()
        os.unlink(path)
    return rejected, stats["full_events"], stats["live_keys"]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.keyspace")
    parser.add_argument(
        "--slots",
        type=int,
        default=DEFAULT_SLOTS,
        help=f"counters in each table (default {DEFAULT_SLOTS})",
    )
    parser.add_argument(
        "--keys",
        default="100000,300000,1000000",
        help="comma-separated live key counts (default 100000,300000,1000000)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="tables per key count (default 1)"
    )
    args = parser.parse_args(argv)
    counts = [int(text) for text in args.keys.split(",")]

    print(
        f"{args.slots:,} counters per table, limit 1 per key, one window, "
        f"{args.rounds} round(s) per row"
    )
    print(f"{'live keys':>10} {'falsely shared':>15} {'rate':>9} "
          f"{'full lines':>11} {'rate':>9}")
    with tempfile.TemporaryDirectory() as directory:
        for keys in counts:
            shared = full = 0
            for _ in range(args.rounds):
                round_shared, round_full, _ = measure(args.slots, keys, directory)
                shared += round_shared
                full += round_full
            total = keys * args.rounds
            print(f"{keys:>10,} {shared:>15,} {shared / total:>9.2e} "
                  f"{full:>11,} {full / total:>9.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

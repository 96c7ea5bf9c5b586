"""python -m bench plot: draw the figures of a `python -m bench compare` run.

Reads the JSON that `python -m bench compare --json FILE` wrote and saves
one PNG with two panels: the median requests per second of each variant
under each load, and the median latency percentiles under each load.
Without matplotlib it prints a message and exits with status 0, so that
scripts that call it still run.
"""

import argparse
import json
import sys

PERCENTILES = ("p50", "p90", "p99")


def draw(result, output):
    """Save the figure of one comparison `result` to `output`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(result["scenarios"])
    variants = result["settings"]["variants"]
    figure, (rates, latencies) = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / len(scenarios)

    for offset, name in enumerate(scenarios):
        data = result["scenarios"][name]["variants"]
        positions = [index + offset * width for index in range(len(variants))]
        values = [
            data[variant]["median"]["requests_per_second"] for variant in variants
        ]
        bars = rates.bar(
            positions,
            values,
            width,
            label=f"{name} ({result['scenarios'][name]['limit']})",
        )
        rates.bar_label(
            bars, labels=[f"{value / 1000:.1f}k" for value in values], fontsize=7
        )
    rates.set_xticks(
        [index + width * (len(scenarios) - 1) / 2 for index in range(len(variants))]
    )
    rates.set_xticklabels(variants)
    rates.set_ylabel("requests per second (median)")
    rates.set_title("Throughput")
    rates.legend(fontsize=8)

    groups = [(name, variant) for name in scenarios for variant in variants]
    width = 0.8 / len(PERCENTILES)
    for offset, percentile in enumerate(PERCENTILES):
        values = [
            result["scenarios"][name]["variants"][variant]["median"]
            .get("latency_ms", {})
            .get(percentile, 0.0)
            for name, variant in groups
        ]
        positions = [index + offset * width for index in range(len(groups))]
        latencies.bar(positions, values, width, label=percentile)
    latencies.set_xticks([index + width for index in range(len(groups))])
    latencies.set_xticklabels(
        [f"{variant}\n{name}" for name, variant in groups],
        fontsize=7,
        rotation=30,
        horizontalalignment="right",
    )
    latencies.set_ylabel("latency, ms (median of runs)")
    latencies.set_title("Latency percentiles")
    latencies.legend(fontsize=8)

    settings = result["settings"]
    machine = result["machine"]
    figure.suptitle(
        f"{settings['client']}, {settings['connections']} connections, "
        f"{settings['workers']} Sanic workers, {machine['cores']} cores "
        f"({machine['cpu']}), Python {machine['python']}, Sanic {machine['sanic']}",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(output, dpi=110)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bench plot",
        description="Draw a comparison that python -m bench compare --json wrote.",
    )
    parser.add_argument("input", help="JSON file of python -m bench compare")
    parser.add_argument(
        "--output",
        default="docs/benchmarks.png",
        help="PNG file to write (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        sys.stderr.write("matplotlib is not installed, so no plot was drawn\n")
        return 0
    with open(args.input, encoding="utf-8") as stream:
        result = json.load(stream)
    draw(result, args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

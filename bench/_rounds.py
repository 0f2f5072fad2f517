"""Two implementations of one step timed in alternating rounds, in one process.

Shared by the micro benchmarks that compare a tuned step with its frozen reference
(`bench.observe`, `bench.behaviour`): each round runs every implementation once, in
reversed order every other round, with the worker's garbage-collector thresholds; a run
returns CPU seconds of its two passes. Prints a row per round and the medians (minima in
parentheses), in µs per call.
"""

from __future__ import annotations

import gc
import statistics
from collections.abc import Callable

from streams.cli import WORKER_GC_THRESHOLD


def alternate(runs: dict[str, Callable[[], tuple[float, float]]], rounds: int, calls: int,
              passes: tuple[str, str]) -> None:
    """Time `runs` (name -> one run) over `rounds` on `calls` calls and print the table."""
    first, second = passes
    print(f"gc: thresholds {WORKER_GC_THRESHOLD}, calls frozen out of collection")
    print(f"{'round':>5} {'implementation':>14} {first + ' us':>13} {second + ' us':>13} "
          f"{'both us':>8}")
    per = 1e6 / calls
    timings: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    thresholds = gc.get_threshold()
    gc.set_threshold(*WORKER_GC_THRESHOLD)
    try:
        for round_ in range(rounds):
            names = list(runs)
            if round_ % 2:
                names.reverse()
            for name in names:
                a, b = runs[name]()
                timings[name].append((a, b))
                print(f"{round_:>5} {name:>14} {a * per:>13.3f} {b * per:>13.3f} "
                      f"{(a + b) * per:>8.3f}")
    finally:
        gc.set_threshold(*thresholds)
    print("median over rounds (min in parentheses), us per call:")
    for name, rows in timings.items():
        columns = {first: [a * per for a, _ in rows], second: [b * per for _, b in rows],
                   "both": [(a + b) * per for a, b in rows]}
        print(f"{name:>14}: " + "  ".join(
            f"{label} {statistics.median(values):.3f} ({min(values):.3f})"
            for label, values in columns.items()))

"""Summarise a py-spy `--format raw` (collapsed stacks) recording: where the samples went.

    python -m bench._profile .data/prof/dw_single.txt [--top 40] [--thread MainThread]

Prints per-thread sample shares, then per function (file and name, lines merged) the
share of samples where it is on the stack (inclusive) and where it is the leaf (self),
and the shares of a few buckets named in `BUCKETS` (first matching bucket from the leaf
up, so each sample lands in one bucket).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^():]*)(?::\d+)?\)$")

# (bucket, substring of "file:function") tested from the leaf frame upwards.
BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("ClickHouse insert (sink thread)",
     ("clickhouse_connect", "chdb", "sinks.py:ClickHouseSink.flush")),
    ("pydantic validation", ("pydantic", "schemas/decode.py", "schemas/fields.py")),
    ("ApiCall.from_event", ("records.py:ApiCall.from_event",)),
    ("detection engine", ("models/",)),
    ("ClickHouse sink add_call", ("sinks.py",)),
    ("alert build/serialise", ("pipeline.py:stamp", "pipeline.py:Pipeline._emit")),
    ("msgspec encode/decode", ("msgspec",)),
    ("faust/aiokafka producer (send)",
     ("aiokafka/producer", "faust/transport/drivers/aiokafka.py:Producer",
      "faust/transport/producer", "faust/topics.py", "faust/channels.py:Channel.send",
      "faust/channels.py:Channel._send", "faust/channels.py:Channel.publish",
      "faust/channels.py:Channel.as_future_message", "faust/sensors")),
    ("aiokafka fetch/parse records",
     ("aiokafka/consumer", "aiokafka/record", "aiokafka/protocol", "aiokafka/conn.py",
      "kafka/")),
    ("faust consumer/stream/agent per-message", ("faust/", "mode/")),
    ("asyncio event loop", ("asyncio/",)),
]


def frames(stack: str) -> list[tuple[str, str]]:
    out = []
    for part in stack.split(";"):
        m = _FRAME.match(part)
        if m:
            out.append((m["file"], m["name"]))
        else:
            out.append(("", part))
    return out


def short(file: str) -> str:
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def summarise(path: Path, top: int, thread: str | None) -> str:
    threads: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        head, _, rest = stack.partition(";")
        name = head.split(": ", 1)[-1] if ": " in head else head
        threads[name] += count
        if thread and thread not in name:
            continue
        total += count
        fs = [(short(f), n) for f, n in frames(rest)]
        keys = [f"{f}:{n}" for f, n in fs]
        for key in set(keys):
            inclusive[key] += count
        if keys:
            leaf[keys[-1]] += count
        for key in reversed(keys):
            hit = next((b for b, subs in BUCKETS if any(s in key for s in subs)), None)
            if hit:
                buckets[hit] += count
                break
        else:
            buckets["other (idle, GC, ...)"] += count
    all_samples = sum(threads.values())
    lines = [f"{path.name}: {all_samples:,} samples"]
    lines.append("threads: " + ", ".join(f"{t} {100 * c / all_samples:.1f}%"
                                         for t, c in threads.most_common(6)))
    lines.append(f"\nbuckets ({thread or 'all threads'}, {total:,} samples):")
    for b, c in buckets.most_common():
        lines.append(f"  {100 * c / total:5.1f}%  {b}")
    lines.append("\ninclusive (on the stack):")
    for k, c in inclusive.most_common(top):
        lines.append(f"  {100 * c / total:5.1f}%  {k}")
    lines.append("\nself (leaf):")
    for k, c in leaf.most_common(top):
        lines.append(f"  {100 * c / total:5.1f}%  {k}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--thread", default=None, help="only threads whose name contains this")
    args = parser.parse_args()
    for path in args.paths:
        print(summarise(path, args.top, args.thread))
        print()


if __name__ == "__main__":
    main()

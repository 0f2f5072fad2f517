"""Offline replay: the streaming pipeline's detection over a file of events, without Kafka.

`distillwatch score` reads events (one per line, or batches), orders them by event time,
runs the same `DetectionEngine` the `detect` agent runs, and writes one alert per line.
Bad lines are reported with their line numbers, never silently skipped.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from models.engine import DetectionEngine
from models.linking.linker import CampaignLinker
from models.linking.suspicion import LinkingSuspicion
from models.records import ApiCall
from schemas.alert import Alert
from schemas.decode import Rejection, decode_jsonl_events
from streams.ordering import order_key

ADVANCE_EVERY_S = 60.0  # event-time seconds between sweeps for quiet episodes


@dataclass
class ReplayReport:
    """What a replay read and wrote."""

    lines: int = 0
    events: int = 0
    rejected: int = 0
    alerts: int = 0
    rejections: list[tuple[int, Rejection]] = field(default_factory=list)


def read_calls(
    lines: Iterable[bytes], report: ReplayReport, keep_rejections: int = 20
) -> list[ApiCall]:
    """Valid events of a JSON-lines stream as ApiCall records; rejections go to `report`."""
    calls: list[ApiCall] = []
    for lineno, item in decode_jsonl_events(lines):
        report.lines = max(report.lines, lineno)
        if isinstance(item, Rejection):
            report.rejected += 1
            if len(report.rejections) < keep_rejections:
                report.rejections.append((lineno, item))
        else:
            calls.append(ApiCall.from_event(item))
    report.events = len(calls)
    return calls


def replay(
    engine: DetectionEngine,
    calls: list[ApiCall],
    linker: CampaignLinker | None = None,
    on_progress: Callable[[int], object] | None = None,
) -> Iterator[Alert]:
    """Alerts of the engine (and of the campaign linker, if given) over the calls, taken in
    event-time order (stable for ties): the streaming pipeline's stages, in one process.

    `on_progress(n)` is called with the number of events done since its last call.
    """
    calls.sort(key=order_key)
    process, advance = engine.process, engine.advance
    suspicion = LinkingSuspicion()
    next_sweep = calls[0].ts + ADVANCE_EVERY_S if calls else 0.0
    for i, call in enumerate(calls, start=1):
        if on_progress is not None and i % 10_000 == 0:
            on_progress(10_000)
        yield from process(call)
        if linker is not None:
            yield from linker.observe(call, suspicion.update(call, engine.last_suspicion))
        if call.ts >= next_sweep:
            yield from advance(call.ts)
            next_sweep = call.ts + ADVANCE_EVERY_S
    if calls:
        yield from advance(calls[-1].ts)
        if linker is not None:
            yield from linker.advance(calls[-1].ts)


def score_file(
    input_path: Path,
    output: IO[str],
    engine: DetectionEngine,
    *,
    linker: CampaignLinker | None = None,
    stamp_wall_clock: bool = True,
    progress: bool = True,
) -> ReplayReport:
    """Replay `input_path` through `engine`, writing alerts as JSON lines to `output`."""
    from tqdm import tqdm

    from streams.pipeline import stamp

    report = ReplayReport()
    size = input_path.stat().st_size
    with input_path.open("rb") as handle, tqdm(
        total=size, unit="B", unit_scale=True, desc="reading", disable=not progress,
        file=sys.stderr,
    ) as bar:

        def lines() -> Iterator[bytes]:
            for line in handle:
                bar.update(len(line))
                yield line

        calls = read_calls(lines(), report)
    with tqdm(
        total=len(calls), unit="ev", desc="scoring", disable=not progress, file=sys.stderr,
        mininterval=0.5,
    ) as bar:
        for alert in replay(engine, calls, linker, on_progress=bar.update):
            if stamp_wall_clock:
                alert = stamp(alert)
            output.write(alert.model_dump_json())
            output.write("\n")
            report.alerts += 1
        bar.update(len(calls) - bar.n)
    return report

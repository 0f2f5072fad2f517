"""`distillwatch produce`: JSON-lines events into the input topic, keyed by account.

Lines are sent as they are (a bad line is the worker's to dead-letter, not ours to drop).
`--rate` caps events per second (wall clock); `--speed` instead replays event time
compressed by that factor; `--batch N` sends N events per record as a JSON array, as a
gateway flush would.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

import msgspec
from confluent_kafka import Producer
from tqdm import tqdm

from streams.kafka import check_reachable, confluent_config
from streams.settings import Settings


class _KeyFields(msgspec.Struct):
    account_id: str | None = None
    ts: str | None = None


_peek = msgspec.json.Decoder(_KeyFields).decode


def peek(line: bytes) -> tuple[bytes | None, float | None]:
    """The account key and event time of an event line, if it has them."""
    try:
        fields = _peek(line)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None, None
    ts = None
    if fields.ts is not None:
        try:
            ts = datetime.fromisoformat(fields.ts).timestamp()
        except ValueError:
            ts = None
    return (fields.account_id.encode() if fields.account_id else None), ts


@dataclass
class ProduceReport:
    records: int = 0
    events: int = 0
    failed: int = 0
    seconds: float = 0.0


class Pacer:
    """Sleeps so that sending keeps to a rate (wall clock) or to compressed event time."""

    def __init__(self, rate: float | None, speed: float | None) -> None:
        self.rate, self.speed = rate, speed
        self.start = time.monotonic()
        self.first_ts: float | None = None

    def wait(self, sent: int, ts: float | None) -> None:
        if self.rate:
            due = self.start + sent / self.rate
        elif self.speed and ts is not None:
            if self.first_ts is None:
                self.first_ts = ts
            due = self.start + (ts - self.first_ts) / self.speed
        else:
            return
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def produce_lines(
    settings: Settings,
    lines: Iterable[bytes],
    *,
    topic: str | None = None,
    rate: float | None = None,
    speed: float | None = None,
    batch: int = 1,
    total: int | None = None,
    progress: bool = True,
) -> ProduceReport:
    """Send event lines to the input topic; return counts once every record is delivered."""
    check_reachable(settings)
    topic = topic or settings.topic_api_calls
    report = ProduceReport()
    producer = Producer(
        confluent_config(
            settings, **{"linger.ms": 20, "compression.type": "lz4",
                         "message.max.bytes": 17 * 1024 * 1024}
        )
    )

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            report.failed += 1

    def send(key: bytes | None, value: bytes) -> None:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=delivered)
                report.records += 1
                return
            except BufferError:  # local queue full: let it drain
                producer.poll(0.1)

    pacer = Pacer(rate, speed)
    started = time.monotonic()
    pending: list[bytes] = []
    with tqdm(total=total, unit="ev", desc=f"→ {topic}", disable=not progress,
              file=sys.stderr, mininterval=0.5) as bar:
        for line in _nonblank(lines):
            key, ts = peek(line)
            pacer.wait(report.events, ts)
            report.events += 1
            bar.update(1)
            if batch > 1:
                pending.append(line)
                if len(pending) >= batch:
                    send(None, b"[" + b",".join(pending) + b"]")
                    pending = []
            else:
                send(key, line)
            producer.poll(0)
        if pending:
            send(None, b"[" + b",".join(pending) + b"]")
        producer.flush(60)
    report.seconds = time.monotonic() - started
    return report


def _nonblank(lines: Iterable[bytes]) -> Iterator[bytes]:
    for line in lines:
        line = line.strip()
        if line:
            yield line

"""Synthetic API-call traffic for the throughput benchmark, encoded fast, sent with librdkafka.

Events are prebuilt dicts (one template per archetype) with `event_id`, `ts`, `tenant_id`
and `account_id` varied, encoded with msgspec. Event time advances by `step_ms`
milliseconds per event, so every event has its own `ts` and an alert's `event_time` names
the one event that triggered it.

Every `harvest_every`-th event belongs to a harvester: an account that sends
`harvest_len` reasoning-trace requests in a row (turn 1, no tools, cut at max_tokens,
output longer than input) and then stops; the next harvester takes over. With the
detector's defaults a harvester fires one alert at its 50th request, well inside
10 minutes of event time. All other events come from `accounts` ordinary chat accounts,
round robin, so the distinct accounts seen are exactly min(accounts, ordinary events)
plus the harvesters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec
from confluent_kafka import Producer

T0_MS = int(datetime(2026, 11, 26, 18, 0, tzinfo=UTC).timestamp() * 1000)

_ORDINARY = {
    "schema_version": 1,
    "request": {"model": "frontier-large", "endpoint": "messages", "temperature": 0.7,
                "max_tokens": 1024, "n": 1, "logprobs": False, "stream": True,
                "tool_count": 0, "turn": 3},
    "response": {"status": 200, "input_tokens": 812, "output_tokens": 240,
                 "latency_ms": 1900, "stop_reason": "end_turn"},
    "prompt": {"simhash": "a3f09c1d22e4b7f0", "chars": 2310, "topic": "chat",
               "cot_request": False, "jailbreak_score": 0.02, "sysprompt_probe": False},
    "client": {"ip": "203.0.113.0/24", "asn": 64500, "country": "SG",
               "user_agent": "python-httpx/0.27",
               "tls_fingerprint": "t13d1516h2_8daaf6152771_02713d6af862"},
    "account": {"created_at": "2026-11-20T00:00:00Z", "payment_fingerprint": "pf_9a8b7c"},
}
_HARVEST = {
    **_ORDINARY,
    "request": {**_ORDINARY["request"], "max_tokens": 4096, "turn": 1, "temperature": 1.0},  # type: ignore[dict-item]
    "response": {**_ORDINARY["response"], "input_tokens": 250, "output_tokens": 4096,  # type: ignore[dict-item]
                 "stop_reason": "max_tokens", "latency_ms": 30_000},
    "prompt": {**_ORDINARY["prompt"], "topic": "math", "cot_request": True},  # type: ignore[dict-item]
}


def ts_text(ts_ms: int, _cache: dict[int, str] = {}) -> str:  # noqa: B006 - a deliberate memo
    """RFC 3339 with milliseconds and Z, e.g. 2026-11-26T18:00:00.123Z."""
    second, ms = divmod(ts_ms, 1000)
    prefix = _cache.get(second)
    if prefix is None:
        if len(_cache) > 4096:
            _cache.clear()
        prefix = _cache[second] = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{prefix}.{ms:03d}Z"


@dataclass
class TrafficPlan:
    """What a stream of `events` events, starting at sequence number `start`, contains."""

    accounts: int  # ordinary accounts
    harvest_every: int = 100  # one event in this many is a harvester's (0: none)
    harvest_len: int = 60
    step_ms: int = 1
    run: str = "r"  # makes harvester ids unique per stream

    def is_harvest(self, seq: int) -> bool:
        return self.harvest_every > 0 and seq % self.harvest_every == 0

    def distinct_accounts(self, start: int, events: int) -> int:
        """Ordinary accounts plus harvesters that events [start, start+events) touch."""
        if self.harvest_every <= 0 or events <= 0:
            return min(self.accounts, max(events, 0))
        harvest = sum(1 for seq in range(start, start + events) if seq % self.harvest_every == 0)
        harvesters = -(-harvest // self.harvest_len)
        return min(self.accounts, events - harvest) + harvesters


@dataclass
class Encoded:
    """One event, encoded: its key, value, event time (ms) and whether a harvester sent it."""

    key: bytes
    value: bytes
    ts_ms: int
    harvest: bool


def events(plan: TrafficPlan, start: int, count: int) -> Iterator[Encoded]:
    """Events number `start` .. `start + count - 1` of the plan, encoded as JSON."""
    encode = msgspec.json.Encoder().encode
    accounts = [f"key_{i:07d}" for i in range(min(plan.accounts, count + 1))]
    tenants = [f"org_{i % 997:03d}" for i in range(len(accounts))]
    n_accounts = len(accounts)
    ordinary, harvest = dict(_ORDINARY), dict(_HARVEST)
    every, length = plan.harvest_every, plan.harvest_len
    ordinary_seq = 0
    for seq in range(start, start + count):
        ts_ms = T0_MS + seq * plan.step_ms
        if every and seq % every == 0:
            hseq = (seq - start) // every  # harvesters start afresh in each stream
            ev = harvest
            harvester = hseq // length
            ev["tenant_id"] = f"org_h{harvester % 997:03d}"
            ev["account_id"] = f"hv_{plan.run}_{harvester:06d}"
            is_h = True
        else:
            k = ordinary_seq % n_accounts
            ordinary_seq += 1
            ev = ordinary
            ev["tenant_id"] = tenants[k]
            ev["account_id"] = accounts[k]
            is_h = False
        ev["event_id"] = f"e{plan.run}{seq}"
        ev["ts"] = ts_text(ts_ms)
        yield Encoded(ev["account_id"].encode(), encode(ev), ts_ms, is_h)


def producer(bootstrap: str, linger_ms: float = 50, **extra: object) -> Producer:
    conf: dict[str, object] = {
        "bootstrap.servers": bootstrap, "linger.ms": linger_ms, "compression.type": "lz4",
        "message.max.bytes": 17 * 1024 * 1024, "batch.size": 1_000_000,
        "queue.buffering.max.messages": 1_000_000, "queue.buffering.max.kbytes": 1_048_576,
    }
    conf.update(extra)
    return Producer(conf)


def _send(p: Producer, topic: str, key: bytes | None, value: bytes,
          on_delivery: Callable[..., None] | None = None) -> None:
    while True:
        try:
            p.produce(topic, value=value, key=key, on_delivery=on_delivery)
            return
        except BufferError:
            p.poll(0.05)


@dataclass
class ProduceStats:
    events: int = 0
    records: int = 0
    bytes: int = 0
    seconds: float = 0.0
    failed: int = 0
    sent_at: dict[int, float] = field(default_factory=dict)  # harvest event ts_ms -> wall time


def preproduce(bootstrap: str, topic: str, plan: TrafficPlan, start: int, count: int,
               batch: int) -> ProduceStats:
    """Send `count` events as fast as possible, `batch` per record (1: single events keyed
    by account; more: JSON arrays, unkeyed, as a gateway flush)."""
    stats = ProduceStats()
    p = producer(bootstrap)

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            stats.failed += 1

    began = time.monotonic()
    pending: list[bytes] = []
    for ev in events(plan, start, count):
        stats.events += 1
        if batch <= 1:
            _send(p, topic, ev.key, ev.value, delivered)
            stats.records += 1
            stats.bytes += len(ev.value)
        else:
            pending.append(ev.value)
            if len(pending) >= batch:
                value = b"[" + b",".join(pending) + b"]"
                _send(p, topic, None, value, delivered)
                stats.records += 1
                stats.bytes += len(value)
                pending = []
        if stats.events % 1000 == 0:
            p.poll(0)
    if pending:
        value = b"[" + b",".join(pending) + b"]"
        _send(p, topic, None, value, delivered)
        stats.records += 1
        stats.bytes += len(value)
    p.flush(120)
    stats.seconds = time.monotonic() - began
    return stats


def paced(bootstrap: str, topic: str, encoded: list[Encoded], rate: float, batch: int = 1,
          linger_ms: float = 5) -> ProduceStats:
    """Send `encoded` at `rate` events/s (wall clock); record each harvester event's send
    time (wall clock, `time.time()`) under its `ts` in milliseconds.

    With `batch` > 1 events are grouped into JSON arrays of `batch` (a gateway flushing
    every batch/rate seconds); a harvester event's send time is still its own, so the
    latency includes the time it waited in the gateway's batch.

    The load generator shares the worker's two cores, so it spends as little of them as
    it can. The caller encodes the events (`events`) before the clock starts: encoding
    them while sending took about a fifth of a core at 38,000 events/s. The producer
    waits `linger_ms` = 5 ms for more records to a partition, librdkafka's default (and
    the Java client's since Kafka 4.0): at 2 ms, single records at 38,000 events/s kept
    the broker at 27-30 % of a core, against 15-17 % at 5 ms. Either wait counts in the
    latency, as the send time is taken before the record is handed to the producer."""
    stats = ProduceStats()
    p = producer(bootstrap, linger_ms=linger_ms)
    began = time.monotonic()
    tick = max(1, int(rate / 1000))  # check the clock about every millisecond of traffic
    pending: list[bytes] = []
    sent_at = stats.sent_at
    for n, ev in enumerate(encoded):
        if n % tick == 0:
            due = began + n / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            p.poll(0)
        if batch <= 1:
            if ev.harvest:
                sent_at[ev.ts_ms] = time.time()
            _send(p, topic, ev.key, ev.value)
            stats.records += 1
        else:
            pending.append(ev.value)
            if ev.harvest:
                sent_at[ev.ts_ms] = time.time()
            if len(pending) >= batch:
                _send(p, topic, None, b"[" + b",".join(pending) + b"]")
                stats.records += 1
                pending = []
        stats.events += 1
    if pending:
        _send(p, topic, None, b"[" + b",".join(pending) + b"]")
    p.flush(60)
    stats.seconds = time.monotonic() - began
    return stats

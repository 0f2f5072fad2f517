"""End-to-end throughput, latency and memory of distillwatch workers on the real broker.

Each scenario gets its own topics, consumer group and state directory. It pre-produces
N events to the input topic (single-event records keyed by account, or JSON arrays of
`--batch` events), starts `python -m streams worker` (or the naive reference,
`python -m bench.naive_app worker`), and polls the worker's `/health/` every 0.1 s:

- **events/s**: N / (time from the first record consumed to `events_detected` == N with
  `clickhouse_pending` == 0, i.e. input consumed, alerts sent, aggregates written);
  `steady ev/s` is the slope between 10 % and 90 % of N;
- **CPU s/M**: user + system CPU seconds of the worker process (all threads, from /proc)
  over that interval, per million events;
- **peak RSS** (VmHWM), **B/acct**: (RSS after the drain - RSS when the worker first
  answered) / `accounts_tracked` (held live or packed); **idle B/acct**: the same with
  RSS taken once every account the drain changed has its snapshot written, and
  `IDLE_SETTLE_S` after that (freed heap returned: what holding idle accounts costs). In
  the scaling runs one more call first moves event time on by `IDLE_CLOCK_S`, so every
  account of the load is idle and held packed, as most of a fleet is. The scaling table
  also gives the marginal bytes per account against the 1-account run, and each worker's
  /memory/ page at that point (heap, libraries, Python blocks, RocksDB);
- **CH rows/s**: ClickHouse rows written (all tables) per second of the drain;
- **p50/p99 ms** (`--latency-s` > 0): after the drain, a paced stream at half the measured
  rate, with a harvester (an account sending 60 reasoning-trace requests, which alerts at
  its 50th) every `harvest_every` events; latency is from the wall-clock send time of
  the event whose `ts` equals an account alert's `event_time` to the first such alert's
  arrival at a consumer of the alert topic. Campaign alerts are not matched: the linking
  stages raise them on their own event-time cadence, and one whose `event_time` equals a
  harvester event's `ts` is not that event's detection. Batched runs send the paced
  stream as a gateway flushing every 100 ms, so their latency includes the gateway's
  wait. The notes give who used the two cores meanwhile: the worker, the broker, this
  bench's load generator and alert listener, and the machine's idle share.

Scenarios: distillwatch and the naive reference with single-event and batched records
(K = `--accounts-main` accounts); distillwatch batched with 1, 10^4, 10^5 and 10^6
accounts (N = max(events, K)); two distillwatch workers in one consumer group (started
and settled before the events are produced, so they read while the bench produces: their
events/s and CPU count from the first send, and include the bench's producer on the same
cores), with the
check that every account is counted on exactly one worker (`accounts_tracked` summed
against distinct accounts, and each worker's ClickHouse `account_minute` queried after
stopping for accounts present on both).

Before the scenarios, up to `--warm-up` rounds (default 4) of the single and batched
scenarios run unmeasured, until one leaves the broker's JIT compiler under 5 % of a core:
a freshly started broker compiles its hot paths on the cores the worker uses, and a
deployed one is warm. The notes give what each round found, and the latency notes the
share of the broker's CPU its compiler took while the paced stream ran.

With `--repeat R`, the single and batched distillwatch scenarios (the throughput targets
of issue 6) run R times each, the runs after the first without the latency phase, and the
bench sums each one up against its target: the lowest, median and highest events/s and
the runs that met it. One run says little on a machine whose speed drifts by a third.

    python -m bench.throughput                 # full run (15 min at 2k events/s, mostly 10^6)
    python -m bench.throughput --only batch --events 1000000 --latency-s 0 --repeat 5
    python -m bench.throughput --quick         # about 2-3 minutes
    python -m bench.throughput --only single,batch --events 300000 --py-spy .data/prof

Needs KAFKA_BOOTSTRAP_SERVERS (default 127.0.0.1:9092). Topics are deleted afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition  # noqa: E402

from bench._traffic import TrafficPlan, paced, preproduce  # noqa: E402
from bench._traffic import events as encode_events  # noqa: E402
from bench._worker import (  # noqa: E402
    Worker,
    cpu_seconds,
    deployment_env,
    memory,
    start_worker,
)
from bench.sampler import find_process, jit_cpu, machine_jiffies, process_cpu  # noqa: E402
from streams.kafka import admin_client, ensure_topics, topic_specs  # noqa: E402
from streams.settings import Settings  # noqa: E402

MODULES = {"distillwatch": "streams", "naive": "bench.naive_app",
           "prototype": "bench._prototype_app", "tuned": "bench._tuned_worker"}
STALL_S = 90.0
SPILL_SPAN_MS = 10 * 3600 * 1000  # event time a spill scenario's traffic spans
SPILL_IDLE_S = 3600  # DISTILLWATCH_STATE_IDLE_S of the spill scenarios
# After the last account's snapshot is written: two state checkpoints (every 5 s, each
# trims the heap) and a margin; then RSS is what holding idle accounts costs.
IDLE_SETTLE_S = 12.0
# Event time a scaling run moves on by after its load (one more call): past the worker's
# pack delay and the last cohort epoch's scoring, short of DISTILLWATCH_STATE_IDLE_S, so
# every account of the load is idle and held packed when idle memory is read.
IDLE_CLOCK_S = 1200.0
# Events/s per worker the single and batched scenarios are held to (issue 6).
TARGETS = {"dw_single": 30_000.0, "dw_batch": 100_000.0}
# The broker's JVM compiles its hot paths during its first minutes of traffic, on the
# cores the worker uses. Started afresh here, its compiler threads took 11 CPU s during
# the first single-record run (300,000 events, then 10 s paced at 46,565 events/s), 3.5
# during the second and about 1 during each after; while the paced stream ran the broker
# used 81, 45, then 27-28 % of a core, and p99 was 1,125 and 435 ms, then at most 716
# (bench/PROFILE.md, "Twenty-seventh pass"). A deployed broker is warm: the scenarios are
# measured after rounds of the single and batched scenarios, unmeasured, until a round
# leaves the compiler under WARM_UP_JIT_SHARE (or `--warm-up` rounds have run).
WARM_UP_EVENTS = 200_000
WARM_UP_LATENCY_S = 5.0
WARM_UP_JIT_SHARE = 5.0  # % of one core over a round


@dataclass
class Result:
    name: str
    app: str
    batch: int
    accounts: int
    events: int
    workers: int = 1
    produce_s: float = 0.0
    startup_s: float = 0.0  # first answer on /health/ to first record consumed
    drain_s: float = 0.0
    # From the first record consumed: the first event detected, 99 % and all of them
    # detected (what the drain spends before and after the flow, PROFILE "Seventeenth pass").
    first_detected_s: float = 0.0
    most_detected_s: float = 0.0
    all_detected_s: float = 0.0
    events_per_s: float = 0.0
    steady_per_s: float = 0.0
    cpu_s_per_m: float = 0.0
    cpu_util: float = 0.0  # CPU seconds per wall second during the drain
    peak_rss: int = 0
    rss_ready: int = 0
    rss_end: int = 0
    rss_idle: int = 0  # after IDLE_SETTLE_S without input: the idle accounts' memory
    accounts_tracked: int = 0  # held in memory (live or packed) at the end of the drain
    accounts_live_idle: int = 0  # at the idle reading: held as live objects
    accounts_packed_idle: int = 0  # ... and held packed
    distinct_accounts: int = 0
    ch_rows: int = 0
    ch_rows_per_s: float = 0.0
    alerts: int = 0
    latency_rate: float = 0.0
    latency_sent: int = 0
    latency_matched: int = 0
    # Who used the machine's cores while the paced stream ran, in % of one core: the
    # workers, the broker (when on this machine), this bench (the load generator and the
    # alert listener), and the machine's idle share of all its cores.
    latency_cpu: dict[str, float] = field(default_factory=dict)
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    per_worker: list[dict[str, Any]] = field(default_factory=list)
    memory_idle: list[dict[str, Any]] = field(default_factory=list)  # /memory/ when idle
    rss_by_decile: list[int] = field(default_factory=list)  # RSS at 10 %, 20 %, ... detected
    overlap_accounts: int | None = None
    accounts_evicted: int = 0  # idle accounts whose state left memory for the store
    accounts_packed: int = 0  # times an idle account was packed during the drain
    accounts_unpacked: int = 0  # ... and a packed one unpacked at its next call
    state_written: int = 0  # account snapshots written to the store and changelog
    records_by_python_edge: int = 0  # input records the Rust reader left to the Python edge
    error: str | None = None

    @property
    def bytes_per_account(self) -> float:
        return (self.rss_end - self.rss_ready) / max(self.accounts_tracked, 1)

    @property
    def accounts_idle(self) -> int:
        return self.accounts_live_idle + self.accounts_packed_idle or self.accounts_tracked

    @property
    def idle_bytes_per_account(self) -> float:
        return (self.rss_idle - self.rss_ready) / max(self.accounts_idle, 1)


# -- one scenario ------------------------------------------------------------------------


class AlertListener(threading.Thread):
    """Reads the alert topic from the beginning; records (event_time ms, arrival wall time,
    alert kind) in arrival order."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": f"bench-alerts-{os.getpid()}-{topic}",
            "enable.auto.commit": False, "fetch.wait.max.ms": 5,
            "fetch.min.bytes": 1,
        })
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING)
                              for p in range(partitions)])
        self.arrivals: list[tuple[int, float, str]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            message = self.consumer.poll(0.05)
            if message is None or message.error():
                continue
            arrived = time.time()
            try:
                alert = json.loads(message.value())
                ms = round(datetime.fromisoformat(alert["event_time"]).timestamp() * 1000)
                kind = str(alert["kind"])
            except (ValueError, KeyError, TypeError):
                continue
            self.arrivals.append((ms, arrived, kind))
        self.consumer.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


class Profiler:
    """py-spy recording a worker in collapsed-stack format until stopped."""

    def __init__(self, pid: int, path: Path, native: bool = False) -> None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        path.parent.mkdir(parents=True, exist_ok=True)
        args = [exe, "record", "--pid", str(pid), "--format", "raw", "-o", str(path),
                "--rate", "200", "--threads"]
        # py-spy refuses `--native` with `--nonblocking`: native stacks are read with
        # the worker paused at each sample, which slows it (the shares stay readable).
        args.append("--native" if native else "--nonblocking")
        self.path = path
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


# `--trace`: print the workers' progress four times a second while they drain.
TRACE = False

# Health counters summed over the workers as they are.
_COUNTERS = ("records_in", "events_detected", "accounts_tracked", "alerts", "accounts_evicted",
             "state_written", "accounts_packed", "accounts_unpacked", "records_by_python_edge")


def _health_total(workers: list[Worker]) -> dict[str, Any] | None:
    total: dict[str, Any] = dict.fromkeys(
        (*_COUNTERS, "clickhouse_pending", "ch_rows", "partitions_held"), 0)
    for w in workers:
        h = w.health()
        if h is None:
            if not w.alive():
                raise RuntimeError(f"{w.name} died:\n{w.log()[-3000:]}")
            return None
        for name in _COUNTERS:
            total[name] += h.get(name, 0)
        total["clickhouse_pending"] += h.get("clickhouse_pending") or 0
        total["ch_rows"] += sum((h.get("clickhouse_rows_written") or {}).values())
        total["partitions_held"] += len(h.get("partitions") or ())
    return total


# `Result` fields set when this share of the events is detected.
DETECTED_MARKS = (("first_detected_s", 0.0), ("most_detected_s", 0.99), ("all_detected_s", 1.0))


def _wait_for(workers: list[Worker], target: int, result: Result | None = None,
              on_first: Any = None) -> tuple[float, float, dict[str, Any]]:
    """Poll until `target` events are detected and ClickHouse has nothing pending.

    Returns (time of the first record consumed, time done, last totals); fills the
    steady rate into `result`."""
    first: float | None = None
    marks: dict[str, float] = {}
    last_progress, last_count = time.monotonic(), -1
    traced = -math.inf
    while True:
        now = time.monotonic()
        h = _health_total(workers)
        if h is None:
            time.sleep(0.1)
            continue
        if first is None and (h["records_in"] > 0 or h["events_detected"] > 0):
            first = now
            if on_first:
                on_first()
        n = h["events_detected"]
        if TRACE and first is not None and now - traced >= 0.25:
            traced = now
            print(f"    {now - first:6.1f}s  records in {h['records_in']:>9,}  detected "
                  f"{n:>9,}  ClickHouse pending {h['clickhouse_pending']:>7,}  by-account "
                  f"partitions held {h['partitions_held']}", flush=True)
        deciles = result.rss_by_decile if result is not None else []
        while result is not None and len(deciles) < 10 and n >= (len(deciles) + 1) * target / 10:
            deciles.append(sum(memory(w.pid)[0] for w in workers))
        if first is not None and result is not None and n > 0:
            for mark, share in DETECTED_MARKS:
                if mark not in marks and n >= share * target:
                    marks[mark] = now
                    setattr(result, mark, now - first)
        if "p10" not in marks and n >= 0.1 * target:
            marks["p10"] = now
        if "p90" not in marks and n >= 0.9 * target:
            marks["p90"] = now
            if result is not None and "p10" in marks and marks["p90"] > marks["p10"]:
                result.steady_per_s = 0.8 * target / (marks["p90"] - marks["p10"])
        if n >= target and h["clickhouse_pending"] == 0:
            return first or now, now, h
        if n != last_count:
            last_count, last_progress = n, now
        elif now - last_progress > STALL_S:
            raise RuntimeError(f"stalled at {n:,}/{target:,} events for {STALL_S:.0f}s")
        time.sleep(0.1)


def _wait_for_assignment(workers: list[Worker], timeout_s: float = 120.0) -> None:
    """Wait until every worker holds partitions of the by-account topic and of the input
    (two consumer groups: the input's joins once the first is settled)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        healths = [w.health() or {} for w in workers]
        if all(h.get("partitions") and h.get("input_partitions") for h in healths):
            return
        time.sleep(0.5)
    healths = [w.health() or {} for w in workers]
    raise RuntimeError("the workers' groups did not settle: " + ", ".join(
        f"{w.name}: {h.get('partitions')} (input {h.get('input_partitions')})"
        for w, h in zip(workers, healths, strict=True)))


def run_scenario(args: argparse.Namespace, name: str, app: str, batch: int, accounts: int,
                 events: int, workers: int = 1, latency_s: float = 0.0, step_ms: int = 1,
                 extra_env: dict[str, str] | None = None, idle: bool = True) -> Result:
    """One scenario's figures; with `idle` False, without its idle memory (a warm-up)."""
    result = Result(name=name, app=app, batch=batch, accounts=accounts, events=events,
                    workers=workers)
    bootstrap = args.bootstrap
    workdir = Path(tempfile.mkdtemp(prefix=f"dw-bench-{name}-", dir=args.workdir))
    env = {**deployment_env(bootstrap, workdir, name.replace("_", "-")), **(extra_env or {})}
    settings = Settings.model_validate(env)
    ensure_topics(settings)
    plan = TrafficPlan(accounts=accounts, harvest_every=args.harvest_every, run=name[:3],
                       step_ms=step_ms)
    started: list[Worker] = []
    profiler: Profiler | None = None
    try:
        if workers > 1:
            # Several workers: let the group settle before any input exists, so that no
            # partition (and no account's state) moves during the measured drain.
            for i in range(workers):
                started.append(start_worker(f"{app}-{i}", MODULES[app], env, workdir))
            for w in started:
                w.wait_ready()
            _wait_for_assignment(started)
            # They consume while the events are produced: their drain and CPU count from
            # the first send (from the first poll after the produce, as for one worker
            # started afterwards, they left out what was read during it).
            concurrent = (time.monotonic(), [cpu_seconds(w.pid) for w in started])
        produced = preproduce(bootstrap, settings.topic_api_calls, plan, 0, events, batch)
        if produced.failed:
            raise RuntimeError(f"{produced.failed} records failed to produce")
        result.produce_s = produced.seconds
        result.distinct_accounts = plan.distinct_accounts(0, events)
        if workers == 1:
            started.append(start_worker(f"{app}-0", MODULES[app], env, workdir))
        ready_at = max(time.monotonic() for w in started if w.wait_ready())
        result.rss_ready = sum(memory(w.pid)[0] for w in started)
        cpu0: list[float] = []

        def on_first() -> None:
            nonlocal profiler
            cpu0.extend(cpu_seconds(w.pid) for w in started)
            if args.py_spy and app != "naive" and workers == 1:
                profiler = Profiler(started[0].pid, Path(args.py_spy) / f"{name}.txt",
                                    native=args.py_spy_native)

        first, done, h = _wait_for(started, events, result, on_first)
        if profiler is not None:
            profiler.stop()
        cpu1 = [cpu_seconds(w.pid) for w in started]
        if workers > 1:
            first, cpu0[:] = concurrent
            result.steady_per_s = 0.0  # its deciles passed mostly during the produce
        result.startup_s = max(first - ready_at, 0.0)
        result.drain_s = max(done - first, 0.1)  # 0.1 s: the polling period
        result.events_per_s = events / result.drain_s
        result.cpu_s_per_m = (sum(cpu1) - sum(cpu0)) / events * 1e6
        result.cpu_util = (sum(cpu1) - sum(cpu0)) / result.drain_s
        mems = [memory(w.pid) for w in started]
        result.rss_end = sum(m[0] for m in mems)
        result.peak_rss = max(m[1] for m in mems)
        result.accounts_tracked = h["accounts_tracked"]
        result.ch_rows = h["ch_rows"]
        result.ch_rows_per_s = h["ch_rows"] / result.drain_s
        result.alerts = h["alerts"]
        result.accounts_evicted = h["accounts_evicted"]
        result.accounts_packed = h["accounts_packed"]
        result.accounts_unpacked = h["accounts_unpacked"]
        result.state_written = h["state_written"]
        result.records_by_python_edge = h["records_by_python_edge"]
        if idle:
            _measure_idle(result, bootstrap, settings, plan, started, latency_s)
        if workers > 1:
            for w in started:
                wh = w.health() or {}
                result.per_worker.append({k: wh.get(k) for k in (
                    "events_detected", "accounts_tracked", "records_in", "partitions")})
        if latency_s > 0:
            _measure_latency(args, result, settings, plan, started, events, batch, latency_s)
    except Exception as exc:  # one failed scenario must not lose the others' figures
        result.error = f"{type(exc).__name__}: {exc}"[:2000]
    finally:
        if profiler is not None:
            profiler.stop()
        for w in started:
            w.stop()
        if workers > 1 and result.error is None and app == "distillwatch":
            try:
                result.overlap_accounts = _overlap(started)
            except Exception as exc:
                result.error = f"overlap query failed: {exc}"[:2000]
        _delete_topics(settings)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return result


def _measure_idle(result: Result, bootstrap: str, settings: Settings, plan: TrafficPlan,
                  started: list[Worker], latency_s: float) -> None:
    """RSS and state once the drain's accounts are idle: once the worker has checkpointed
    what the drain changed (and handed freed heap back), RSS is what holding them costs."""
    if result.app == "distillwatch":
        _wait_checkpointed(started)
        if latency_s == 0 and result.workers == 1:
            _advance_event_time(bootstrap, settings, plan, result.events, started)
    time.sleep(IDLE_SETTLE_S)
    result.rss_idle = sum(memory(w.pid)[0] for w in started)
    if result.app == "distillwatch":
        result.memory_idle = [w.memory_report() or {} for w in started]
        for w in started:
            wh = w.health() or {}
            result.accounts_live_idle += wh.get("accounts_live", 0)
            result.accounts_packed_idle += wh.get("accounts_held_packed", 0)


@dataclass
class CpuMark:
    """CPU seconds so far of the workers, the broker and this process, with the machine's
    jiffies: two marks give who used the cores in between."""

    wall: float
    workers: float
    broker: float | None
    bench: float
    machine_all: int
    machine_idle: int
    broker_jit: float | None = None  # of `broker`, its JIT compiler threads

    @classmethod
    def take(cls, worker_pids: list[int], broker: int | None) -> CpuMark:
        own = os.times()
        machine_all, machine_idle = machine_jiffies()
        return cls(time.monotonic(), sum(cpu_seconds(pid) for pid in worker_pids),
                   process_cpu(broker), own.user + own.system, machine_all, machine_idle,
                   jit_cpu(broker))

    def shares(self, later: CpuMark) -> dict[str, float]:
        """% of one core each used from this mark to `later`; `idle` is % of the machine."""
        wall = max(later.wall - self.wall, 1e-9)
        out = {"workers": 100 * (later.workers - self.workers) / wall,
               "bench": 100 * (later.bench - self.bench) / wall}
        if self.broker is not None and later.broker is not None:
            out["broker"] = 100 * (later.broker - self.broker) / wall
        if self.broker_jit is not None and later.broker_jit is not None:
            out["broker_jit"] = 100 * (later.broker_jit - self.broker_jit) / wall
        jiffies = later.machine_all - self.machine_all
        if jiffies > 0:
            out["idle"] = 100 * (later.machine_idle - self.machine_idle) / jiffies
        return out


def cpu_shares_text(shares: dict[str, float]) -> str:
    """`CpuMark.shares` in words, for the notes."""
    if not shares:
        return "CPU not measured"
    parts = []
    for key, name in (("workers", "worker"), ("broker", "broker"),
                      ("bench", "load generator and listener")):
        if key in shares:
            jit = (f" (its JIT compiler {shares['broker_jit']:.0f} %)"
                   if key == "broker" and "broker_jit" in shares else "")
            parts.append(f"{name} {shares[key]:.0f} %{jit}")
    idle = f"; machine idle {shares['idle']:.0f} %" if "idle" in shares else ""
    return f"CPU meanwhile (% of one core): {', '.join(parts)}{idle}"


def match_latencies(sent_at: dict[int, float],
                    arrivals: list[tuple[int, float, str]]) -> list[float]:
    """Milliseconds from each sent event (`ts` in ms -> wall-clock send time) to the first
    account alert whose `event_time` is that `ts`, sorted; `arrivals` are (event_time ms,
    arrival wall time, kind) in arrival order. Events no account alert names are left out."""
    first: dict[int, float] = {}
    for ms, arrived, kind in arrivals:
        if kind == "account":
            first.setdefault(ms, arrived)
    return sorted((first[ts] - at) * 1000 for ts, at in sent_at.items() if ts in first)


def _measure_latency(args: argparse.Namespace, result: Result, settings: Settings,
                     plan: TrafficPlan, workers: list[Worker], start: int, batch: int,
                     seconds: float) -> None:
    rate = args.latency_rate or max(100.0, result.events_per_s / 2)
    listener = AlertListener(args.bootstrap, settings.topic_alerts, settings.topic_partitions)
    listener.start()
    paced_plan = TrafficPlan(accounts=plan.accounts, harvest_every=args.latency_harvest_every,
                             run=f"L{plan.run}")
    # A gateway flushing every 100 ms (batched runs) or one record per event.
    paced_batch = 1 if batch <= 1 else max(1, min(batch, int(rate / 10)))
    encoded = list(encode_events(paced_plan, start, int(rate * seconds)))
    broker = find_process("kafka.Kafka", 0.5)
    before = CpuMark.take([w.pid for w in workers], broker)
    sent = paced(args.bootstrap, settings.topic_api_calls, encoded, rate, batch=paced_batch)
    _wait_for(workers, start + sent.events)
    result.latency_cpu = before.shares(CpuMark.take([w.pid for w in workers], broker))
    time.sleep(2.0)  # alerts of the last events: sent before the counters moved, in flight
    listener.stop()
    latencies = match_latencies(sent.sent_at, listener.arrivals)
    result.latency_rate = sent.events / sent.seconds
    result.latency_sent = len(sent.sent_at) // paced_plan.harvest_len  # harvesters that alert
    result.latency_matched = len(latencies)
    if latencies:
        result.p50_ms = statistics.median(latencies)
        result.p99_ms = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        result.max_ms = latencies[-1]


def _overlap(workers: list[Worker]) -> int:
    """Accounts present in the ClickHouse of more than one worker (queried after stopping)."""
    seen: list[set[str]] = []
    for w in workers:
        out = subprocess.run(
            [sys.executable, "-m", "streams", "sql", "--format", "tsv",
             "SELECT DISTINCT concat(tenant_id, ':', account_id) FROM distillwatch.account_minute"],
            env=w.env, cwd=ROOT, capture_output=True, text=True, timeout=300,
        )
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-1000:])
        seen.append(set(out.stdout.splitlines()[1:]))
    counts: dict[str, int] = {}
    for accounts in seen:
        for account in accounts:
            counts[account] = counts.get(account, 0) + 1
    return sum(1 for c in counts.values() if c > 1)


def _delete_topics(settings: Settings) -> None:
    try:
        admin = admin_client(settings)  # must outlive the futures, or the request is dropped
        futures = admin.delete_topics([s.name for s in topic_specs(settings)],
                                      operation_timeout=30)
        for future in futures.values():
            with contextlib.suppress(Exception):
                future.result(30)
    except Exception:
        pass


# -- the whole run -----------------------------------------------------------------------


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f}"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def format_table(results: list[Result]) -> str:
    head = ["scenario", "app", "records", "accounts", "events", "wk", "events/s", "steady/s",
            "CPU s/M", "CPU%", "peak RSS MiB", "B/acct", "idle B/acct", "CH rows/s", "alerts",
            "lat. rate/s", "p50 ms", "p99 ms"]
    rows = []
    for r in results:
        if r.error:
            rows.append([r.name, r.app, "", "", f"{r.events:,}", str(r.workers),
                         f"ERROR: {r.error.splitlines()[0][:80]}"] + [""] * 11)
            continue
        rows.append([
            r.name, r.app, "single" if r.batch <= 1 else f"batch {r.batch:,}",
            f"{r.accounts:,}", f"{r.events:,}", str(r.workers), f"{r.events_per_s:,.0f}",
            f"{r.steady_per_s:,.0f}" if r.steady_per_s else "-", f"{r.cpu_s_per_m:,.0f}",
            f"{100 * r.cpu_util:.0f}",
            _mib(r.peak_rss), f"{r.bytes_per_account:,.0f}", f"{r.idle_bytes_per_account:,.0f}",
            f"{r.ch_rows_per_s:,.0f}",
            f"{r.alerts:,}",
            f"{r.latency_rate:,.0f}" if r.latency_rate else "-", _ms(r.p50_ms), _ms(r.p99_ms),
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    for row in rows:
        lines.append(" | ".join(str(c).rjust(w) if i >= 3 else str(c).ljust(w)
                                for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    return "\n".join(lines)


def _advance_event_time(bootstrap: str, settings: Settings, plan: TrafficPlan, events: int,
                        workers: list[Worker]) -> None:
    """One more call, IDLE_CLOCK_S of event time after the load's last: every account of
    the load is idle now, and the worker packs it at its next sweep."""
    seq = events + int(IDLE_CLOCK_S * 1000) // plan.step_ms
    clock = TrafficPlan(accounts=1, harvest_every=0, run="clk", step_ms=plan.step_ms)
    produced = preproduce(bootstrap, settings.topic_api_calls, clock, seq, 1, 1)
    if produced.failed:
        raise RuntimeError("the event moving event time on failed to produce")
    _wait_for(workers, events + 1)
    _wait_checkpointed(workers)


def _wait_checkpointed(workers: list[Any], timeout_s: float = 300.0) -> None:
    """Wait until no worker has accounts waiting for their snapshot (at 10^6 accounts a
    drain's checkpoint takes longer than IDLE_SETTLE_S)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reports = [w.memory_report() or {} for w in workers]
        if all(r.get("accounts", {}).get("dirty", 1) == 0 for r in reports):
            return
        time.sleep(0.5)
    print(f"  workers still checkpointing after {timeout_s:.0f} s", flush=True)


def repeats(results: list[Result], scenario: str) -> list[Result]:
    """The runs of `scenario`: its first and those `--repeat` added (`<scenario>_run<i>`)."""
    return [r for r in results
            if r.name == scenario or r.name.removeprefix(scenario + "_run").isdigit()]


def target_lines(results: list[Result]) -> list[str]:
    """Each target scenario's runs against its events/s target: lowest, median and highest,
    and how many met it. A run that failed counts as not meeting it, and is named."""
    out = []
    for scenario, target in TARGETS.items():
        runs = repeats(results, scenario)
        if not runs:
            continue
        rates = sorted(r.events_per_s for r in runs if not r.error)
        met = sum(rate >= target for rate in rates)
        line = f"{scenario}: {met} of {len(runs)} runs at or above {target:,.0f} events/s"
        if rates:
            line += (f"; events/s lowest {rates[0]:,.0f}, median {statistics.median(rates):,.0f},"
                     f" highest {rates[-1]:,.0f}")
        failed = [r.name for r in runs if r.error]
        if failed:
            line += f"; failed: {', '.join(failed)}"
        out.append(line)
    return out


def notes(results: list[Result]) -> list[str]:
    out = []
    by = {r.name: r for r in results if not r.error}
    for kind in ("single", "batch"):
        d = by.get(f"dw_{kind}")
        for other in ("naive", "tuned", "proto"):
            n = by.get(f"{other}_{kind}")
            if d and n:
                out.append(f"{kind}: distillwatch / {other} = "
                           f"{d.events_per_s / n.events_per_s:.2f}x events/s, "
                           f"{d.cpu_s_per_m / n.cpu_s_per_m:.2f}x CPU per event")
    for r in results:
        if r.latency_rate and not r.error:
            out.append(f"{r.name}: latency at {r.latency_rate:,.0f} ev/s: {r.latency_matched}"
                       f" alerts matched to their triggering event ({r.latency_sent} harvesters);"
                       f" max {_ms(r.max_ms)} ms; {cpu_shares_text(r.latency_cpu)}")
    base = by.get("scale_1")
    for r in results:
        if r.name.startswith("scale_") and base and r is not base and not r.error:
            marginal = (r.rss_end - base.rss_end) / max(r.accounts_tracked - 1, 1)
            idle = (r.rss_idle - base.rss_idle) / max(r.accounts_idle - base.accounts_idle, 1)
            out.append(f"{r.name}: {r.accounts_tracked:,} accounts tracked, RSS {_mib(r.rss_end)}"
                       f" MiB after the drain, marginal {marginal:,.0f} B per account vs 1 account;"
                       f" {IDLE_CLOCK_S:.0f} s of event time later {r.accounts_live_idle:,} live"
                       f" and {r.accounts_packed_idle:,} packed, RSS {_mib(r.rss_idle)} MiB:"
                       f" {r.idle_bytes_per_account:,.0f} B per account above the worker's start,"
                       f" marginal {idle:,.0f} B per account vs 1 account")
    for r in results:
        for report in r.memory_idle if not r.error else []:
            proc, rocks = report.get("process", {}), report.get("rocksdb", {})
            out.append(f"{r.name}: idle memory: anonymous {_mib(proc.get('anonymous', 0))} MiB,"
                       f" files {_mib(proc.get('file', 0))} MiB, Python blocks"
                       f" {proc.get('python_blocks', 0):,}; accounts in memory"
                       f" {report.get('accounts')}; in the drain {r.accounts_packed:,} packed,"
                       f" {r.accounts_unpacked:,} unpacked; input records read by the Python"
                       f" edge {r.records_by_python_edge:,}; linking {report.get('linking')};"
                       " RocksDB "
                       + ", ".join(f"{k} {_mib(v)} MiB" for k, v in rocks.items()))
    for r in results:
        if r.name.startswith("spill_") and not r.error:
            held, grown = max(r.accounts_tracked, 1), r.rss_end - r.rss_ready
            out.append(f"{r.name}: {r.distinct_accounts:,} accounts over 10 h of event time, "
                       f"{r.accounts_tracked:,} in memory at the end, {r.accounts_evicted:,} "
                       f"evicted to the store ({r.state_written:,} snapshots written); RSS "
                       f"{_mib(r.rss_end)} MiB, grown {_mib(grown)} MiB since start: "
                       f"{grown / held:,.0f} B per account in memory, "
                       f"{grown / r.distinct_accounts:,.0f} B per account seen; RSS at 10 %,"
                       " 20 %, ... of the events: "
                       + " ".join(_mib(b) for b in r.rss_by_decile) + " MiB")
    for r in results:
        if r.workers > 1 and not r.error:
            split = ", ".join(f"w{i}: {w['events_detected']:,} events, {w['accounts_tracked']:,}"
                              f" accounts, partitions {w.get('partitions')}"
                              for i, w in enumerate(r.per_worker))
            out.append(f"{r.name}: {split}; accounts_tracked sum {r.accounts_tracked:,} vs "
                       f"{r.distinct_accounts:,} distinct; accounts in both workers' ClickHouse:"
                       f" {r.overlap_accounts}")
    for r in results:
        if not r.error:
            out.append(f"{r.name}: produce {r.produce_s:.1f}s, worker start to first record "
                       f"{r.startup_s:.1f}s, drain {r.drain_s:.1f}s (first event detected at "
                       f"{r.first_detected_s:.1f}s, 99 % at {r.most_detected_s:.1f}s, all at "
                       f"{r.all_detected_s:.1f}s)")
    return out


def warm_up(args: argparse.Namespace, rounds: int) -> list[str]:
    """Run up to `rounds` rounds of the single and batched scenarios, unmeasured, until the
    broker's JIT compiler used under WARM_UP_JIT_SHARE % of a core over a round; returns
    what each round found, for the notes. A broker not on this machine gets one round."""
    broker = find_process("kafka.Kafka", 0.5)
    found: list[str] = []
    for i in range(1, rounds + 1):
        began, jit_before = time.monotonic(), jit_cpu(broker)
        errors = [r.error for r in (
            run_scenario(args, f"warm{i}_{kind}", "distillwatch", batch, args.accounts_main,
                         WARM_UP_EVENTS, latency_s=WARM_UP_LATENCY_S, idle=False)
            for kind, batch in (("single", 1), ("batch", args.batch))) if r.error]
        jit_after, seconds = jit_cpu(broker), time.monotonic() - began
        share = (None if jit_before is None or jit_after is None
                 else 100 * (jit_after - jit_before) / seconds)
        found.append(f"round {i} ({seconds:.0f}s): " + (
            "the broker's JIT not measured (not a JVM on this machine)" if share is None
            else f"the broker's JIT compiler used {share:.0f} % of a core"))
        if errors:
            found[-1] += f"; failed: {'; '.join(str(e) for e in errors)}"
        print(f"  warm-up {found[-1]}", file=sys.stderr)
        if share is None or share < WARM_UP_JIT_SHARE:
            break
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller run (about 2-3 minutes)")
    parser.add_argument("--events", type=int,
                        help="events per scenario (full 100,000; quick 30,000)")
    parser.add_argument("--accounts", help="account counts of the scaling runs, comma separated"
                        " (full 1,10000,100000,1000000; quick 1,10000)")
    parser.add_argument("--accounts-main", type=int, default=10_000,
                        help="accounts of the main scenarios")
    parser.add_argument("--batch", type=int, default=1000, help="events per batched record")
    parser.add_argument("--latency-s", type=float,
                        help="seconds of paced traffic (full 15, quick 6)")
    parser.add_argument("--harvest-every", type=int, default=100,
                        help="one event in this many is a harvester's")
    parser.add_argument("--latency-rate", type=float, default=0.0,
                        help="events/s of the paced stream (default: half the measured rate)")
    parser.add_argument("--latency-harvest-every", type=int, default=10,
                        help="in the paced stream: one event in this many is a harvester's")
    parser.add_argument("--only", help="comma list of: single,batch,naive,scale,two,spill,"
                        "tuned,proto (default: all but tuned and proto)")
    parser.add_argument("--py-spy", metavar="DIR",
                        help="record each one-worker distillwatch drain with py-spy (raw) into DIR")
    parser.add_argument("--py-spy-native", action="store_true")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--keep", action="store_true", help="keep state dirs and worker logs")
    parser.add_argument("--trace", action="store_true",
                        help="print records read and events detected four times a second")
    parser.add_argument("--workdir", default=None, help="where state dirs go (default: tmp)")
    parser.add_argument("--warm-up", type=int, default=4, metavar="ROUNDS",
                        help="unmeasured rounds of the single and batched scenarios first, at"
                        f" most (stopping once the broker's JIT compiler used under"
                        f" {WARM_UP_JIT_SHARE:.0f} %% of a core over one); 0: none")
    parser.add_argument("--repeat", type=int, default=1, metavar="R",
                        help="runs of each of the single and batched distillwatch scenarios,"
                        " summed up against their targets (after the first, without latency)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    if args.warm_up < 0:
        parser.error(f"--warm-up must be 0 or more, got {args.warm_up}")
    args.bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    global TRACE
    TRACE = args.trace
    events = args.events or (30_000 if args.quick else 100_000)
    latency_s = args.latency_s if args.latency_s is not None else (6.0 if args.quick else 15.0)
    scale = [int(a) for a in (args.accounts or ("1,10000" if args.quick else
                                                 "1,10000,100000,1000000")).split(",")]
    only = set((args.only or "single,batch,naive,scale,two,spill").split(","))
    k = args.accounts_main
    plan: list[tuple[str, str, int, int, int, int, float]] = []
    if "single" in only:
        plan.append(("dw_single", "distillwatch", 1, k, events, 1, latency_s))
    if "batch" in only:
        plan.append(("dw_batch", "distillwatch", args.batch, k, events, 1, latency_s))
    if "naive" in only:
        plan.append(("naive_single", "naive", 1, k, events, 1, latency_s))
        plan.append(("naive_batch", "naive", args.batch, k, events, 1, latency_s))
    if "tuned" in only:  # distillwatch with Faust/aiokafka settings tuned (bench/_tuned_worker)
        plan.append(("tuned_single", "tuned", 1, k, events, 1, latency_s))
        plan.append(("tuned_batch", "tuned", args.batch, k, events, 1, latency_s))
    if "proto" in only:  # the batched prototype of PROFILE.md's recommendations
        plan.append(("proto_single", "prototype", 1, k, events, 1, latency_s))
        plan.append(("proto_batch", "prototype", args.batch, k, events, 1, latency_s))
    if "scale" in only:
        for accounts in scale:
            if accounts == k and "batch" in only:
                continue  # the main batched run is this point
            plan.append((f"scale_{accounts}", "distillwatch", args.batch, accounts,
                         max(events, accounts), 1, 0.0))
    if "two" in only:
        plan.append(("dw_two_workers", "distillwatch", 1, k, events, 2, 0.0))
    for run in range(2, args.repeat + 1):
        plan += [(f"{name}_run{run}", app, batch, accounts, n, workers, 0.0)
                 for name, app, batch, accounts, n, workers, _ in list(plan)
                 if name in TARGETS]
    spill = [max(scale)] if "spill" in only and max(scale) > 1 else []
    for accounts in spill:
        # Accounts keep arriving over 10 hours of event time; each is idle after its call.
        plan.append((f"spill_{accounts}", "distillwatch", args.batch, accounts,
                     max(events, accounts), 1, 0.0))

    print(f"broker {args.bootstrap}; {len(plan)} scenarios; {os.cpu_count()} CPUs",
          file=sys.stderr)
    began = time.monotonic()
    warmed = warm_up(args, args.warm_up) if args.warm_up else []
    results: list[Result] = []
    for name, app, batch, accounts, n, workers, lat in plan:
        t = time.monotonic()
        if name.startswith("spill_"):
            r = run_scenario(args, name, app, batch, accounts, n, workers, lat,
                             step_ms=max(1, SPILL_SPAN_MS // n),
                             extra_env={"DISTILLWATCH_STATE_IDLE_S": str(SPILL_IDLE_S)})
        else:
            r = run_scenario(args, name, app, batch, accounts, n, workers, lat)
        if name == "dw_batch" and "scale" in only and k in scale:
            r2 = Result(**{**asdict(r), "name": f"scale_{k}"})
            results.append(r)
            results.append(r2)
        else:
            results.append(r)
        print(f"  {name}: {'ERROR ' + r.error if r.error else f'{r.events_per_s:,.0f} ev/s'}"
              f" ({time.monotonic() - t:.0f}s)", file=sys.stderr)
    results.sort(key=lambda r: (r.name.startswith("scale_"), r.name.startswith("dw_two"),
                                int(r.name[6:]) if r.name.startswith("scale_") else 0))
    print(format_table(results))
    print()
    for line in notes(results):
        print(f"- {line}")
    for line in target_lines(results):
        print(f"- target {line}")
    for line in warmed:
        print(f"- broker warm-up before the scenarios, {line}")
    print(f"\n({time.monotonic() - began:.0f}s; CPU s/M = CPU seconds per million events; "
          "B/acct = (RSS after - RSS at start) / accounts tracked)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

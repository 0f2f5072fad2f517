"""Where a running worker's wall time goes: its threads' CPU, the broker's and the
machine's idle time, with the worker's progress, every quarter of a second.

    python -m bench.sampler [--interval 0.25] [--quiet]

Start it beside `python -m bench.throughput` (or any `python -m streams worker`): it
waits for the first worker process, follows it until it exits, and prints one line per
interval: seconds since it found the worker, the main thread's and the whole worker's CPU
(% of one core), the three busiest other threads, the machine's idle share, the broker's
CPU (the `kafka.Kafka` process on this machine, if any) and the worker's input records
read / events detected from its `/health/` (`x` when the worker did not answer within
0.2 s: its event loop was busy).

At the end it sums up the worker's drain (from the first event detected to the last one
before two seconds without any):
- **main thread under 30 %**: the seconds in which the event loop's thread used less
  than 30 % of a core, that is, the worker waited instead of working (a fetch held by
  the broker: bench/PROFILE.md, "Twentieth pass");
- the mean of each column over the drain, and over the `--after` events that follow
  a count of `--after-detected` (the paced phase of a latency run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench._worker import CLK_TCK, cpu_seconds

MAIN_WAITING = 30.0  # % of a core under which the main thread counts as waiting
DRAIN_PAUSE_S = 2.0  # seconds without an event detected that end a drain


@dataclass
class Sample:
    t: float  # seconds since the worker was found
    main: float  # % of a core
    worker: float
    idle: float  # % of the machine
    broker: float | None
    records_in: int | None  # None: the worker did not answer
    detected: int | None


def find_process(pattern: str, timeout_s: float) -> int | None:
    """The oldest process on this machine whose command line matches `pattern` (pgrep -f),
    waiting up to `timeout_s` for one; None if there is none."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
        pids = [int(p) for p in out.split() if int(p) != os.getpid()]
        if pids:
            return min(pids)
        time.sleep(0.1)
    return None


def _threads(pid: int) -> dict[int, tuple[str, float]]:
    """Each thread's name and CPU seconds so far."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return out


def process_cpu(pid: int | None) -> float | None:
    """CPU seconds so far of process `pid`, or None without one (or once it is gone)."""
    if pid is None:
        return None
    try:
        return cpu_seconds(pid)
    except OSError:  # gone
        return None


# What a HotSpot JVM names its just-in-time compiler threads ("C2 CompilerThread0",
# cut to 15 characters by the kernel).
JIT_THREAD_PREFIXES = ("C1 CompilerThre", "C2 CompilerThre")


def jit_cpu(pid: int | None) -> float | None:
    """CPU seconds so far of the JIT compiler threads of JVM `pid` (the broker), or None
    without one (or once it is gone)."""
    if pid is None:
        return None
    try:
        return sum(cpu for name, cpu in _threads(pid).values()
                   if name.startswith(JIT_THREAD_PREFIXES))
    except OSError:  # gone
        return None


def machine_jiffies() -> tuple[int, int]:
    """(all, idle) jiffies of the machine so far."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(values), values[3] + values[4]


def _port(pid: int) -> str | None:
    for entry in Path(f"/proc/{pid}/environ").read_text().split("\0"):
        if entry.startswith("DISTILLWATCH_WEB_PORT="):
            return entry.split("=", 1)[1]
    return None


def _health(port: str | None) -> dict[str, int] | None:
    if port is None:
        return None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/", timeout=0.2) as r:
            health: dict[str, int] = json.load(r)
            return health
    except Exception:
        return None


def sample(pid: int, broker: int | None, interval: float, quiet: bool) -> list[Sample]:
    port = _port(pid)
    samples: list[Sample] = []
    threads, machine, broker_cpu = _threads(pid), machine_jiffies(), process_cpu(broker)
    began = last = time.monotonic()
    while os.path.exists(f"/proc/{pid}"):
        time.sleep(interval)
        try:
            now_threads = _threads(pid)
        except FileNotFoundError:
            break
        now, now_machine, now_broker = time.monotonic(), machine_jiffies(), process_cpu(broker)
        health = _health(port)
        dt = now - last
        cpu = {tid: (name, s - threads.get(tid, (name, 0.0))[1])
               for tid, (name, s) in now_threads.items()}
        jiffies, idle = (now_machine[0] - machine[0]), (now_machine[1] - machine[1])
        s = Sample(
            t=now - began,
            main=100 * cpu.get(pid, ("", 0.0))[1] / dt,
            worker=100 * sum(c for _, c in cpu.values()) / dt,
            idle=100 * idle / max(1, jiffies),
            broker=None if now_broker is None or broker_cpu is None
            else 100 * (now_broker - broker_cpu) / dt,
            records_in=None if health is None else health.get("records_in"),
            detected=None if health is None else health.get("events_detected"),
        )
        samples.append(s)
        if not quiet:
            others = sorted(((c, name, tid) for tid, (name, c) in cpu.items() if tid != pid),
                            reverse=True)[:3]
            busiest = " ".join(f"{name}/{tid}:{100 * c / dt:.0f}" for c, name, tid in others)
            progress = "x" if health is None else f"{s.records_in}/{s.detected}"
            broker_text = "-" if s.broker is None else f"{s.broker:.0f}%"
            print(f"{s.t:6.2f}  main {s.main:4.0f}%  worker {s.worker:4.0f}%  idle "
                  f"{s.idle:3.0f}%  broker {broker_text:>5}  {progress}  ({busiest})",
                  flush=True)
        threads, machine, broker_cpu, last = now_threads, now_machine, now_broker, now
    return samples


def _means(label: str, window: list[Sample]) -> str:
    if not window:
        return f"{label}: no samples"
    brokers = [s.broker for s in window if s.broker is not None]
    broker = f"{statistics.mean(brokers):.0f}%" if brokers else "-"
    main = statistics.mean(s.main for s in window)
    worker = statistics.mean(s.worker for s in window)
    idle = statistics.mean(s.idle for s in window)
    return (f"{label}: {window[-1].t - window[0].t:.1f} s, main {main:.0f}%, worker "
            f"{worker:.0f}%, broker {broker}, machine idle {idle:.0f}%")


def summary(samples: list[Sample], after_detected: int | None, after_s: float) -> list[str]:
    """The drain's waiting seconds and means (see the module)."""
    answered = [s for s in samples if s.detected is not None]
    started = next((s.t for s in answered if s.detected), None)
    if started is None:
        return ["no event detected"]
    # The drain ends at its last event detected before DRAIN_PAUSE_S without one (a
    # latency run's paced events, or the bench's late event, come after such a pause).
    ended, count = started, 0
    for s in answered:
        if s.t < started:
            continue
        if s.detected != count:
            if s.t - ended >= DRAIN_PAUSE_S and count:
                break
            ended, count = s.t, s.detected or 0
    drain = [s for s in samples if started <= s.t <= ended]
    waiting = sum(b.t - a.t for a, b in zip(drain, drain[1:], strict=False)
                  if b.main < MAIN_WAITING)
    lines = [f"drain {started:.1f}-{ended:.1f} s: main thread under {MAIN_WAITING:.0f} % "
             f"for {waiting:.1f} s", _means("drain", drain)]
    if after_detected is not None:
        begun = next((s.t for s in answered if (s.detected or 0) > after_detected), None)
        if begun is not None:
            lines.append(_means(f"after {after_detected:,} detected",
                                [s for s in samples if begun <= s.t <= begun + after_s]))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=float, default=0.25)
    parser.add_argument("--after-detected", type=int, default=None,
                        help="also sum up the --after-s seconds once this many are detected")
    parser.add_argument("--after-s", type=float, default=8.0)
    parser.add_argument("--wait-s", type=float, default=300.0,
                        help="how long to wait for a worker to start")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    args = parser.parse_args()
    pid = find_process("streams worker", args.wait_s)
    if pid is None:
        raise SystemExit(f"no `streams worker` process within {args.wait_s:.0f} s")
    broker = find_process("kafka.Kafka", 0.5)
    print(f"worker {pid}, broker {broker if broker is not None else 'not on this machine'}",
          flush=True)
    samples = sample(pid, broker, args.interval, args.quiet)
    for line in summary(samples, args.after_detected, args.after_s):
        print(line, flush=True)


if __name__ == "__main__":
    main()

"""Who used the machine's cores while the latency bench's paced stream ran."""

from __future__ import annotations

import ctypes
import os
import threading
import time

from pytest import approx

from bench.sampler import jit_cpu
from bench.throughput import CpuMark, cpu_shares_text


def _mark(wall: float, workers: float, broker: float | None, bench: float,
          machine_all: int, machine_idle: int) -> CpuMark:
    return CpuMark(wall, workers, broker, bench, machine_all, machine_idle)


def test_shares_are_percent_of_one_core_and_idle_is_percent_of_the_machine() -> None:
    before = _mark(10.0, 100.0, 50.0, 5.0, 1_000, 400)
    after = _mark(18.0, 106.4, 52.4, 7.0, 2_600, 800)  # 8 s, two cores: 1,600 jiffies
    shares = before.shares(after)
    assert shares == approx({"workers": 80.0, "broker": 30.0, "bench": 25.0, "idle": 25.0})
    assert cpu_shares_text(shares) == (
        "CPU meanwhile (% of one core): worker 80 %, broker 30 %, load generator and "
        "listener 25 %; machine idle 25 %")


def test_the_brokers_jit_compiler_is_named_within_its_share() -> None:
    before = CpuMark(10.0, 100.0, 50.0, 5.0, 1_000, 400, broker_jit=20.0)
    after = CpuMark(18.0, 106.4, 56.4, 7.0, 2_600, 800, broker_jit=23.2)
    shares = before.shares(after)
    assert shares["broker_jit"] == approx(40.0)
    assert cpu_shares_text(shares) == (
        "CPU meanwhile (% of one core): worker 80 %, broker 80 % (its JIT compiler 40 %), "
        "load generator and listener 25 %; machine idle 25 %")


def test_a_broker_not_on_this_machine_is_left_out() -> None:
    shares = _mark(0.0, 1.0, None, 0.0, 0, 0).shares(_mark(2.0, 2.0, None, 0.5, 400, 100))
    assert "broker" not in shares
    assert cpu_shares_text(shares) == (
        "CPU meanwhile (% of one core): worker 50 %, load generator and listener 25 %; "
        "machine idle 25 %")


def test_no_measure_says_so() -> None:
    assert cpu_shares_text({}) == "CPU not measured"


def _spin_as(name: bytes, seconds: float, spun: threading.Barrier,
             done: threading.Event) -> None:
    """Busy this thread for `seconds` of its CPU under the kernel's thread name `name`, then
    wait (alive, so still in /proc) until `done`."""
    ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name), 0, 0, 0)  # PR_SET_NAME
    deadline = time.thread_time() + seconds
    while time.thread_time() < deadline:
        pass
    spun.wait()
    done.wait()


def test_the_jit_share_counts_the_threads_a_jvm_names_as_its_compilers() -> None:
    names = (b"C2 CompilerThre", b"C1 CompilerThre", b"GC Thread#0")
    spun, done = threading.Barrier(len(names) + 1), threading.Event()
    threads = [threading.Thread(target=_spin_as, args=(name, 0.3, spun, done))
               for name in names]
    for thread in threads:
        thread.start()
    try:
        spun.wait()
        # The two compiler threads' 0.6 s (at the clock's 0.01 s ticks), not the collector's.
        assert jit_cpu(os.getpid()) == approx(0.6, abs=0.05)
    finally:
        done.set()
        for thread in threads:
            thread.join()
    assert jit_cpu(None) is None

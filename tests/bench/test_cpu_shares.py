"""Who used the machine's cores while the latency bench's paced stream ran."""

from __future__ import annotations

from pytest import approx

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


def test_a_broker_not_on_this_machine_is_left_out() -> None:
    shares = _mark(0.0, 1.0, None, 0.0, 0, 0).shares(_mark(2.0, 2.0, None, 0.5, 400, 100))
    assert "broker" not in shares
    assert cpu_shares_text(shares) == (
        "CPU meanwhile (% of one core): worker 50 %, load generator and listener 25 %; "
        "machine idle 25 %")


def test_no_measure_says_so() -> None:
    assert cpu_shares_text({}) == "CPU not measured"

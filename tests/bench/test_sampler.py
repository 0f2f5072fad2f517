"""The sampler's summary of a worker's drain: the seconds its main thread waited."""

from __future__ import annotations

from bench.sampler import Sample, summary


def _at(t: float, main: float, detected: int | None, broker: float | None = 40.0) -> Sample:
    return Sample(t=t, main=main, worker=main + 20, idle=100 - main, broker=broker,
                  records_in=None if detected is None else 1, detected=detected)


def test_the_drain_runs_from_the_first_event_detected_to_the_last() -> None:
    samples = [
        _at(0.25, 5, 0),  # before the first event: starting, not waiting
        _at(0.50, 90, 1_000),
        _at(0.75, 10, 1_000),  # waiting 0.25 s
        _at(1.00, 95, None),  # busy: no answer
        _at(1.25, 20, 3_000),  # waiting 0.25 s
        _at(1.50, 80, 4_000),
        _at(1.75, 2, 4_000),  # after the last event: done, not waiting
    ]
    lines = summary(samples, None, 8.0)
    assert lines[0] == "drain 0.5-1.5 s: main thread under 30 % for 0.5 s"
    assert lines[1].startswith("drain: 1.0 s, main 59%")


def test_the_window_after_a_count_is_summed_up_on_its_own() -> None:
    samples = [_at(t / 4, 100, 10_000 * t) for t in range(1, 9)]
    samples += [_at(2 + t / 4, 40, 80_000 + 100 * t, broker=60.0) for t in range(1, 9)]
    lines = summary(samples, 80_000, 1.0)
    assert lines[-1] == ("after 80,000 detected: 1.0 s, main 40%, worker 60%, broker 60%, "
                         "machine idle 60%")


def test_no_event_detected_is_said() -> None:
    assert summary([_at(0.25, 50, 0), _at(0.5, 50, None)], None, 8.0) == ["no event detected"]


def test_a_sample_without_the_brokers_cpu_is_left_out_of_its_mean() -> None:
    lines = summary([_at(0.25, 50, 1), _at(0.5, 50, 2, broker=None), _at(0.75, 50, 3, 20.0)],
                    None, 8.0)
    assert "broker 30%" in lines[1]


def test_without_the_broker_at_all_its_mean_is_a_dash() -> None:
    lines = summary([_at(0.25, 50, 1, None), _at(0.5, 50, 2, None)], None, 8.0)
    assert "broker -," in lines[1]


def test_the_drain_ends_before_a_pause_of_two_seconds() -> None:
    """What the bench sends after the drain (the paced events of a latency run, its late
    event) is not part of it, nor the pause before."""
    drain = [_at(t / 4, 90, 1_000 * t) for t in range(1, 5)]  # 0.25-1.0 s
    pause = [_at(1 + t / 4, 3, 4_000) for t in range(1, 12)]  # 1.25-3.75 s
    paced = [_at(4 + t / 4, 50, 4_000 + t) for t in range(1, 5)]
    lines = summary(drain + pause + paced, None, 8.0)
    assert lines[0] == "drain 0.2-1.0 s: main thread under 30 % for 0.0 s"

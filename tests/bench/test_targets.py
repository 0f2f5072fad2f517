"""The throughput bench's runs of a target scenario, summed up against its target."""

from __future__ import annotations

import pytest

from bench.throughput import Result, main, repeats, target_lines


def _run(name: str, events_per_s: float, error: str | None = None) -> Result:
    return Result(name, "distillwatch", 1000, 10_000, 1_000_000,
                  events_per_s=events_per_s, error=error)


def test_the_runs_of_a_scenario_are_its_first_and_its_repeats_only() -> None:
    results = [_run("dw_batch", 1.0), _run("dw_batch_run2", 2.0), _run("dw_batch_run10", 3.0),
               _run("dw_batch_runs", 4.0), _run("dw_single_run2", 5.0), _run("scale_10000", 6.0)]
    assert [r.name for r in repeats(results, "dw_batch")] == [
        "dw_batch", "dw_batch_run2", "dw_batch_run10"]


def test_each_target_gives_the_runs_that_met_it_and_the_spread() -> None:
    results = [_run("dw_batch", 124_086.0), _run("dw_batch_run2", 94_782.0),
               _run("dw_batch_run3", 100_000.0), _run("dw_single", 29_999.0)]
    assert target_lines(results) == [
        "dw_single: 0 of 1 runs at or above 30,000 events/s; events/s lowest 29,999, "
        "median 29,999, highest 29,999",
        "dw_batch: 2 of 3 runs at or above 100,000 events/s; events/s lowest 94,782, "
        "median 100,000, highest 124,086",
    ]


def test_a_failed_run_counts_against_the_target_and_is_named() -> None:
    results = [_run("dw_batch", 150_000.0),
               _run("dw_batch_run2", 0.0, error="worker exited with 1")]
    assert target_lines(results) == [
        "dw_batch: 1 of 2 runs at or above 100,000 events/s; events/s lowest 150,000, "
        "median 150,000, highest 150,000; failed: dw_batch_run2"]


def test_scenarios_not_run_are_left_out() -> None:
    assert target_lines([_run("naive_batch", 15_000.0), _run("scale_1", 140_000.0)]) == []


def test_repeat_below_one_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--repeat", "0"])
    assert exit_.value.code == 2
    assert "--repeat must be at least 1, got 0" in capsys.readouterr().err


def test_warm_up_below_zero_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--warm-up", "-1"])
    assert exit_.value.code == 2
    assert "--warm-up must be 0 or more, got -1" in capsys.readouterr().err

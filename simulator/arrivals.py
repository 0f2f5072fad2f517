"""Arrival processes: when one account sends its requests, in event time.

Each process is a generator of integer milliseconds since the epoch, strictly inside
``[first_ms, stop_ms)``, non-decreasing, and always starting with ``first_ms`` itself so
the planner knows every account's first event (and so its label's ``attack_start``)
before a single event is generated.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

_MS_PER_HOUR = 3_600_000.0


def poisson(rng: random.Random, first_ms: int, stop_ms: int, rate_per_s: float) -> Iterator[int]:
    """A homogeneous Poisson process at ``rate_per_s`` requests per second."""
    expovariate = rng.expovariate
    rate_per_ms = rate_per_s / 1000.0
    t = float(first_ms)
    while t < stop_ms:
        yield int(t)
        t += expovariate(rate_per_ms)


def limited(
    rng: random.Random, first_ms: int, stop_ms: int, rate_per_s: float, count: int
) -> Iterator[int]:
    """Poisson at ``rate_per_s`` for at most ``count`` requests, then silent (one pass)."""
    for sent, ts in enumerate(poisson(rng, first_ms, stop_ms, rate_per_s)):
        if sent >= count:
            return
        yield ts


def diurnal(
    rng: random.Random,
    first_ms: int,
    stop_ms: int,
    rate_per_s: float,
    amplitude: float,
    peak_hour: float,
    utc_offset_h: float,
) -> Iterator[int]:
    """Poisson whose rate follows the tenant's local day: ``rate * (1 + a cos(...))``.

    Thinning (Lewis & Shedler): draw at the peak rate, keep each draw with the ratio of
    the instantaneous rate to the peak, which stays exact without integrating the rate.
    """
    expovariate = rng.expovariate
    rand = rng.random
    cos = math.cos
    peak_per_ms = rate_per_s * (1.0 + amplitude) / 1000.0
    phase_h = utc_offset_h - peak_hour
    two_pi_over_day = 2.0 * math.pi / 24.0
    t = float(first_ms)
    yield first_ms
    while True:
        t += expovariate(peak_per_ms)
        if t >= stop_ms:
            return
        local_h = t / _MS_PER_HOUR + phase_h
        if rand() * (1.0 + amplitude) < 1.0 + amplitude * cos(two_pi_over_day * local_h):
            yield int(t)


def sessions(
    rng: random.Random,
    first_ms: int,
    stop_ms: int,
    rate_per_s: float,
    session_s: float,
    gap_s: float,
) -> Iterator[int]:
    """Bursty work sessions: Poisson at ``rate_per_s`` during sessions of mean ``session_s``
    seconds, separated by silent gaps of mean ``gap_s`` seconds; ``first_ms`` opens a session."""
    expovariate = rng.expovariate
    rate_per_ms = rate_per_s / 1000.0
    t = float(first_ms)
    session_end = t + expovariate(1.0 / (session_s * 1000.0))
    while t < stop_ms:
        yield int(t)
        t += expovariate(rate_per_ms)
        if t > session_end:
            t = session_end + expovariate(1.0 / (gap_s * 1000.0))
            session_end = t + expovariate(1.0 / (session_s * 1000.0))


def metronome(
    rng: random.Random, first_ms: int, stop_ms: int, rate_per_s: float, jitter_s: float
) -> Iterator[int]:
    """A fixed period of ``1 / rate_per_s`` seconds with at most ``jitter_s`` seconds of delay."""
    rand = rng.random
    period_ms = 1000.0 / rate_per_s
    # keep the delay below half a period so the ticks can never swap order
    jitter_ms = min(jitter_s * 1000.0, period_ms / 2.0)
    tick = 0
    yield first_ms
    while True:
        tick += 1
        t = first_ms + tick * period_ms + rand() * jitter_ms
        if t >= stop_ms:
            return
        yield int(t)

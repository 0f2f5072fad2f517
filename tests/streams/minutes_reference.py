"""The sink's per-minute counting as it was in Python before it moved to Rust
(`streams/sinks.py` at c790048, verbatim apart from the rows it returns).

`test_sinks.py` counts the same calls with both and compares the rows. Do not "improve"
it: it is the specification `distillwatch_native.MinuteCounts` is checked against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from models.records import ApiCall

MinuteKey = tuple[int, str, str]  # (minute start in epoch seconds, tenant_id, account_id)


@dataclass(slots=True)
class MinuteAggregate:
    """What one account did in one minute of event time."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cot_requests: int = 0
    logprob_requests: int = 0
    errors: int = 0
    refusals: int = 0
    max_jailbreak_score: float = 0.0
    prompt_templates: set[int] = field(default_factory=set)
    max_score: float = 0.0

    def add(self, call: ApiCall, score: float) -> None:
        self.requests += 1
        self.input_tokens += call.input_tokens
        self.output_tokens += call.output_tokens
        self.cot_requests += call.cot_request
        self.logprob_requests += call.logprobs
        self.errors += call.status >= 400
        self.refusals += call.stop_reason == "refusal"
        if call.jailbreak_score is not None and call.jailbreak_score > self.max_jailbreak_score:
            self.max_jailbreak_score = call.jailbreak_score
        if call.simhash is not None:
            self.prompt_templates.add(call.simhash)
        if score > self.max_score:
            self.max_score = score

    def merge(self, other: MinuteAggregate) -> None:
        self.requests += other.requests
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cot_requests += other.cot_requests
        self.logprob_requests += other.logprob_requests
        self.errors += other.errors
        self.refusals += other.refusals
        self.max_jailbreak_score = max(self.max_jailbreak_score, other.max_jailbreak_score)
        self.prompt_templates |= other.prompt_templates
        self.max_score = max(self.max_score, other.max_score)


def add_calls(
    minutes: dict[MinuteKey, MinuteAggregate], calls: Sequence[ApiCall], scores: Sequence[float]
) -> None:
    """`ClickHouseSink.add_calls`' loop."""
    for call, score in zip(calls, scores, strict=True):
        key = (int(call.ts // 60) * 60, call.tenant_id, call.account_id)
        agg = minutes.get(key)
        if agg is None:
            agg = minutes[key] = MinuteAggregate()
        agg.add(call, score)


def merge(into: dict[MinuteKey, MinuteAggregate], rows: dict[MinuteKey, MinuteAggregate]) -> None:
    """`ClickHouseSink._restore`'s loop: `rows` added to `into`."""
    for key, agg in rows.items():
        current = into.get(key)
        if current is None:
            into[key] = agg
        else:
            current.merge(agg)


def rows(minutes: dict[MinuteKey, MinuteAggregate]) -> list[list[Any]]:
    """The rows `ClickHouseSink.flush` inserted, in `MINUTE_COLUMNS` order."""
    return [
        [m, t, a, g.requests, g.input_tokens, g.output_tokens, g.cot_requests,
         g.logprob_requests, g.errors, g.refusals, g.max_jailbreak_score,
         sorted(g.prompt_templates), g.max_score]
        for (m, t, a), g in minutes.items()
    ]

"""Generate a labelled fleet of API-call events from a scenario, lazily and deterministically.

:func:`generate` plans every account up front (ids, infrastructure, first event time,
label) and :meth:`Simulation.events` streams the events of all accounts merged in event
time, one small generator per account, so millions of events never sit in memory.
The same scenario, seed, duration, scale and start give byte-identical output.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from bisect import bisect_right
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from heapq import merge
from pathlib import Path
from typing import Any

import msgspec
from tqdm import tqdm

from simulator import arrivals
from simulator.archetypes import ARCHETYPES, TAXONOMY
from simulator.identity import (
    Egress,
    IdMint,
    client_group,
    egress,
    rfc3339_seconds,
    tls_fingerprint,
)
from simulator.scenario import Population, Scenario

SCHEMA_VERSION = 1
_UTC_OFFSETS_H = (-8.0, -5.0, -3.0, 0.0, 1.0, 2.0, 5.5, 8.0, 9.0)
_PROXY_EXITS_PER_ACCOUNT = 3  # proxied keys rotate over a few exits of their pool


@dataclass(frozen=True, slots=True)
class ContentProfile:
    """Precomputed per-request distributions of one population (or one campaign)."""

    models: tuple[str, ...]
    model_cum: tuple[float, ...]
    endpoint: str
    topics: tuple[str, ...]
    topic_cum: tuple[float, ...]
    topic_sweep: bool
    cot_share: float
    template_share: float
    templates: tuple[int, ...]
    bit_flips: int
    n_share: float
    n_values: tuple[int, ...]
    logprobs_share: float
    tool_share: float
    tool_min: int
    tool_span: int
    extra_turns_mean: float
    stream_share: float
    temperatures: tuple[float, ...]
    max_tokens: tuple[int, ...]
    input_mu: float
    input_sigma: float
    output_mu: float
    output_sigma: float
    max_tokens_hit_share: float
    jailbreak_share: float
    sysprompt_probe_share: float
    refusal_share: float
    error_share: float
    throttle_share: float


@dataclass(frozen=True, slots=True)
class AccountPlan:
    """Everything needed to generate one account's events; times in ms since the epoch."""

    index: int
    tenant_id: str
    account_id: str
    population: str
    archetype: str
    label: str
    campaign_id: str | None
    first_ms: int  # event time of its first event (its attack start for attack accounts)
    stop_ms: int  # no events at or after this event time
    throttle_ms: int  # from this event time on, requests are throttled (key rotation)
    throttle_429_share: float
    rate_per_s: float
    timing: str
    timing_args: tuple[float, ...]
    content: ContentProfile
    cover: ContentProfile | None
    cover_share: float
    clients: tuple[dict[str, object], ...]  # empty: the gateway sends no client group
    send_prompt: bool
    account: dict[str, object]


class Simulation:
    """A planned scenario run.

    ``labels`` is complete right after construction: one dict per account that will send
    at least one event, in the contract's ``labels.jsonl`` format. :meth:`events` can be
    iterated any number of times and yields the same events each time.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        seed: int,
        start: datetime,
        duration_s: float,
        fleet_scale: float,
        plans: Sequence[AccountPlan],
    ) -> None:
        self.scenario = scenario
        self.seed = seed
        self.start = start
        self.duration_s = duration_s
        self.fleet_scale = fleet_scale
        self.plans = tuple(plans)
        fingerprint = f"{scenario.name}|{seed}|{start.isoformat()}|{duration_s}|{fleet_scale}"
        self.run_id = hashlib.sha256(fingerprint.encode()).hexdigest()[:8]
        self.labels: list[dict[str, Any]] = [
            {
                "tenant_id": plan.tenant_id,
                "account_id": plan.account_id,
                "label": plan.label,
                "archetype": plan.archetype,
                "campaign_id": plan.campaign_id,
                "attack_start": format_ts_ms(plan.first_ms) if plan.label == "attack" else None,
            }
            for plan in self.plans
        ]

    @property
    def start_ms(self) -> int:
        """Event time of the start of the scenario, ms since the epoch."""
        return int(self.start.timestamp() * 1000)

    def events(self) -> Iterator[dict[str, Any]]:
        """Contract events of the whole fleet in non-decreasing ``ts`` order.

        Nested ``client`` and ``account`` groups are shared between events of one account:
        copy an event before mutating them. ``event_id`` is ``ev-<run>-<counter>``, unique
        within the run and distinct between runs of different configurations.
        """
        streams = [_account_events(plan, self.seed) for plan in self.plans]
        prefix = f"ev-{self.run_id}-"
        last_second = -1
        second_text = ""
        for counter, (ts_ms, _, event) in enumerate(merge(*streams), start=1):
            second, millis = divmod(ts_ms, 1000)
            if second != last_second:
                last_second = second
                second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            event["event_id"] = f"{prefix}{counter:010d}"
            event["ts"] = f"{second_text}.{millis:03d}Z"
            yield event

    def summary(self, events: int | None = None) -> dict[str, Any]:
        """The run's description as written to ``scenario.json``."""
        campaigns: dict[str, dict[str, Any]] = {}
        for plan in self.plans:
            if plan.campaign_id is None:
                continue
            entry = campaigns.setdefault(
                plan.campaign_id,
                {"campaign_id": plan.campaign_id, "archetype": plan.archetype, "accounts": 0},
            )
            entry["accounts"] += 1
        attack = sum(1 for plan in self.plans if plan.label == "attack")
        return {
            "name": self.scenario.name,
            "seed": self.seed,
            "start": format_ts_ms(self.start_ms),
            "end": format_ts_ms(self.start_ms + int(self.duration_s * 1000)),
            "duration_s": self.duration_s,
            "fleet_scale": self.fleet_scale,
            "events": events,
            "accounts": len(self.plans),
            "benign_accounts": len(self.plans) - attack,
            "attack_accounts": attack,
            "campaigns": list(campaigns.values()),
        }


def format_ts_ms(ts_ms: int) -> str:
    """RFC 3339 UTC with milliseconds and ``Z`` for ``ts_ms`` ms since the epoch."""
    second, millis = divmod(ts_ms, 1000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(second))}.{millis:03d}Z"


def generate(
    scenario: Scenario,
    *,
    seed: int,
    duration_s: float | None = None,
    fleet_scale: float | None = None,
    start: datetime | None = None,
) -> Simulation:
    """Plan a run of ``scenario``: ``duration_s`` seconds of event time from ``start``
    (defaults: the scenario's), with every population's account count times ``fleet_scale``.
    """
    duration = float(duration_s) if duration_s is not None else scenario.duration_s
    if duration <= 0:
        raise ValueError(f"duration_s must be positive, got {duration}")
    scale = 1.0 if fleet_scale is None else float(fleet_scale)
    if scale < 0:
        raise ValueError(f"fleet_scale must be >= 0, got {scale}")
    begin = scenario.start if start is None else start
    plans = _Planner(seed, begin, duration).plan(scenario.populations, scale)
    return Simulation(
        scenario, seed=seed, start=begin, duration_s=duration, fleet_scale=scale, plans=plans
    )


def write_scenario(sim: Simulation, out_dir: Path, progress: bool = True) -> tuple[int, int]:
    """Write ``events.jsonl``, ``labels.jsonl`` and ``scenario.json`` into ``out_dir``.

    Returns (events written, accounts labelled). Progress goes to stderr via tqdm.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    encode = msgspec.json.Encoder().encode
    written = 0
    with (
        (out_dir / "events.jsonl").open("wb", buffering=1 << 20) as sink,
        tqdm(
            desc=f"simulate {sim.scenario.name}",
            unit="ev",
            unit_scale=True,
            disable=not progress,
            mininterval=0.5,
        ) as bar,
    ):
        chunk: list[bytes] = []
        for event in sim.events():
            chunk.append(encode(event))
            if len(chunk) >= 10_000:
                sink.write(b"\n".join(chunk) + b"\n")
                written += len(chunk)
                bar.update(len(chunk))
                chunk.clear()
        if chunk:
            sink.write(b"\n".join(chunk) + b"\n")
            written += len(chunk)
            bar.update(len(chunk))
    write_labels(sim, out_dir, events=written)
    return written, len(sim.labels)


def write_labels(sim: Simulation, out_dir: Path, events: int | None = None) -> None:
    """Write ``labels.jsonl`` and ``scenario.json`` (with the event count, if known)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    encode = msgspec.json.Encoder().encode
    with (out_dir / "labels.jsonl").open("wb") as sink:
        for label in sim.labels:
            sink.write(encode(label) + b"\n")
    summary = msgspec.json.format(encode(sim.summary(events=events)), indent=2)
    (out_dir / "scenario.json").write_bytes(summary + b"\n")


# --------------------------------------------------------------------------- planning


def _scaled(accounts: int, scale: float) -> int:
    if accounts <= 0 or scale <= 0:
        return 0
    return max(1, round(accounts * scale))


def _cumulative(weights: Mapping[str, float]) -> tuple[tuple[str, ...], tuple[float, ...]]:
    names = tuple(name for name, weight in weights.items() if weight > 0)
    if not names:
        raise ValueError(f"weights {dict(weights)} have no positive entry")
    total = sum(weights[name] for name in names)
    running = 0.0
    cum = []
    for name in names:
        running += weights[name] / total
        cum.append(running)
    cum[-1] = 1.0
    return names, tuple(cum)


def _lognormal_mu(median: float) -> float:
    return math.log(max(median, 1.0))


def _content_profile(knobs: Mapping[str, Any], templates: tuple[int, ...]) -> ContentProfile:
    models, model_cum = _cumulative(knobs["models"])
    topics: tuple[str, ...]
    if knobs["topic_sweep"]:
        topics, topic_cum = TAXONOMY, tuple((i + 1) / len(TAXONOMY) for i in range(len(TAXONOMY)))
    else:
        topics, topic_cum = _cumulative(knobs["topics"])
    tool_min, tool_max = (int(v) for v in knobs["tool_count"])
    in_median, in_sigma = knobs["input_chars"]
    out_median, out_sigma = knobs["output_tokens"]
    return ContentProfile(
        models=models,
        model_cum=model_cum,
        endpoint=str(knobs["endpoint"]),
        topics=topics,
        topic_cum=topic_cum,
        topic_sweep=bool(knobs["topic_sweep"]),
        cot_share=float(knobs["cot_share"]),
        template_share=float(knobs["template_share"]) if templates else 0.0,
        templates=templates,
        bit_flips=int(knobs["bit_flips"]),
        n_share=float(knobs["n_share"]),
        n_values=tuple(int(v) for v in knobs["n_values"]) or (1,),
        logprobs_share=float(knobs["logprobs_share"]),
        tool_share=float(knobs["tool_share"]),
        tool_min=max(1, tool_min),
        tool_span=max(1, tool_max - max(1, tool_min) + 1),
        extra_turns_mean=max(0.0, float(knobs["turn_mean"]) - 1.0),
        stream_share=float(knobs["stream_share"]),
        temperatures=tuple(float(v) for v in knobs["temperatures"]),
        max_tokens=tuple(int(v) for v in knobs["max_tokens"]),
        input_mu=_lognormal_mu(float(in_median)),
        input_sigma=float(in_sigma),
        output_mu=_lognormal_mu(float(out_median)),
        output_sigma=float(out_sigma),
        max_tokens_hit_share=float(knobs["max_tokens_hit_share"]),
        jailbreak_share=float(knobs["jailbreak_share"]),
        sysprompt_probe_share=float(knobs["sysprompt_probe_share"]),
        refusal_share=float(knobs["refusal_share"]),
        error_share=float(knobs["error_share"]),
        throttle_share=float(knobs["throttle_share"]),
    )


@cache
def _cover_profile() -> ContentProfile:
    """Ordinary chat and coding traffic, as a proxy reseller's real customers send."""
    return _content_profile(ARCHETYPES["small_tenant"], templates=())


@dataclass(slots=True)
class _Group:
    """Infrastructure shared by a campaign (attack) or a whole population (benign)."""

    campaign_id: str | None
    start_ms: int
    pool: list[Egress]
    user_agent: str
    tls: str
    templates: tuple[int, ...]
    creation_anchors_s: list[float]
    payment: str
    payment_left: int


class _Planner:
    """Turns populations into :class:`AccountPlan` rows, all from seeded RNGs."""

    def __init__(self, seed: int, start: datetime, duration_s: float) -> None:
        self.seed = seed
        self.start_ms = int(start.timestamp() * 1000)
        self.duration_ms = int(duration_s * 1000)
        self.end_ms = self.start_ms + self.duration_ms
        self.ids = IdMint(random.Random(f"{seed}:ids"))
        self.plans: list[AccountPlan] = []

    def plan(self, populations: Sequence[Population], scale: float) -> list[AccountPlan]:
        for pop in populations:
            count = _scaled(int(pop.knobs["accounts"]), scale)
            if count == 0:
                continue
            # one RNG per population so adding a population does not reshuffle the others
            rng = random.Random(f"{self.seed}:population:{pop.role}:{pop.name}")
            if pop.role == "attack":
                campaigns = max(1, min(int(pop.knobs["campaigns"]), count))
                for number in range(campaigns):
                    size = count // campaigns + (1 if number < count % campaigns else 0)
                    group = self._group(rng, pop, f"cmp-{pop.name}-{number + 1:02d}")
                    self._plan_accounts(rng, pop, group, size)
            else:
                self._plan_accounts(rng, pop, self._group(rng, pop, None), count)
        return self.plans

    def _frac_ms(self, fraction: float) -> int:
        return self.start_ms + int(min(max(fraction, 0.0), 1.0) * self.duration_ms)

    def _group(self, rng: random.Random, pop: Population, campaign_id: str | None) -> _Group:
        knobs = pop.knobs
        lo, hi = knobs["start_at"]
        user_agent = rng.choice(knobs["user_agents"])
        return _Group(
            campaign_id=campaign_id,
            start_ms=self._frac_ms(rng.uniform(lo, hi)),
            pool=[egress(rng, knobs["network"]) for _ in range(int(knobs["ip_pool"]))],
            user_agent=user_agent,
            # the group's own client build: a TLS stack no stock library build presents
            tls=tls_fingerprint(user_agent, f"{campaign_id or pop.name}:{rng.getrandbits(32)}"),
            templates=tuple(rng.getrandbits(64) for _ in range(int(knobs["templates"]))),
            creation_anchors_s=[
                self.start_ms / 1000 - rng.uniform(*knobs["created_days_ago"]) * 86400
                for _ in range(3)
            ],
            payment=self.ids.payment(),
            payment_left=int(knobs["payment_group"]),
        )

    def _plan_accounts(
        self, rng: random.Random, pop: Population, group: _Group, count: int
    ) -> None:
        knobs = pop.knobs
        attack = pop.role == "attack"
        stop_ms = self._frac_ms(float(knobs["stop_at"]))
        group_profile = _content_profile(knobs, group.templates) if attack else None
        cover = _cover_profile() if attack and knobs["cover_share"] > 0 else None
        k_lo, k_hi = (int(v) for v in knobs["keys_per_tenant"])
        timing = str(knobs["timing"])
        # every slot rotates through at least three keys, even in a scaled-down fleet
        slots = max(1, min(int(knobs["rotation_slots"]), count // 3))
        keys_per_slot = math.ceil(count / slots)
        planned = 0
        while planned < count:
            keys = min(rng.randint(max(1, k_lo), max(1, k_hi)), count - planned)
            tenant = self._tenant(rng, pop, group, attack)
            profile = group_profile or _content_profile(knobs, tenant["templates"])
            for _ in range(keys):
                position = planned
                planned += 1
                first_ms, key_stop_ms, throttle_ms = self._window(
                    rng, knobs, group, timing, position, slots, keys_per_slot, stop_ms, attack
                )
                if first_ms >= key_stop_ms:
                    continue  # the account would start after the window closes: it never exists
                rate = float(knobs["rate_per_hour"]) / 3600.0
                sigma = float(knobs["rate_sigma"])
                rate *= math.exp(sigma * rng.gauss(0.0, 1.0) - sigma * sigma / 2.0)
                self.plans.append(
                    AccountPlan(
                        index=len(self.plans),
                        tenant_id=tenant["tenant_id"],
                        account_id=self.ids.account(),
                        population=pop.name,
                        archetype=pop.archetype,
                        label=pop.role,
                        campaign_id=group.campaign_id,
                        first_ms=first_ms,
                        stop_ms=key_stop_ms,
                        throttle_ms=throttle_ms,
                        throttle_429_share=float(knobs["throttle_429_share"]),
                        rate_per_s=rate,
                        timing=timing,
                        timing_args=self._timing_args(rng, knobs, tenant),
                        content=profile,
                        cover=cover,
                        cover_share=float(knobs["cover_share"]),
                        clients=self._clients(rng, knobs, group, tenant),
                        send_prompt=tenant["send_prompt"],
                        account=self._account_group(rng, knobs, group, tenant, first_ms),
                    )
                )

    def _tenant(
        self, rng: random.Random, pop: Population, group: _Group, attack: bool
    ) -> dict[str, Any]:
        knobs = pop.knobs
        if knobs["shared_client"]:
            user_agent, tls = group.user_agent, group.tls
        else:
            user_agent = rng.choice(knobs["user_agents"])
            # ordinary tenants run stock library builds: a few fingerprints per library
            tls = tls_fingerprint(user_agent, rng.randrange(3))
        return {
            "tenant_id": self.ids.tenant(),
            "egress": None if group.pool else egress(rng, knobs["network"]),
            "user_agent": user_agent,
            "tls": tls,
            "payment": self.ids.payment(),
            "send_client": attack or rng.random() >= float(knobs["omit_client_share"]),
            "send_prompt": attack or rng.random() >= float(knobs["omit_prompt_share"]),
            # a benign tenant's prompts come from its own product's templates
            "templates": tuple(rng.getrandbits(64) for _ in range(int(knobs["templates"]))),
            "utc_offset_h": rng.choice(_UTC_OFFSETS_H),
        }

    def _window(
        self,
        rng: random.Random,
        knobs: Mapping[str, Any],
        group: _Group,
        timing: str,
        position: int,
        slots: int,
        keys_per_slot: int,
        stop_ms: int,
        attack: bool,
    ) -> tuple[int, int, int]:
        """(first event, stop, throttle start) of one account, ms of event time."""
        if timing == "rotation":
            # keys of a slot take turns: each is used until throttled, then replaced
            life_ms = max(1, (stop_ms - group.start_ms) // keys_per_slot)
            turn = position // slots
            first = group.start_ms + turn * life_ms + int(rng.random() * min(life_ms, 60_000) / 4)
            key_stop = min(stop_ms, group.start_ms + (turn + 1) * life_ms)
            throttle = first + int(float(knobs["throttle_after"]) * (key_stop - first))
            return first, key_stop, throttle
        if timing == "once" and not attack:
            lo, hi = knobs["start_at"]
            window_start = self._frac_ms(rng.uniform(lo, hi))
        else:
            window_start = group.start_ms
        window_start += int(rng.random() * float(knobs["join_window"]) * self.duration_ms)
        if attack or timing == "once":
            first = window_start
        elif timing == "metronome":
            # a cron-driven worker ticks on its own phase
            first = window_start + int(rng.random() * 3_600_000 / float(knobs["rate_per_hour"]))
        else:
            # ongoing benign traffic was already flowing: its first event is one gap in
            rate = float(knobs["rate_per_hour"]) / 3_600_000.0
            gap = rng.expovariate(rate) if rate > 0 else math.inf
            span = max(1, stop_ms - window_start)
            first = window_start + int(gap if gap < span else rng.random() * span)
        return first, stop_ms, stop_ms

    def _timing_args(
        self, rng: random.Random, knobs: Mapping[str, Any], tenant: Mapping[str, Any]
    ) -> tuple[float, ...]:
        timing = knobs["timing"]
        if timing == "diurnal":
            return (
                float(knobs["diurnal_amplitude"]),
                float(knobs["peak_hour"]),
                float(tenant["utc_offset_h"]),
            )
        if timing == "sessions":
            return (float(knobs["session_minutes"]) * 60.0, float(knobs["gap_minutes"]) * 60.0)
        if timing == "metronome":
            return (float(knobs["metronome_jitter_s"]),)
        if timing == "once":
            lo, hi = (int(v) for v in knobs["once_requests"])
            return (float(rng.randint(lo, hi)),)
        if timing in ("poisson", "rotation"):
            return ()
        raise ValueError(f"unknown timing {timing!r}")

    def _clients(
        self,
        rng: random.Random,
        knobs: Mapping[str, Any],
        group: _Group,
        tenant: Mapping[str, Any],
    ) -> tuple[dict[str, object], ...]:
        if not tenant["send_client"]:
            return ()
        if not group.pool:
            exits = [tenant["egress"]]
        elif knobs["network"] == "proxy":
            exits = [rng.choice(group.pool) for _ in range(_PROXY_EXITS_PER_ACCOUNT)]
        else:
            exits = [rng.choice(group.pool)]
        return tuple(client_group(e, tenant["user_agent"], tenant["tls"]) for e in exits)

    def _account_group(
        self,
        rng: random.Random,
        knobs: Mapping[str, Any],
        group: _Group,
        tenant: Mapping[str, Any],
        first_ms: int,
    ) -> dict[str, object]:
        lo, hi = knobs["created_days_ago"]
        burst_h = float(knobs["creation_burst_hours"])
        if burst_h > 0:
            # accounts registered in a few bursts, minutes to hours apart
            created_s = rng.choice(group.creation_anchors_s) + rng.random() * burst_h * 3600
        else:
            created_s = self.start_ms / 1000 - rng.uniform(lo, hi) * 86400
        created_s = min(created_s, first_ms / 1000 - 60)
        if int(knobs["payment_group"]) > 0:
            if group.payment_left <= 0:
                group.payment = self.ids.payment()
                group.payment_left = int(knobs["payment_group"])
            group.payment_left -= 1
            payment = group.payment
        else:
            payment = tenant["payment"]
        return {"created_at": rfc3339_seconds(created_s), "payment_fingerprint": payment}


# --------------------------------------------------------------------------- events


def _arrival_times(plan: AccountPlan, rng: random.Random) -> Iterator[int]:
    args = plan.timing_args
    first, stop, rate = plan.first_ms, plan.stop_ms, plan.rate_per_s
    if plan.timing in ("poisson", "rotation"):
        return arrivals.poisson(rng, first, stop, rate)
    if plan.timing == "diurnal":
        return arrivals.diurnal(rng, first, stop, rate, args[0], args[1], args[2])
    if plan.timing == "sessions":
        return arrivals.sessions(rng, first, stop, rate, args[0], args[1])
    if plan.timing == "metronome":
        return arrivals.metronome(rng, first, stop, rate, args[0])
    if plan.timing == "once":
        return arrivals.limited(rng, first, stop, rate, int(args[0]))
    raise ValueError(f"unknown timing {plan.timing!r}")


def _account_events(plan: AccountPlan, seed: int) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """(ts ms, account index, event without event_id/ts) for one account, in ts order.

    The account index breaks ties in the fleet-wide merge, so events are never compared.
    """
    rng = random.Random(f"{seed}:account:{plan.index}")
    rand = rng.random
    gauss = rng.gauss
    getrandbits = rng.getrandbits
    exp = math.exp
    log = math.log
    tenant_id, account_id, index = plan.tenant_id, plan.account_id, plan.index
    clients = plan.clients
    n_clients = len(clients)
    account = plan.account
    send_prompt = plan.send_prompt
    main, cover, cover_share = plan.content, plan.cover, plan.cover_share
    throttle_ms, throttle_429 = plan.throttle_ms, plan.throttle_429_share
    sweep_position = int(rand() * len(TAXONOMY))
    first = True
    for ts_ms in _arrival_times(plan, rng):
        p = main if cover is None or first or rand() >= cover_share else cover
        first = False
        # --- request
        model = p.models[bisect_right(p.model_cum, rand())] if len(p.models) > 1 else p.models[0]
        n = p.n_values[int(rand() * len(p.n_values))] if rand() < p.n_share else 1
        tools = p.tool_min + int(rand() * p.tool_span) if rand() < p.tool_share else 0
        turn = 1 + int(-log(1.0 - rand()) * p.extra_turns_mean) if p.extra_turns_mean else 1
        max_tokens = p.max_tokens[int(rand() * len(p.max_tokens))]
        request = {
            "model": model,
            "endpoint": p.endpoint,
            "temperature": p.temperatures[int(rand() * len(p.temperatures))],
            "max_tokens": max_tokens,
            "n": n,
            "logprobs": rand() < p.logprobs_share,
            "stream": rand() < p.stream_share,
            "tool_count": tools,
            "turn": turn,
        }
        # --- prompt (classifier outputs and hashes only)
        if p.topic_sweep:
            sweep_position += 1
            topic = p.topics[sweep_position % len(p.topics)]
        else:
            topic = p.topics[bisect_right(p.topic_cum, rand())]
        if rand() < p.template_share:
            simhash = p.templates[int(rand() * len(p.templates))]
            for _ in range(int(rand() * (p.bit_flips + 1))):
                simhash ^= 1 << getrandbits(6)
        else:
            simhash = getrandbits(64)
        chars = int(exp(p.input_mu + p.input_sigma * gauss(0.0, 1.0)))
        jailbreak = rand() < p.jailbreak_share
        # --- response
        roll = rand()
        if ts_ms >= throttle_ms and rand() < throttle_429:
            status = 429
        elif roll < p.error_share:
            status = 529 if roll < p.error_share / 2 else 500
        elif roll < p.error_share + p.throttle_share:
            status = 429
        else:
            status = 200
        if status != 200:
            input_tokens = output_tokens = 0
            stop_reason = None
            latency_ms = 20 + int(rand() * 200)
        else:
            input_tokens = chars // 4 + (turn - 1) * 350 + tools * 180
            if rand() < p.refusal_share * (4.0 if jailbreak else 1.0):
                output_tokens, stop_reason = 20 + int(rand() * 80), "refusal"
            elif rand() < p.max_tokens_hit_share:
                output_tokens, stop_reason = max_tokens, "max_tokens"
            else:
                sampled = int(exp(p.output_mu + p.output_sigma * gauss(0.0, 1.0)))
                output_tokens = min(sampled, max_tokens - 1)
                stop_reason = "tool_use" if tools and rand() < 0.7 else "end_turn"
            output_tokens *= n
            latency_ms = 250 + int(rand() * 600) + int(output_tokens / n * (10 + rand() * 15))
        event: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "event_id": None,
            "ts": None,
            "tenant_id": tenant_id,
            "account_id": account_id,
            "request": request,
            "response": {
                "status": status,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "latency_ms": latency_ms,
                "stop_reason": stop_reason,
            },
        }
        if send_prompt:
            event["prompt"] = {
                "simhash": f"{simhash:016x}",
                "chars": chars,
                "topic": topic,
                "cot_request": rand() < p.cot_share,
                "jailbreak_score": (
                    0.7 + int(rand() * 2900) / 10000 if jailbreak else int(rand() * 600) / 10000
                ),
                "sysprompt_probe": rand() < p.sysprompt_probe_share,
            }
        if n_clients:
            event["client"] = clients[0] if n_clients == 1 else clients[int(rand() * n_clients)]
        event["account"] = account
        yield ts_ms, index, event

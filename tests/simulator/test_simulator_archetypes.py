"""Each archetype shows the statistical fingerprint it is meant to carry."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable
from datetime import datetime

from simulator.archetypes import TAXONOMY
from tests.simulator.runs import SimRun


def _epoch_s(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _share(events: list[dict], predicate: Callable[[dict], bool]) -> float:
    assert events, "no events to measure"
    return sum(1 for e in events if predicate(e)) / len(events)


def _age_days(event: dict) -> float:
    """How old the account was when it sent ``event``, in days."""
    return (_epoch_s(event["ts"]) - _epoch_s(event["account"]["created_at"])) / 86400


def _hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def test_small_tenants_have_one_to_three_keys(fleet: SimRun) -> None:
    keys = Counter(fleet.label_of[a]["tenant_id"] for a in fleet.accounts("small_tenant"))
    assert set(keys.values()) <= {1, 2, 3}
    assert len(keys) > 30


def test_tutoring_apps_mostly_ask_for_step_by_step_solutions(fleet: SimRun) -> None:
    events = fleet.archetype_events("tutoring_app")
    assert _share(events, lambda e: e["prompt"]["cot_request"]) > 0.6
    # and ordinary traffic does not
    ordinary = fleet.archetype_events("small_tenant")
    assert _share(ordinary, lambda e: e["prompt"]["cot_request"]) < 0.1


def test_hydra_coerces_reasoning_traces_with_output_heavy_near_duplicates(fleet: SimRun) -> None:
    events = fleet.archetype_events("hydra")
    assert _share(events, lambda e: e["prompt"]["cot_request"]) > 0.85
    assert _share(events, lambda e: e["response"]["stop_reason"] == "max_tokens") > 0.25
    ok = [e for e in events if e["response"]["status"] == 200]
    assert statistics.median(e["response"]["output_tokens"] for e in ok) > 2000
    # a handful of template hashes; most prompts are a few bit flips away from one of them
    for campaign in {fleet.label_of[e["account_id"]]["campaign_id"] for e in events}:
        mine = [e["prompt"]["simhash"] for e in events
                if fleet.label_of[e["account_id"]]["campaign_id"] == campaign]  # fmt: skip
        bases = [h for h, _ in Counter(mine).most_common(4)]
        near = sum(1 for h in mine if min(_hamming(h, b) for b in bases) <= 6)
        assert near / len(mine) > 0.7


def test_hydra_keys_are_fresh_proxied_and_share_one_tls_fingerprint(fleet: SimRun) -> None:
    for account_id in fleet.accounts("hydra"):
        assert 0 < _age_days(fleet.events_of[account_id][0]) < 4
    events = fleet.archetype_events("hydra")
    by_campaign: dict[str, set[str]] = {}
    for e in events:
        campaign = fleet.label_of[e["account_id"]]["campaign_id"]
        by_campaign.setdefault(campaign, set()).add(e["client"]["tls_fingerprint"])
    assert all(len(fingerprints) == 1 for fingerprints in by_campaign.values())
    assert {e["client"]["asn"] for e in events} <= {
        45102, 132203, 136907, 20473, 9009, 4837, 45090, 396982, 55990, 38001,
    }  # fmt: skip
    benign_ages = [_age_days(fleet.events_of[a][0]) for a in fleet.accounts("small_tenant")]
    assert statistics.median(benign_ages) > 30


def test_swarm_keys_each_send_only_a_few_dozen_requests_per_day(fleet: SimRun) -> None:
    days = fleet.sim.duration_s / 86400
    per_day = [len(fleet.events_of[a]) / days for a in fleet.accounts("swarm")]
    assert len(per_day) >= 30
    assert statistics.mean(per_day) < 60
    assert _share(fleet.archetype_events("swarm"), lambda e: e["prompt"]["cot_request"]) > 0.6


def test_low_and_slow_stays_under_a_per_key_hourly_threshold(fleet: SimRun) -> None:
    hours = fleet.sim.duration_s / 3600
    per_hour = [len(fleet.events_of[a]) / hours for a in fleet.accounts("low_and_slow")]
    assert max(per_hour) < 30


def test_batch_jobs_tick_like_a_metronome_on_one_template(fleet: SimRun) -> None:
    accounts = fleet.accounts("batch_job")
    assert accounts
    for account_id in accounts:
        times = [_epoch_s(e["ts"]) for e in fleet.events_of[account_id]]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert statistics.pstdev(gaps) / statistics.mean(gaps) < 0.05
        hashes = [e["prompt"]["simhash"] for e in fleet.events_of[account_id]]
        base = Counter(hashes).most_common(1)[0][0]
        assert all(_hamming(h, base) <= 2 for h in hashes)


def test_enterprise_keys_share_egress_card_and_user_agent(fleet: SimRun) -> None:
    events = fleet.archetype_events("enterprise")
    assert len({e["account_id"] for e in events}) >= 10
    assert len({e["client"]["ip"] for e in events}) == 1
    assert len({e["client"]["user_agent"] for e in events}) == 1
    assert len({e["account"]["payment_fingerprint"] for e in events}) == 1


def test_vpn_developers_from_unrelated_tenants_share_exits(fleet: SimRun) -> None:
    tenants_per_ip: dict[str, set[str]] = {}
    for e in fleet.archetype_events("vpn_developer"):
        tenants_per_ip.setdefault(e["client"]["ip"], set()).add(e["tenant_id"])
    assert len(tenants_per_ip) <= 6
    assert max(len(t) for t in tenants_per_ip.values()) >= 3


def test_research_labs_sample_several_completions_with_logprobs(fleet: SimRun) -> None:
    events = fleet.archetype_events("research_lab")
    assert _share(events, lambda e: e["request"]["n"] > 1) > 0.6
    assert _share(events, lambda e: e["request"]["logprobs"]) > 0.6


def test_capability_sweep_walks_the_taxonomy_with_samples_and_logprobs(fleet: SimRun) -> None:
    events = fleet.archetype_events("capability_sweep")
    assert {e["prompt"]["topic"] for e in events} == set(TAXONOMY)
    assert _share(events, lambda e: e["request"]["n"] > 1) > 0.7
    assert _share(events, lambda e: e["request"]["logprobs"]) > 0.7


def test_agent_platforms_hold_long_tool_using_conversations(fleet: SimRun) -> None:
    events = fleet.archetype_events("agent_platform")
    assert statistics.mean(e["request"]["turn"] for e in events) > 5
    assert _share(events, lambda e: e["request"]["tool_count"] > 0) > 0.8
    assert _share(events, lambda e: e["response"]["stop_reason"] == "tool_use") > 0.4


def test_eval_harness_sends_broad_single_turn_prompts_once(fleet: SimRun) -> None:
    for account_id in fleet.accounts("eval_harness"):
        events = fleet.events_of[account_id]
        assert all(e["request"]["turn"] == 1 for e in events)
        assert len({e["prompt"]["topic"] for e in events}) >= 10
        assert len(events) <= 4000  # one pass, then silent


def test_new_customers_signed_up_yesterday_and_ship_at_volume(fleet: SimRun) -> None:
    for account_id in fleet.accounts("new_customer"):
        assert 0.4 < _age_days(fleet.events_of[account_id][0]) < 2
    hours = fleet.sim.duration_s / 3600
    per_hour = [len(fleet.events_of[a]) / hours for a in fleet.accounts("new_customer")]
    assert statistics.median(per_hour) > 50


def test_jailbreak_probes_score_high_and_probe_hidden_instructions(fleet: SimRun) -> None:
    events = fleet.archetype_events("jailbreak_probe")
    assert _share(events, lambda e: e["prompt"]["jailbreak_score"] >= 0.7) > 0.4
    assert _share(events, lambda e: e["prompt"]["sysprompt_probe"]) > 0.3
    benign = fleet.archetype_events("small_tenant")
    assert _share(benign, lambda e: e["prompt"]["jailbreak_score"] >= 0.7) < 0.02


def test_key_rotation_replaces_throttled_keys_with_new_ones(fleet: SimRun) -> None:
    accounts = fleet.accounts("key_rotation")
    starts = sorted(_epoch_s(fleet.events_of[a][0]["ts"]) for a in accounts)
    # new keys keep appearing well after the campaign began
    assert starts[-1] - starts[0] > fleet.sim.duration_s / 3
    throttled = 0
    for account_id in accounts:
        events = fleet.events_of[account_id]
        statuses = [e["response"]["status"] for e in events]
        if 429 in statuses:
            throttled += 1
            # throttling comes after the key has been used for a while
            when_429 = statistics.mean(i for i, s in enumerate(statuses) if s == 429)
            when_ok = statistics.mean(i for i, s in enumerate(statuses) if s == 200)
            assert when_429 > when_ok
    assert throttled / len(accounts) > 0.8


def test_proxy_resellers_mix_attack_and_ordinary_traffic(fleet: SimRun) -> None:
    events = fleet.archetype_events("proxy_reseller")
    cot = _share(events, lambda e: e["prompt"]["cot_request"])
    assert 0.2 < cot < 0.7


def test_gateways_omit_optional_groups_when_told(make_run: Callable[..., SimRun]) -> None:
    run = make_run(
        "demo",
        duration_s=300.0,
        overrides={"gateway.omit_client_share": 1.0, "gateway.omit_prompt_share": 1.0},
    )
    benign = [e for e in run.events if run.label_of[e["account_id"]]["label"] == "benign"]
    assert benign and all("client" not in e and "prompt" not in e for e in benign)
    attack = [e for e in run.events if run.label_of[e["account_id"]]["label"] == "attack"]
    assert attack and all("client" in e and "prompt" in e for e in attack)


def test_demo_hydra_is_obvious(demo: SimRun) -> None:
    events = demo.archetype_events("hydra")
    assert 40 <= len(demo.accounts("hydra")) <= 60
    assert _share(events, lambda e: e["prompt"]["cot_request"]) >= 0.9
    for account_id in demo.accounts("hydra"):
        mine = demo.events_of[account_id]
        start = _epoch_s(mine[0]["ts"])
        in_ten_minutes = sum(1 for e in mine if _epoch_s(e["ts"]) - start < 600)
        assert in_ten_minutes >= 20
    assert len(demo.events) < 50_000

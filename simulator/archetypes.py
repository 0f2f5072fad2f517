"""Default knobs of every account archetype the simulator knows.

A scenario population starts from its archetype's defaults here and overrides any knob.
Units: rates are requests per account per hour of event time, ``start_at`` and
``join_window`` are fractions of the scenario duration, ``*_share`` are probabilities
per request unless the name says per tenant, ``[median, sigma]`` pairs are lognormal.

Attack defaults are grounded in disclosed campaigns: ~24,000 fraudulent accounts for
16 million exchanges (~670 per account), ~28.8 million exchanges over ~25,000 accounts in
six weeks (a few dozen requests per account per day), 100,000+ prompts coercing reasoning
traces, and proxy resellers mixing attack traffic with their ordinary customers'.
"""

from __future__ import annotations

from typing import Any

ROLES = ("benign", "attack")

#: The gateway topic classifier's taxonomy; capability sweeps walk all of it.
TAXONOMY = (
    "coding", "math", "reasoning", "agentic", "chat", "writing", "science", "other",
    "law", "medicine", "finance", "translation", "data_analysis", "history",
)  # fmt: skip

#: Scenario-level ``[gateway]`` knobs; benign populations inherit them.
GATEWAY_DEFAULTS: dict[str, Any] = {
    "omit_client_share": 0.03,  # share of benign tenants whose gateway sends no client group
    "omit_prompt_share": 0.02,  # share of benign tenants whose gateway sends no prompt group
}

_BASE: dict[str, Any] = {
    # --- size and grouping
    "accounts": 0,
    "keys_per_tenant": [1, 3],
    "campaigns": 1,  # attack only: accounts are split into this many independent campaigns
    # --- timing (event time)
    "timing": "poisson",  # poisson | diurnal | sessions | metronome | once | rotation
    "rate_per_hour": 10.0,
    "rate_sigma": 0.6,  # lognormal spread of the per-account rate around rate_per_hour
    "start_at": [0.0, 0.0],  # fraction of the duration when the population becomes active
    "join_window": 0.0,  # accounts join over this fraction of the duration after start_at
    "stop_at": 1.0,  # fraction of the duration after which the population is silent
    "diurnal_amplitude": 0.6,
    "peak_hour": 20.0,  # local hour of peak load
    "session_minutes": 40.0,  # mean length of a work session
    "gap_minutes": 60.0,  # mean pause between work sessions
    "metronome_jitter_s": 0.05,
    "once_requests": [2000, 4000],  # timing = once: requests sent in one pass, then silent
    "rotation_slots": 8,  # timing = rotation: keys in use at the same time
    "throttle_after": 0.6,  # timing = rotation: fraction of a key's life before 429s start
    "throttle_429_share": 0.7,  # timing = rotation: share of 429s once throttled
    # --- request content
    "models": {"frontier-large": 0.3, "frontier-medium": 0.5, "frontier-small": 0.2},
    "endpoint": "messages",
    "topics": {
        "coding": 3,
        "chat": 4,
        "writing": 2,
        "reasoning": 1,
        "math": 1,
        "science": 1,
        "other": 1,
        "agentic": 0.5,
    },  # fmt: skip
    "topic_sweep": False,  # walk the whole taxonomy in order instead of sampling topics
    "cot_share": 0.03,
    "template_share": 0.05,  # share of prompts built from one of the population's templates
    "templates": 3,  # base 64-bit simhashes shared by the population (per campaign)
    "bit_flips": 3,  # at most this many random bit flips of a template per prompt
    "n_share": 0.0,
    "n_values": [2, 4, 8],
    "logprobs_share": 0.01,
    "tool_share": 0.05,
    "tool_count": [1, 6],
    "turn_mean": 2.0,
    "stream_share": 0.6,
    "temperatures": [0.0, 0.3, 0.7, 1.0],
    "max_tokens": [1024, 2048, 4096],
    "input_chars": [1200, 1.0],
    "output_tokens": [350, 0.9],
    "max_tokens_hit_share": 0.02,
    "jailbreak_share": 0.002,  # share of prompts the classifier scores as likely jailbreaks
    "sysprompt_probe_share": 0.001,
    "refusal_share": 0.005,
    "error_share": 0.004,  # 5xx responses
    "throttle_share": 0.002,  # background 429s
    "cover_share": 0.0,  # attack only: share of requests that look like ordinary traffic
    # --- identity and infrastructure
    "network": "residential",  # residential | hosting | vpn | proxy | corporate
    "ip_pool": 0,  # 0: each tenant has its own egress; N: the population shares N /24 prefixes
    "shared_client": False,  # every account presents the same user agent and TLS fingerprint
    "user_agents": [
        "anthropic-python/0.40.0",
        "openai-python/1.54.0",
        "python-httpx/0.27.2",
        "node-fetch/3.3",
        "Go-http-client/2.0",
        "curl/8.5.0",
        "okhttp/4.12.0",
    ],  # fmt: skip
    "payment_group": 0,  # 0: one card per tenant; N: consecutive groups of N accounts share one
    "created_days_ago": [30.0, 900.0],
    "creation_burst_hours": 0.0,  # >0: accounts created within hours of one another
    "omit_client_share": 0.0,
    "omit_prompt_share": 0.0,
}


def _archetype(role: str, **overrides: Any) -> dict[str, Any]:
    knobs = dict(_BASE)
    for key in overrides:
        if key not in knobs:
            raise KeyError(f"archetype default {key!r} is not a known knob")
    knobs.update(overrides)
    knobs["role"] = role
    return knobs


ARCHETYPES: dict[str, dict[str, Any]] = {
    # ---------------------------------------------------------------- benign fleet
    "small_tenant": _archetype("benign", rate_per_hour=10.0, rate_sigma=1.0),
    "chat_app": _archetype(
        "benign",
        timing="diurnal",
        keys_per_tenant=[4, 12],
        rate_per_hour=130.0,
        rate_sigma=0.5,
        topics={"chat": 8, "writing": 2, "other": 1, "science": 0.5, "math": 0.3},
        turn_mean=4.0,
        models={"frontier-medium": 0.6, "frontier-small": 0.4},
        template_share=0.3,  # the app's system prompt dominates short prompts
        stream_share=0.95,
        output_tokens=[250, 0.7],
        jailbreak_share=0.01,  # end users try things
    ),
    "ide_assistant": _archetype(
        "benign",
        timing="sessions",
        keys_per_tenant=[1, 2],
        rate_per_hour=200.0,  # while a session is on
        session_minutes=45.0,
        gap_minutes=60.0,
        topics={"coding": 10, "reasoning": 0.5, "other": 0.5},
        tool_share=0.4,
        turn_mean=5.0,
        input_chars=[6000, 0.8],  # files in context
        output_tokens=[400, 0.8],
        temperatures=[0.0, 0.2],
        user_agents=["vscode-ext/1.94", "jetbrains-ai/2024.3", "neovim-llm/0.9"],
    ),
    "agent_platform": _archetype(
        "benign",
        keys_per_tenant=[1, 4],
        rate_per_hour=200.0,
        topics={"agentic": 6, "coding": 3, "data_analysis": 1},
        tool_share=0.95,
        tool_count=[4, 24],
        turn_mean=14.0,
        input_chars=[9000, 0.7],
        output_tokens=[300, 0.8],
        stream_share=0.2,
        network="hosting",
    ),
    "tutoring_app": _archetype(
        "benign",
        timing="diurnal",
        keys_per_tenant=[1, 3],
        rate_per_hour=90.0,
        topics={"math": 6, "science": 3, "reasoning": 1, "writing": 0.5},
        cot_share=0.75,  # look-alike: worked step-by-step solutions are the product
        template_share=0.2,
        output_tokens=[900, 0.6],
        max_tokens_hit_share=0.05,
        turn_mean=2.5,
        peak_hour=17.0,
    ),
    "eval_harness": _archetype(
        "benign",
        timing="once",
        keys_per_tenant=[1, 1],
        rate_per_hour=1500.0,
        once_requests=[2000, 4000],
        start_at=[0.05, 0.6],
        topics={topic: 1 for topic in TAXONOMY},  # broad on purpose
        turn_mean=1.0,
        tool_share=0.0,
        temperatures=[0.0],
        template_share=0.0,
        network="hosting",
        user_agents=["lm-eval-harness/0.4", "inspect-ai/0.3", "python-httpx/0.27.2"],
    ),
    "research_lab": _archetype(
        "benign",
        keys_per_tenant=[2, 6],
        rate_per_hour=40.0,
        n_share=0.8,
        n_values=[4, 8, 16],
        logprobs_share=0.85,
        topics={"reasoning": 3, "math": 2, "science": 2, "coding": 2, "writing": 1},
        cot_share=0.15,
        temperatures=[0.7, 1.0],
        turn_mean=1.2,
        network="corporate",
    ),
    "batch_job": _archetype(
        "benign",
        timing="metronome",
        keys_per_tenant=[1, 2],
        rate_per_hour=360.0,  # one request every 10 s, like a cron-driven worker
        rate_sigma=0.5,
        endpoint="batch",
        topics={"data_analysis": 5, "writing": 2, "other": 1},
        template_share=1.0,  # one template, values filled in
        templates=1,
        bit_flips=1,
        turn_mean=1.0,
        stream_share=0.0,
        temperatures=[0.0],
        output_tokens=[200, 0.3],
        network="hosting",
    ),
    "enterprise": _archetype(
        "benign",
        keys_per_tenant=[300, 300],  # one tenant, hundreds of keys behind one egress
        rate_per_hour=24.0,
        rate_sigma=0.9,
        ip_pool=1,
        shared_client=True,
        network="corporate",
        user_agents=["corp-llm-gateway/3.2"],
        payment_group=100000,  # one card for the whole fleet of keys
    ),
    "vpn_developer": _archetype(
        "benign",
        keys_per_tenant=[1, 2],
        rate_per_hour=14.0,
        network="vpn",
        ip_pool=6,  # a handful of VPN exits shared by unrelated tenants
    ),
    "new_customer": _archetype(
        "benign",
        keys_per_tenant=[1, 3],
        rate_per_hour=150.0,  # ships at full volume the day after signing up
        rate_sigma=0.5,
        created_days_ago=[0.5, 1.5],
        network="hosting",
    ),
    # ---------------------------------------------------------------- attack campaigns
    "hydra": _archetype(
        "attack",
        keys_per_tenant=[1, 4],
        rate_per_hour=100.0,
        rate_sigma=0.3,
        start_at=[0.1, 0.2],
        join_window=0.15,
        models={"frontier-large": 1.0},
        topics={"reasoning": 4, "math": 3, "coding": 3, "science": 2},
        cot_share=0.92,
        template_share=0.85,
        templates=4,
        bit_flips=3,
        max_tokens=[8192, 16000],
        input_chars=[1600, 0.4],
        output_tokens=[5000, 0.5],
        max_tokens_hit_share=0.4,
        turn_mean=1.0,
        tool_share=0.0,
        stream_share=0.9,
        network="proxy",
        ip_pool=20,
        shared_client=True,
        user_agents=["python-httpx/0.27.2"],
        payment_group=25,
        created_days_ago=[0.2, 3.0],
        creation_burst_hours=6.0,
    ),
    "capability_sweep": _archetype(
        "attack",
        keys_per_tenant=[2, 6],
        rate_per_hour=60.0,
        start_at=[0.15, 0.3],
        join_window=0.05,
        topic_sweep=True,
        n_share=0.9,
        n_values=[4, 8],
        logprobs_share=0.9,
        cot_share=0.3,
        template_share=0.6,
        templates=14,
        turn_mean=1.0,
        tool_share=0.0,
        temperatures=[1.0],
        output_tokens=[700, 0.6],
        network="hosting",
        ip_pool=6,
        created_days_ago=[2.0, 20.0],
    ),
    "low_and_slow": _archetype(
        "attack",
        keys_per_tenant=[1, 2],
        rate_per_hour=12.0,  # under any sensible per-key threshold
        rate_sigma=0.3,
        start_at=[0.0, 0.05],
        join_window=0.1,
        cot_share=0.7,
        template_share=0.7,
        templates=3,
        topics={"reasoning": 3, "math": 2, "coding": 2},
        output_tokens=[2500, 0.5],
        max_tokens=[8192],
        max_tokens_hit_share=0.15,
        turn_mean=1.0,
        network="residential",
        ip_pool=40,
        created_days_ago=[20.0, 200.0],
    ),
    "swarm": _archetype(
        "attack",
        keys_per_tenant=[1, 1],
        rate_per_hour=1.25,  # ~30 requests per key per day
        rate_sigma=0.3,
        start_at=[0.0, 0.0],
        join_window=0.5,
        cot_share=0.8,
        template_share=0.8,
        templates=6,
        bit_flips=4,
        topics={"reasoning": 3, "math": 3, "coding": 2, "science": 1},
        output_tokens=[3000, 0.5],
        max_tokens=[8192],
        max_tokens_hit_share=0.2,
        turn_mean=1.0,
        network="proxy",
        ip_pool=300,
        payment_group=40,
        created_days_ago=[3.0, 40.0],
    ),
    "jailbreak_probe": _archetype(
        "attack",
        keys_per_tenant=[1, 3],
        rate_per_hour=30.0,
        start_at=[0.2, 0.4],
        join_window=0.1,
        jailbreak_share=0.6,
        sysprompt_probe_share=0.5,
        refusal_share=0.35,
        template_share=0.5,
        templates=8,
        topics={"other": 3, "chat": 2, "coding": 1, "agentic": 1},
        turn_mean=1.5,
        network="hosting",
        ip_pool=4,
        created_days_ago=[1.0, 10.0],
    ),
    "key_rotation": _archetype(
        "attack",
        timing="rotation",
        keys_per_tenant=[1, 3],
        rate_per_hour=240.0,  # per key while it is in use
        rate_sigma=0.2,
        start_at=[0.1, 0.15],
        rotation_slots=8,
        throttle_after=0.6,
        throttle_429_share=0.7,
        models={"frontier-large": 1.0},
        cot_share=0.85,
        template_share=0.8,
        templates=3,
        topics={"reasoning": 3, "math": 3, "coding": 2},
        output_tokens=[4000, 0.5],
        max_tokens=[8192],
        max_tokens_hit_share=0.3,
        turn_mean=1.0,
        network="proxy",
        ip_pool=10,
        shared_client=True,
        user_agents=["python-requests/2.32.3"],
        created_days_ago=[0.1, 2.0],
        creation_burst_hours=12.0,
    ),
    "proxy_reseller": _archetype(
        "attack",
        keys_per_tenant=[2, 5],
        rate_per_hour=150.0,
        start_at=[0.0, 0.05],
        join_window=0.05,
        cover_share=0.6,  # most of the traffic is the reseller's ordinary customers
        cot_share=0.9,
        template_share=0.8,
        templates=4,
        topics={"reasoning": 3, "math": 2, "coding": 3},
        output_tokens=[3500, 0.5],
        max_tokens=[8192],
        max_tokens_hit_share=0.25,
        turn_mean=1.0,
        network="hosting",
        ip_pool=3,
        created_days_ago=[30.0, 300.0],
    ),
}

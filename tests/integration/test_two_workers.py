"""Two workers in one consumer group: each account's state lives on exactly one of them."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from schemas.alert import Alert
from tests.integration.conftest import Deployment, WorkerProcess, free_port
from tests.traffic import by_time, chatter, encode, harvester

pytestmark = pytest.mark.integration


def test_two_workers_split_accounts_and_alert_once(
    deployment: Deployment, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    # Each worker has its own state directory (and so its own embedded ClickHouse).
    first = start_worker(DISTILLWATCH_STATE_DIR=str(tmp_path / "w1"))
    second = start_worker(DISTILLWATCH_STATE_DIR=str(tmp_path / "w2"),
                          DISTILLWATCH_WEB_PORT=str(free_port()))
    partitions = deployment.settings.topic_partitions

    def settled(_: dict[str, object]) -> bool:
        a, b = first.health(), second.health()
        if not a or not b or not a["partitions"] or not b["partitions"]:
            return False
        return sorted(a["partitions"] + b["partitions"]) == list(range(partitions))

    second.wait_until(settled, timeout_s=120)

    hydras = [harvester("org_evil", f"key_h{i}") for i in range(4)]
    chats = [chatter(f"org_{i}", f"key_c{i}") for i in range(30)]
    events = by_time(*hydras, *chats)
    deployment.produce([(e["account_id"].encode(), encode(e)) for e in events])

    def total(field: str) -> int:
        return sum(int((w.health() or {}).get(field, 0)) for w in (first, second))

    first.wait_until(lambda _: total("events_detected") == len(events), timeout_s=120)
    a, b = first.health(), second.health()
    assert a and b and a["events_detected"] > 0 and b["events_detected"] > 0, "both must work"
    # No account's state is split: the accounts tracked add up to the distinct accounts.
    assert a["accounts_tracked"] + b["accounts_tracked"] == len(hydras) + len(chats)

    alerts = [Alert.model_validate_json(m.value())
              for m in deployment.consume(deployment.settings.topic_alerts, expected=4)]
    firing = [x for x in alerts if x.status == "firing" and x.severity == "low"]
    assert sorted(x.account_id or "" for x in firing) == [f"key_h{i}" for i in range(4)]


def test_two_workers_link_a_hydra_across_tenants(
    deployment: Deployment, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    import json
    from datetime import datetime, timedelta

    from simulator.generate import generate, write_scenario
    from simulator.scenario import load_scenario

    write_scenario(generate(load_scenario("demo"), seed=5), tmp_path / "sc", progress=False)
    labels = [json.loads(line) for line in (tmp_path / "sc" / "labels.jsonl").open()]
    hydra = {r["account_id"] for r in labels if r["archetype"] == "hydra"}
    benign = {r["account_id"] for r in labels if r["label"] == "benign"}

    first = start_worker(DISTILLWATCH_STATE_DIR=str(tmp_path / "w1"))
    second = start_worker(DISTILLWATCH_STATE_DIR=str(tmp_path / "w2"),
                          DISTILLWATCH_WEB_PORT=str(free_port()))
    partitions = deployment.settings.topic_partitions
    second.wait_until(lambda _: sorted(
        (first.health() or {}).get("partitions", []) + (second.health() or {}).get(
            "partitions", [])) == list(range(partitions)), timeout_s=120)
    # After the sync Faust still seeks and resumes each partition: let the group settle,
    # or records produced now may reach the previous owner before the hand-off ends.
    time.sleep(5)

    lines = (tmp_path / "sc" / "events.jsonl").read_bytes().splitlines()
    # A last event two hours later moves every stage past the scenario, campaigns included.
    closing = chatter("org_late", "key_late", n=1, start=datetime.fromisoformat(
        json.loads(lines[-1])["ts"]) + timedelta(hours=2))[0]
    lines.append(encode(closing))
    deployment.produce([(json.loads(line)["account_id"].encode(), line) for line in lines])
    def both_done(_: dict[str, object]) -> bool:
        healths = [w.health() or {} for w in (first, second)]
        seen.append(healths)
        return sum(int(h.get("events_detected", 0)) for h in healths) == len(lines)

    seen: list[list[dict[str, object]]] = []
    try:
        first.wait_until(both_done, timeout_s=180)
    except AssertionError as exc:
        raise AssertionError(f"both workers: {seen[-1]}") from exc
    def campaign_alerts() -> list[Alert]:
        everything = deployment.consume(deployment.settings.topic_alerts, expected=10**9,
                                        timeout_s=10)
        return [a for a in (Alert.model_validate_json(m.value()) for m in everything)
                if a.kind == "campaign"]

    deadline = time.monotonic() + 120
    while not any(a.status == "resolved" for a in campaign_alerts()):
        assert time.monotonic() < deadline, "campaigns never resolved after the closing event"
    campaigns = [a for a in campaign_alerts() if a.status == "firing"]
    named = {m.account_id for a in campaigns for m in a.accounts}
    assert campaigns and all(a.campaign_id and a.dedup_key.startswith("campaign:")
                             for a in campaigns)
    attack = {r["account_id"] for r in labels if r["label"] == "attack"}
    archetype = {r["account_id"]: r["archetype"] for r in labels}
    assert len(named & hydra) >= 0.9 * len(hydra)
    assert len(named & attack) >= 0.95 * len(named), sorted(
        archetype[a] for a in named & benign)
    shared_infrastructure = {"enterprise", "vpn_developer"}
    assert not {a for a in named if archetype[a] in shared_infrastructure}
    print("benign named:", sorted(archetype[a] for a in named & benign), "of", len(named))

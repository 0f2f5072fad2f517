"""The pipeline end to end: the real broker, worker processes, the embedded ClickHouse."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from schemas.alert import Alert
from tests.integration.conftest import Deployment, WorkerProcess
from tests.traffic import by_time, chatter, encode, harvester

pytestmark = pytest.mark.integration


def test_attack_raises_alert_and_every_event_reaches_clickhouse(
    deployment: Deployment, start_worker: Callable[..., WorkerProcess]
) -> None:
    events = by_time(
        harvester("org_evil", "key_hydra_1"),
        *(chatter(f"org_{i}", f"key_chat_{i}") for i in range(5)),
    )
    worker = start_worker()
    deployment.produce([(e["account_id"].encode(), encode(e)) for e in events],
                       compression="lz4")

    alerts = [
        Alert.model_validate_json(m.value())
        for m in deployment.consume(deployment.settings.topic_alerts, expected=1)
    ]
    firing = [a for a in alerts if a.status == "firing"]
    assert {a.account_id for a in firing} == {"key_hydra_1"}
    alert = firing[0]
    assert alert.dedup_key == "account:org_evil:key_hydra_1"
    assert alert.kind == "account" and alert.reasons and alert.score >= 0.5
    assert alert.first_event_time <= alert.event_time <= alert.detected_at

    health = worker.wait_until(lambda h: h["events_detected"] == len(events)
                               and h["clickhouse_pending"] == 0)
    memory = worker.memory()
    assert memory is not None
    assert memory["accounts"]["engine"] == health["accounts_tracked"] == 6
    assert memory["accounts"]["link_observer"] == 6
    assert 0 < memory["process"]["anonymous"] < memory["process"]["rss"]
    assert memory["rocksdb"]["memtables"] > 0  # the drain's snapshots are written there
    # Asked while the worker holds the embedded engine: routed to it, read-only.
    rows = deployment.sql(
        "SELECT account_id, sum(requests) AS n, sum(cot_requests) AS cot "
        "FROM distillwatch.account_minute GROUP BY account_id ORDER BY account_id"
    )
    counted = {r["account_id"]: r["n"] for r in rows}
    assert sum(counted.values()) == len(events)
    assert counted["key_hydra_1"] == 120
    stored = deployment.sql("SELECT alert_id, status FROM distillwatch.alerts FINAL")
    assert {r["alert_id"] for r in stored} == {a.alert_id for a in alerts}

    # Writes are refused through the routed path.
    refused = Deployment(env=deployment.env, settings=deployment.settings)
    with pytest.raises(AssertionError, match="readonly|READONLY"):
        refused.sql("INSERT INTO distillwatch.dead_letters (reason) VALUES ('x')")


def test_clean_stop_flushes_everything_buffered(
    deployment: Deployment, start_worker: Callable[..., WorkerProcess]
) -> None:
    # A flush interval far longer than the test: only the shutdown flush can write the rows.
    worker = start_worker(DISTILLWATCH_CLICKHOUSE_FLUSH_INTERVAL_S="3600")
    events = by_time(*(chatter(f"org_{i}", f"key_{i}", n=40) for i in range(10)))
    deployment.produce([(e["account_id"].encode(), encode(e)) for e in events],
                       compression="snappy")
    health = worker.wait_until(lambda h: h["events_detected"] == len(events))
    assert health["clickhouse_pending"] > 0
    assert worker.stop() == 0
    rows = deployment.sql("SELECT sum(requests) AS n FROM distillwatch.account_minute")
    assert rows[0]["n"] == len(events)


@pytest.mark.parametrize("backlog", [False, True], ids=["live", "backlog"])
def test_offline_score_and_streaming_give_the_same_alerts(
    deployment: Deployment, start_worker: Callable[..., WorkerProcess], tmp_path: Path,
    backlog: bool,
) -> None:
    from simulator.generate import generate, write_scenario
    from simulator.scenario import load_scenario

    # The backlog is three hours of the demo (71 MB of events): more than the worker takes
    # from its input at once, so the input partitions are read unevenly.
    scenario = load_scenario("demo", {"duration": "3h"} if backlog else None)
    write_scenario(generate(scenario, seed=11), tmp_path / "sc", progress=False)
    events_path = tmp_path / "sc" / "events.jsonl"
    # A live stream has no end; this one gets a last, ordinary event two hours of event time
    # later, so that both paths move past every episode and campaign and resolve them.
    last = json.loads(events_path.read_bytes().splitlines()[-1])
    closing = chatter("org_late", "key_late", n=1,
                      start=datetime.fromisoformat(last["ts"]) + timedelta(hours=2))[0]
    with events_path.open("ab") as handle:
        handle.write(encode(closing) + b"\n")
    offline_path = tmp_path / "offline.jsonl"
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "streams", "score", "--input", str(events_path),
         "--output", str(offline_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    offline = [Alert.model_validate_json(line) for line in offline_path.read_text().splitlines()]
    assert any(a.status == "firing" for a in offline), "the demo scenario must raise alerts"
    offline_accounts = [a for a in offline if a.kind == "account"]
    offline_campaigns = [a for a in offline if a.kind == "campaign"]
    assert offline_campaigns, "the demo scenario's hydra must be linked into a campaign"

    lines = events_path.read_bytes().splitlines()
    if backlog:
        # A replay: the three hours wait in the input topic before the worker starts, in
        # gateway batches spread over the partitions, which are then read unevenly.
        batches = [b"[" + b",".join(lines[i:i + 50]) + b"]" for i in range(0, len(lines), 50)]
        deployment.produce([(str(n).encode(), value) for n, value in enumerate(batches)],
                           compression="zstd")
        worker = start_worker()
    else:
        worker = start_worker()
        deployment.produce([(json.loads(line)["account_id"].encode(), line) for line in lines],
                           compression="zstd")
    worker.wait_until(lambda h: h["events_detected"] == len(lines), timeout_s=300)
    streamed = [
        Alert.model_validate_json(m.value())
        for m in deployment.consume(deployment.settings.topic_alerts,
                                    expected=len(offline_accounts), timeout_s=90)
    ]

    def comparable(alerts: list[Alert]) -> list[str]:
        return sorted(a.model_dump_json(exclude={"detected_at"}) for a in alerts
                      if a.kind == "account")

    # Account alerts, field for field: the worker hands calls to the engine in event-time
    # order across its partitions (streams/ordering.py), the order `score` uses, so even
    # the per-cohort models that learn across accounts see the same sequence.
    assert comparable(streamed) == comparable(offline_accounts)

    # Campaign alerts come out of three stages on three topics, and their ticks may fall
    # differently; they must name the same accounts.
    def named(alerts: list[Alert]) -> set[str]:
        return {m.account_id for a in alerts if a.kind == "campaign" and a.status == "firing"
                for m in a.accounts}

    offline_named, streamed_named = named(offline), named(streamed)
    overlap = len(offline_named & streamed_named) / len(offline_named | streamed_named)
    assert overlap >= 0.95, (len(offline_named), len(streamed_named), overlap)

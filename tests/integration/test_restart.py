"""A worker restarts into its state: account snapshots in RocksDB and the changelog topic."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from schemas.alert import Alert
from tests.integration.conftest import Deployment, WorkerProcess, free_port
from tests.traffic import chatter, encode

pytestmark = pytest.mark.integration


def _scenario(tmp_path: Path) -> list[bytes]:
    """The demo scenario's events, plus a late ordinary event that resolves every episode."""
    from simulator.generate import generate, write_scenario
    from simulator.scenario import load_scenario

    write_scenario(generate(load_scenario("demo"), seed=5), tmp_path / "sc", progress=False)
    lines = (tmp_path / "sc" / "events.jsonl").read_bytes().splitlines()
    last = json.loads(lines[-1])
    closing = chatter("org_late", "key_late", n=1,
                      start=datetime.fromisoformat(last["ts"]) + timedelta(hours=2))[0]
    return [*lines, encode(closing)]


def _offline(lines: list[bytes], tmp_path: Path) -> list[Alert]:
    events_path, out = tmp_path / "all.jsonl", tmp_path / "offline.jsonl"
    events_path.write_bytes(b"\n".join(lines) + b"\n")
    done = subprocess.run(
        [sys.executable, "-m", "streams", "score", "--input", str(events_path),
         "--output", str(out)], capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return [Alert.model_validate_json(line) for line in out.read_text().splitlines()]


def _account_alerts(alerts: list[Alert]) -> list[str]:
    return sorted(a.model_dump_json(exclude={"detected_at"}) for a in alerts
                  if a.kind == "account")


@pytest.mark.parametrize("new_machine", [False, True], ids=["same-disk", "new-machine"])
def test_restarted_worker_resumes_its_accounts(
    deployment: Deployment, start_worker: Callable[..., WorkerProcess], tmp_path: Path,
    new_machine: bool,
) -> None:
    lines = _scenario(tmp_path)
    offline = _offline(lines, tmp_path)
    assert _account_alerts(offline), "the demo scenario must raise account alerts"

    # The first half, cut at an instant of event time, then a clean stop. It goes in two
    # parts: between them the worker packs the accounts silent for a minute of event
    # time (DISTILLWATCH_STATE_PACK_S), and the second part unpacks those that call again.
    cut = json.loads(lines[len(lines) // 2])["ts"]
    first = [line for line in lines if json.loads(line)["ts"] < cut]
    second = lines[len(first):]
    packing = {"DISTILLWATCH_STATE_PACK_S": "60"}
    worker = start_worker(**packing)
    for part in (first[:len(first) // 2], first[len(first) // 2:]):
        deployment.produce([(json.loads(line)["account_id"].encode(), line) for line in part])
        worker.wait_until(lambda h: h["accounts_held_packed"] > 0, timeout_s=120)
    before = worker.wait_until(lambda h: h["events_detected"] == len(first), timeout_s=300)
    assert worker.stop() == 0
    assert before["accounts_tracked"] > 100
    # The alerts below are compared with a run that never packed.
    assert before["accounts_packed"] > 0 and before["accounts_unpacked"] > 0, before

    # The second worker reads the rest. On a new machine it has an empty state directory
    # and rebuilds the accounts from the changelog topic alone.
    overrides = {"DISTILLWATCH_STATE_DIR": str(tmp_path / "other")} if new_machine else {}
    worker = start_worker(**packing, **overrides)
    deployment.produce([(json.loads(line)["account_id"].encode(), line) for line in second])
    after = worker.wait_until(lambda h: h["events_detected"] == len(second), timeout_s=300)
    assert after["snapshots_unreadable"] == 0
    if new_machine:
        assert after["state_restored"] >= before["accounts_tracked"]
    else:
        assert after["state_restored"] == 0  # the local database was already complete
    assert after["accounts_loaded"] > 0

    streamed = [
        Alert.model_validate_json(m.value())
        for m in deployment.consume(deployment.settings.topic_alerts,
                                    expected=len(offline), timeout_s=90)
    ]
    # The same account alerts as one uninterrupted offline run, field for field: without
    # the restored state the second worker would re-open episodes and alert anew.
    assert _account_alerts(streamed) == _account_alerts(offline)


def test_state_follows_partitions_to_a_joining_worker(
    deployment: Deployment, start_worker: Callable[..., WorkerProcess], tmp_path: Path,
) -> None:
    lines = _scenario(tmp_path)
    cut = json.loads(lines[len(lines) // 2])["ts"]
    first = [line for line in lines if json.loads(line)["ts"] < cut]
    second = lines[len(first):]
    one = start_worker()
    deployment.produce([(json.loads(line)["account_id"].encode(), line) for line in first])
    one.wait_until(lambda h: h["events_detected"] == len(first), timeout_s=300)
    episodes_before = {a.alert_id: a for a in (
        Alert.model_validate_json(m.value())
        for m in deployment.consume(deployment.settings.topic_alerts, expected=1, timeout_s=60))
        if a.kind == "account"}
    assert episodes_before

    # A second worker joins: half of the partitions, with their accounts, move to it.
    two = start_worker(DISTILLWATCH_STATE_DIR=str(tmp_path / "two"),
                       DISTILLWATCH_WEB_PORT=str(free_port()))
    two.wait_until(lambda h: len(h["partitions"]) > 0, timeout_s=120)
    deployment.produce([(json.loads(line)["account_id"].encode(), line) for line in second])
    one.wait_until(lambda h: h["partitions"] != list(range(4)), timeout_s=60)

    def detected() -> int:
        return sum((w.health() or {}).get("events_detected", 0) for w in (one, two))

    deadline = time.monotonic() + 300
    while detected() < len(lines) and time.monotonic() < deadline:
        time.sleep(1)
    assert detected() >= len(lines)
    assert two.health()["state_restored"] > 0  # the moved accounts, from the changelog
    alerts = [Alert.model_validate_json(m.value()) for m in deployment.consume(
        deployment.settings.topic_alerts, expected=len(episodes_before) + 1, timeout_s=60)]
    # Alert ids name (account, episode, transition): with its state, the new owner of an
    # account continues its episode; without it, it would open "episode 1" again and send
    # a second alert under an id already used.
    by_id: dict[str, set[str]] = {}
    for alert in alerts:
        if alert.kind == "account":
            by_id.setdefault(alert.alert_id, set()).add(
                alert.model_dump_json(exclude={"detected_at", "reasons", "score"}))
    reused = {k: v for k, v in by_id.items() if len(v) > 1}
    assert not reused, list(reused.values())[:2]
    moved = set(two.health()["partitions"])
    assert moved and moved.isdisjoint(one.health()["partitions"])

"""A worker restarts into its state: account snapshots in RocksDB and the changelog topic."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from schemas.alert import Alert
from tests.integration.conftest import Deployment, WorkerProcess
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

    # The first half, cut at an instant of event time, then a clean stop.
    cut = json.loads(lines[len(lines) // 2])["ts"]
    first = [line for line in lines if json.loads(line)["ts"] < cut]
    second = lines[len(first):]
    worker = start_worker()
    deployment.produce([(json.loads(line)["account_id"].encode(), line) for line in first])
    before = worker.wait_until(lambda h: h["events_detected"] == len(first), timeout_s=300)
    assert worker.stop() == 0
    assert before["accounts_tracked"] > 100

    # The second worker reads the rest. On a new machine it has an empty state directory
    # and rebuilds the accounts from the changelog topic alone.
    overrides = {"DISTILLWATCH_STATE_DIR": str(tmp_path / "other")} if new_machine else {}
    worker = start_worker(**overrides)
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

"""Two workers in one consumer group: each account's state lives on exactly one of them."""

from __future__ import annotations

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

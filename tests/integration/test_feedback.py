"""Analyst verdicts from `alert-feedback` reach the account's state on its worker."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta

import pytest

from schemas.alert import Alert
from schemas.deadletter import ENVELOPE_HEADER, DeadLetter
from tests.integration.conftest import Deployment, WorkerProcess
from tests.traffic import START, encode, harvester

pytestmark = pytest.mark.integration


def test_benign_verdict_resolves_the_episode_and_stops_realerting(
    deployment: Deployment, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker()
    settings = deployment.settings
    first = harvester("org_tutor", "key_tutor", n=120)
    deployment.produce([(b"key_tutor", encode(e)) for e in first])
    firing = [Alert.model_validate_json(m.value())
              for m in deployment.consume(settings.topic_alerts, expected=1)]
    assert firing and all(a.status == "firing" for a in firing)
    dedup_key = firing[0].dedup_key

    verdict = {"schema_version": 1, "alert_id": firing[0].alert_id, "tenant_id": "org_tutor",
               "account_id": "key_tutor", "verdict": "benign", "analyst": "a.lee",
               "ts": first[-1]["ts"], "note": "tutoring app, not a harvester"}
    deployment.produce([(b"key_tutor", json.dumps(verdict).encode()),
                        (b"bad", b"{not a verdict")], topic=settings.topic_feedback)

    def alerts_now(expected: int) -> list[Alert]:
        return [Alert.model_validate_json(m.value())
                for m in deployment.consume(settings.topic_alerts, expected=expected,
                                            timeout_s=60)]

    after_verdict = alerts_now(len(firing) + 1)
    resolved = [a for a in after_verdict if a.status == "resolved"]
    assert len(resolved) == 1 and resolved[0].dedup_key == dedup_key
    assert "analyst_verdict" in {r.signal for r in resolved[0].reasons}

    # The same behaviour goes on: suppressed, no new episode.
    later = harvester("org_tutor", "key_tutor", n=120,
                      start=START + timedelta(minutes=30))
    for e in later:
        e["event_id"] += "-later"
    deployment.produce([(b"key_tutor", encode(e)) for e in later])
    worker.wait_until(lambda h: h["events_detected"] == len(first) + len(later)
                      and h["verdicts"] == 1)
    assert len(alerts_now(len(after_verdict) + 1)) == len(after_verdict)

    # The malformed verdict was dead-lettered with its source.
    letters = deployment.consume(settings.topic_dead_letters, expected=1)
    envelope = DeadLetter.model_validate_json(dict(letters[0].headers())[ENVELOPE_HEADER])
    assert envelope.source_topic == settings.topic_feedback and envelope.kind == "not_json"

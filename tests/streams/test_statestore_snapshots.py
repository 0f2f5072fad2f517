"""Account snapshots as the state store writes them: format version, open flag, content."""

from __future__ import annotations

from models.engine import DetectionEngine
from streams.statestore import SNAPSHOT_VERSION, decode_snapshot, encode_snapshot
from tests.models.calls import T0, build_harvest_call


def _flagged_account() -> tuple[DetectionEngine, object]:
    engine = DetectionEngine()
    for i in range(60):
        engine.process(build_harvest_call(T0 + 30 * i))
    key = next(iter(engine.accounts()))
    account = engine.account_state(*key)
    assert account is not None and account.episode is not None  # the harvester alerted
    return engine, account


def test_a_snapshot_round_trips_an_account_with_its_open_episode() -> None:
    _, account = _flagged_account()
    value = encode_snapshot(account, open_episode=True)
    assert value[0] == SNAPSHOT_VERSION and value[1] == 1
    restored = decode_snapshot(value)
    assert restored is not account
    assert restored.episodes_opened == account.episodes_opened == 1
    assert restored.episode.severity == account.episode.severity
    assert restored.episode.last_findings[0].signals == account.episode.last_findings[0].signals
    [state], [before] = restored.detector_states, account.detector_states
    assert state.counts == before.counts and state.counts is not before.counts
    assert (state.landmark, state.last_ts, state.topics) == (
        before.landmark, before.last_ts, before.topics
    )


def test_a_snapshot_of_another_format_version_is_not_loaded() -> None:
    _, account = _flagged_account()
    value = encode_snapshot(account, open_episode=False)
    older = bytes((SNAPSHOT_VERSION - 1,)) + value[1:]
    assert decode_snapshot(older) is None
    assert decode_snapshot(b"") is None and decode_snapshot(value[:1]) is None

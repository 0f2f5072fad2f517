"""Account snapshots as the state store writes them: format version, open flag, content."""

from __future__ import annotations

import pickle

from models.engine import AccountState, DetectionEngine
from streams.statestore import (
    PICKLED_VERSION,
    SNAPSHOT_VERSION,
    decode_snapshot,
    encode_account,
    encode_shared,
    last_call_ts,
)
from tests.models.calls import T0, build_harvest_call


def _flagged_account() -> tuple[DetectionEngine, AccountState]:
    engine = DetectionEngine()
    for i in range(60):
        engine.process(build_harvest_call(T0 + 30 * i))
    key = next(iter(engine.accounts()))
    account = engine.account_state(*key)
    assert account is not None and account.episode is not None  # the harvester alerted
    return engine, account


def test_a_snapshot_round_trips_an_account_with_its_open_episode() -> None:
    _, account = _flagged_account()
    value = encode_account(account, None, None)
    assert value[0] == SNAPSHOT_VERSION and value[1] == 1
    restored, link, share = decode_snapshot(value)
    assert restored is not account and link is None and share is None
    assert restored.episodes_opened == account.episodes_opened == 1
    assert restored.episode.severity == account.episode.severity
    assert restored.episode.last_findings[0].signals == account.episode.last_findings[0].signals
    [state], [before] = restored.detector_states, account.detector_states
    assert state.counts == before.counts and state.counts is not before.counts
    assert (state.landmark, state.last_ts, state.topics) == (
        before.landmark, before.last_ts, before.topics
    )
    assert last_call_ts(value) == before.last_ts == T0 + 30 * 59


def test_an_account_without_an_episode_is_flagged_closed() -> None:
    _, account = _flagged_account()
    account.episode = None
    value = encode_account(account, None, None)
    assert value[1] == 0
    assert decode_snapshot(value)[0].episode is None


def test_pickled_snapshots_of_version_2_are_still_read() -> None:
    _, account = _flagged_account()
    older = bytes((PICKLED_VERSION, 1)) + pickle.dumps((account, None, None))
    restored, _, _ = decode_snapshot(older)
    assert restored.detector_states[0].counts == account.detector_states[0].counts
    shared = {"watermark": T0, "cohorts": {}}
    assert decode_snapshot(encode_shared(shared)) == shared


def test_a_snapshot_of_another_format_version_is_not_loaded() -> None:
    _, account = _flagged_account()
    value = encode_account(account, None, None)
    assert decode_snapshot(bytes((1,)) + value[1:]) is None
    assert decode_snapshot(bytes((SNAPSHOT_VERSION + 1,)) + value[1:]) is None
    assert decode_snapshot(b"") is None and decode_snapshot(value[:1]) is None

"""The simulate and evaluate commands, end to end on a tiny scenario."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from simulator.cli import evaluate_command, simulate_command


def _simulate(out: Path, *extra: str) -> None:
    result = CliRunner().invoke(
        simulate_command,
        ["--scenario", "demo", "--duration", "5m", "--fleet-scale", "0.3", "--out", str(out),
         "--quiet", *extra],
    )  # fmt: skip
    assert result.exit_code == 0, result.output


def test_simulate_writes_the_three_files(tmp_path: Path) -> None:
    _simulate(tmp_path, "--seed", "3")
    summary = json.loads((tmp_path / "scenario.json").read_text())
    assert summary["duration_s"] == 300.0 and summary["seed"] == 3
    events = (tmp_path / "events.jsonl").read_text().splitlines()
    labels = (tmp_path / "labels.jsonl").read_text().splitlines()
    assert len(events) == summary["events"] > 0
    assert len(labels) == summary["accounts"] > 0


def test_simulate_applies_set_overrides(tmp_path: Path) -> None:
    _simulate(tmp_path, "--set", "attack.hydra.accounts=0", "--set", "attack.swarm.accounts=4")
    labels = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    attackers = [row for row in labels if row["label"] == "attack"]
    assert {row["archetype"] for row in attackers} == {"swarm"}


def test_simulate_reports_a_bad_scenario(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        simulate_command, ["--scenario", "nope", "--out", str(tmp_path), "--quiet"]
    )
    assert result.exit_code != 0
    assert "no scenario 'nope'" in result.output


def test_evaluate_scores_perfect_alerts_as_perfect(tmp_path: Path) -> None:
    _simulate(tmp_path)
    labels = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    alerts = [
        {
            "kind": "account",
            "status": "firing",
            "severity": "high",
            "accounts": [{"tenant_id": row["tenant_id"], "account_id": row["account_id"]}],
            "event_time": row["attack_start"],
            "first_event_time": row["attack_start"],
        }
        for row in labels
        if row["label"] == "attack"
    ]
    (tmp_path / "alerts.jsonl").write_text("".join(json.dumps(a) + "\n" for a in alerts))
    args = ["--labels", str(tmp_path / "labels.jsonl"), "--alerts", str(tmp_path / "alerts.jsonl")]
    result = CliRunner().invoke(evaluate_command, [*args, "--json"])
    assert result.exit_code == 0, result.output
    card = json.loads(result.output)
    assert card["attack_recall"] == 1.0
    assert card["campaigns_detected"] == card["campaigns_total"] > 0
    assert card["ttd_account_median_s"] == 0.0
    assert card["benign_alerted"] == 0
    assert card["days"] == 300 / 86400  # read from scenario.json beside the labels

    table = CliRunner().invoke(evaluate_command, [*args, "--days", "1"])
    assert table.exit_code == 0
    assert "attack accounts named" in table.output

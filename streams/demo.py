"""`distillwatch demo`: the whole pipeline end to end on the embedded defaults.

Generates a small labelled scenario with the simulator (ordinary tenants plus a hydra of
fresh keys harvesting reasoning traces), starts a worker on topics of its own, replays the
traffic into Kafka with event time compressed, prints alerts as they arrive on the alert
topic, then asks ClickHouse (through the running worker) for a summary.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

from streams.errors import ServerUnavailable, StreamsError
from streams.kafka import (
    admin_client,
    check_reachable,
    confluent_config,
    ensure_topics,
    topic_specs,
)
from streams.settings import Settings
from streams.sql import format_table, run_query

SUMMARY_SQL = """
SELECT tenant_id, account_id,
       sum(requests) AS total_requests,
       round(sum(cot_requests) / total_requests, 2) AS cot_share,
       sum(output_tokens) AS total_output_tokens,
       round(max(max_score), 2) AS peak_score
FROM {db}.account_minute
GROUP BY tenant_id, account_id
ORDER BY peak_score DESC, total_requests DESC
LIMIT 12
"""

ALERTS_SQL = """
SELECT kind, severity, status, count() AS alerts, uniqExact(dedup_key) AS episodes
FROM {db}.alerts FINAL
GROUP BY kind, severity, status
ORDER BY kind, severity, status
"""


def say(text: str = "") -> None:
    print(text, flush=True)


def demo_settings(settings: Settings, run_id: str) -> tuple[Settings, dict[str, str]]:
    """Settings of the demo's own worker: its own topics, group and state directory."""
    env = {
        "DISTILLWATCH_APP_ID": f"distillwatch-demo-{run_id}",
        "DISTILLWATCH_TOPIC_API_CALLS": f"api-calls-demo-{run_id}",
        "DISTILLWATCH_TOPIC_ALERTS": f"distillation-alerts-demo-{run_id}",
        "DISTILLWATCH_TOPIC_DEAD_LETTERS": f"api-calls-dlq-demo-{run_id}",
        "DISTILLWATCH_TOPIC_FEEDBACK": f"alert-feedback-demo-{run_id}",
        "DISTILLWATCH_STATE_DIR": str(settings.state_dir / "demo"),
        "DISTILLWATCH_CLICKHOUSE_FLUSH_INTERVAL_S": "1.0",
    }
    updated = Settings.model_validate({**_current_env(), **env})
    return updated, env


def _current_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(("KAFKA_", "DISTILLWATCH_",
                                                                 "CLICKHOUSE_"))}


def health(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{url}/health/", timeout=2) as response:
            body: dict[str, Any] = json.loads(response.read())
            return body
    except (OSError, ValueError):
        return None


def wait_for(predicate: Any, timeout_s: float, what: str, worker: subprocess.Popen[bytes],
             log_path: Path) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if worker.poll() is not None:
            tail = log_path.read_text()[-3000:]
            raise StreamsError(f"the worker exited while waiting for {what}:\n{tail}")
        time.sleep(0.5)
    raise StreamsError(f"timed out after {timeout_s:.0f}s waiting for {what} (log: {log_path})")


def format_alert(alert: dict[str, Any]) -> str:
    event_time = alert["event_time"][11:19]
    reasons = "; ".join(r["detail"] for r in alert.get("reasons", []))
    return (
        f"  [{event_time} event time] {alert['status'].upper():8s} {alert['severity']:8s} "
        f"{alert['dedup_key']}  score {alert['score']:.2f}  {reasons}"
    )


class AlertPrinter(threading.Thread):
    """Prints alerts from the alert topic as they arrive."""

    def __init__(self, settings: Settings, labels: dict[str, dict[str, Any]]) -> None:
        super().__init__(daemon=True)
        self.settings, self.labels = settings, labels
        self.alerts: list[dict[str, Any]] = []
        self.stop_event = threading.Event()
        self.ready = threading.Event()

    def truth(self, alert: dict[str, Any]) -> str:
        """What the scenario's labels say about the accounts an alert names."""
        named = [a["account_id"] for a in alert.get("accounts", [])]
        if alert.get("kind") == "account" and named:
            label = self.labels.get(named[0], {})
            return f"  (truth: {label.get('label')}/{label.get('archetype')})"
        attacking = sum(1 for a in named if self.labels.get(a, {}).get("label") == "attack")
        return f"  (truth: {attacking} of {len(named)} listed are attacking)"

    def run(self) -> None:
        consumer = Consumer(confluent_config(
            self.settings, **{"group.id": f"{self.settings.app_id}-printer",
                              "auto.offset.reset": "earliest", "enable.auto.commit": False}))
        consumer.subscribe([self.settings.topic_alerts],
                           on_assign=lambda *_: self.ready.set())
        try:
            while not self.stop_event.is_set():
                message = consumer.poll(0.5)
                if message is None or message.error():
                    continue
                alert = json.loads(message.value() or b"{}")
                self.alerts.append(alert)
                truth = self.truth(alert)
                from tqdm import tqdm

                tqdm.write(format_alert(alert) + truth, file=sys.stdout)
        finally:
            consumer.close()


def run_demo(settings: Settings, *, scenario: str, seed: int, speed: float) -> None:
    from simulator.generate import generate, write_scenario
    from simulator.scenario import load_scenario
    from streams.producer import produce_lines

    run_id = datetime.now(UTC).strftime("%H%M%S")
    dsettings, env = demo_settings(settings, run_id)
    say("distillwatch demo")
    say("=================")
    try:
        brokers = check_reachable(dsettings)
    except ServerUnavailable as exc:
        raise StreamsError(f"{exc}") from exc
    say(f"Kafka: {dsettings.kafka_bootstrap_servers} ({brokers} broker)")
    state = dsettings.state_dir
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)

    say(f"\n1. Simulating scenario '{scenario}' (seed {seed}) ...")
    sim = generate(load_scenario(scenario), seed=seed)
    n_events, n_accounts = write_scenario(sim, state / "scenario", progress=False)
    labels = {}
    for line in (state / "scenario" / "labels.jsonl").read_text().splitlines():
        row = json.loads(line)
        labels[row["account_id"]] = row
    attackers = sum(1 for r in labels.values() if r["label"] == "attack")
    archetypes = sorted({r["archetype"] for r in labels.values() if r["label"] == "attack"})
    say(f"   {n_events:,} events from {n_accounts:,} accounts; {attackers} of them attacking "
        f"({', '.join(archetypes)})")

    say("\n2. Creating topics and starting a worker ...")
    ensure_topics(dsettings)
    log_path = state / "worker.log"
    worker = subprocess.Popen(
        [sys.executable, "-m", "streams", "worker"],
        env={**os.environ, **env},
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://{dsettings.web_host}:{dsettings.web_port}"
    printer = AlertPrinter(dsettings, labels)
    try:
        wait_for(lambda: health(url), 90, "the worker to answer on /health/", worker, log_path)
        say(f"   worker pid {worker.pid} ready ({url}); log: {log_path}")
        printer.start()
        printer.ready.wait(30)

        say(f"\n3. Replaying traffic at {speed:g}x event time; alerts as they arrive:")
        events_file = state / "scenario" / "events.jsonl"
        with events_file.open("rb") as handle:
            report = produce_lines(dsettings, handle, speed=speed, total=n_events)
        say(f"   sent {report.events:,} events in {report.seconds:.0f}s")

        def caught_up() -> bool:
            h = health(url)
            return bool(h and h["events_detected"] >= report.events
                        and h["clickhouse_pending"] == 0)

        wait_for(caught_up, 180, "the worker to process every event", worker, log_path)
        time.sleep(2.0)  # let the last alerts reach the printer

        say("\n4. ClickHouse, queried through the running worker (`distillwatch sql`):")
        db = dsettings.clickhouse_database
        for title, query in (("accounts by max score", SUMMARY_SQL),
                             ("alerts by kind and severity", ALERTS_SQL)):
            columns, rows, where = run_query(dsettings, query.format(db=db))
            say(f"\n   {title} ({where}):")
            say("   " + format_table(columns, rows).replace("\n", "\n   "))

        firing = [a for a in printer.alerts if a["status"] == "firing"]
        say("\nSummary (against the scenario's labels):")
        for kind in ("account", "campaign"):
            named = {m["account_id"] for a in firing if a["kind"] == kind for m in a["accounts"]}
            hit = sum(1 for a in named if labels.get(a, {}).get("label") == "attack")
            say(f"  {kind} alerts: {sum(1 for a in firing if a['kind'] == kind)} firing, naming "
                f"{len(named)} accounts: {hit} attacking, {len(named) - hit} benign")
        named = {m["account_id"] for a in firing for m in a["accounts"]}
        hit = sum(1 for a in named if labels.get(a, {}).get("label") == "attack")
        say(f"  attacking accounts named: {hit} of {attackers}. The scorecard over a six-hour"
            " fleet is in the README (`python bench/detection.py`).")
    finally:
        printer.stop_event.set()
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
        names = [s.name for s in topic_specs(dsettings)]
        admin_client(dsettings).delete_topics(names)

"""Fixtures for tests that run the real pipeline: the Kafka broker that infra/ starts,
worker processes, and the embedded ClickHouse engine in each worker's state directory.

A test here that cannot reach Kafka fails; it never skips.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer

from streams.errors import ServerUnavailable
from streams.kafka import check_reachable, confluent_config, ensure_topics
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def kafka() -> Settings:
    """Settings pointing at the broker; fails the test if it does not answer."""
    settings = Settings()
    try:
        check_reachable(settings, timeout_s=15)
    except ServerUnavailable as exc:
        pytest.fail(f"{exc} (the integration tests need the broker: `make test` starts it)")
    return settings


@dataclass
class Deployment:
    """One isolated pipeline: its own topics, consumer group and state directory."""

    env: dict[str, str]
    settings: Settings
    workers: list[WorkerProcess] = field(default_factory=list)

    def produce(self, records: list[tuple[bytes | None, bytes | None]], topic: str | None = None,
                compression: str = "none") -> None:
        """Write raw (key, value) records to the input topic and wait for delivery.

        `compression` is the producer's codec: gateways use any of them, workers read all.
        """
        producer = Producer(confluent_config(self.settings, **{
            "linger.ms": 5, "message.max.bytes": 17 * 1024 * 1024,
            "compression.type": compression}))
        failures: list[Any] = []
        for key, value in records:
            producer.produce(topic or self.settings.topic_api_calls, key=key, value=value,
                             on_delivery=lambda err, _m: err and failures.append(err))
            producer.poll(0)
        producer.flush(60)
        assert not failures, failures[:3]

    def consume(self, topic: str, expected: int, timeout_s: float = 120.0,
                ) -> list[Any]:
        """Read `topic` from the start until `expected` records arrived (or time runs out),
        then keep reading for a moment to catch any extra record."""
        consumer = Consumer(confluent_config(self.settings, **{
            "group.id": f"test-reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest", "enable.auto.commit": False}))
        consumer.subscribe([topic])
        got: list[Any] = []
        deadline = time.monotonic() + timeout_s
        settle: float | None = None
        try:
            while time.monotonic() < deadline:
                message = consumer.poll(0.5)
                if message is not None and not message.error():
                    got.append(message)
                if len(got) >= expected:
                    settle = settle or time.monotonic() + 3.0
                    if time.monotonic() > settle:
                        break
        finally:
            consumer.close()
        return got

    def sql(self, query: str) -> list[dict[str, Any]]:
        """Rows of a query through the `distillwatch sql` command (routed to a live worker)."""
        out = subprocess.run(
            [sys.executable, "-m", "streams", "sql", "--format", "json", query],
            env={**os.environ, **self.env}, capture_output=True, text=True, timeout=120,
            cwd=ROOT,
        )
        assert out.returncode == 0, out.stderr
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def memory(self) -> dict[str, Any] | None:
        """The worker's /memory/ page."""
        return self.page("memory")

    def health(self) -> dict[str, Any] | None:
        return self.page("health")

    def page(self, name: str) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"{self.url}/{name}/", timeout=2) as response:
                body: dict[str, Any] = json.loads(response.read())
                return body
        except (OSError, ValueError):
            return None

    def wait_until(self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 120,
                   ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"worker died:\n{self.log()[-4000:]}"
            last = self.health()
            if last is not None and predicate(last):
                return last
            time.sleep(0.5)
        raise AssertionError(f"timed out; last health {last}\n{self.log()[-4000:]}")

    def stop(self, timeout_s: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired as exc:
                self.process.kill()
                raise AssertionError(
                    f"worker did not stop cleanly:\n{self.log()[-4000:]}") from exc
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def deployment(kafka: Settings, tmp_path: Path) -> Iterator[Deployment]:
    """A fresh, isolated pipeline on the real broker; its workers are stopped afterwards."""
    run = uuid.uuid4().hex[:8]
    env = {
        "DISTILLWATCH_APP_ID": f"dw-test-{run}",
        "DISTILLWATCH_TOPIC_API_CALLS": f"api-calls-{run}",
        "DISTILLWATCH_TOPIC_ALERTS": f"alerts-{run}",
        "DISTILLWATCH_TOPIC_DEAD_LETTERS": f"dlq-{run}",
        "DISTILLWATCH_TOPIC_FEEDBACK": f"feedback-{run}",
        "DISTILLWATCH_STATE_DIR": str(tmp_path / "state"),
        "DISTILLWATCH_CLICKHOUSE_FLUSH_INTERVAL_S": "0.5",
        "DISTILLWATCH_WEB_PORT": str(free_port()),
        "DISTILLWATCH_LOG_LEVEL": os.environ.get("DISTILLWATCH_TEST_LOG_LEVEL", "warn"),
    }
    env = {**{k: v for k, v in os.environ.items() if k.startswith("KAFKA_")}, **env}
    settings = Settings.model_validate(env)
    ensure_topics(settings)
    dep = Deployment(env=env, settings=settings)
    yield dep
    for worker in dep.workers:
        worker.stop()


@pytest.fixture
def start_worker(deployment: Deployment, tmp_path: Path) -> Callable[..., WorkerProcess]:
    """Start a `distillwatch worker` process of the deployment and wait until it answers."""

    def start(**overrides: str) -> WorkerProcess:
        env = {**os.environ, **deployment.env, **overrides}
        index = len(deployment.workers)
        log_path = tmp_path / f"worker-{index}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker"], env=env, cwd=ROOT,
            stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
        )
        port = env["DISTILLWATCH_WEB_PORT"]
        worker = WorkerProcess(process, f"http://127.0.0.1:{port}", log_path)
        deployment.workers.append(worker)
        worker.wait_until(lambda h: True, timeout_s=90)
        return worker

    return start

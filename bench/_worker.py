"""Worker processes for the benchmarks: start one from the command line with its own topics,
consumer group, state directory and port; read its /health/ and its /proc counters; stop it.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def deployment_env(bootstrap: str, workdir: Path, tag: str) -> dict[str, str]:
    """Environment of an isolated pipeline: unique app id and topics (no state dir/port)."""
    run = f"{tag}-{uuid.uuid4().hex[:6]}"
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "DISTILLWATCH_APP_ID": f"dw-bench-{run}",
        "DISTILLWATCH_TOPIC_API_CALLS": f"bench-api-calls-{run}",
        "DISTILLWATCH_TOPIC_ALERTS": f"bench-alerts-{run}",
        "DISTILLWATCH_TOPIC_DEAD_LETTERS": f"bench-dlq-{run}",
        "DISTILLWATCH_TOPIC_FEEDBACK": f"bench-feedback-{run}",
        "DISTILLWATCH_LOG_LEVEL": "warn",
        "DISTILLWATCH_CLICKHOUSE_FLUSH_INTERVAL_S": "1.0",
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) in bytes."""
    rss = hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    return rss, hwm


@dataclass
class Worker:
    """A running worker process and where to reach it."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    state_dir: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def health(self) -> dict[str, Any] | None:
        return self._page("health")

    def memory_report(self) -> dict[str, Any] | None:
        """The worker's /memory/ page (distillwatch workers only)."""
        return self._page("memory")

    def _page(self, name: str) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/{name}/",
                                        timeout=2) as response:
                body: dict[str, Any] = json.loads(response.read())
                return body
        except (OSError, ValueError):
            return None

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout_s: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} died:\n{self.log()[-3000:]}")
            h = self.health()
            if h is not None:
                return h
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer in {timeout_s}s:\n{self.log()[-3000:]}")

    def stop(self, timeout_s: float = 60) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def start_worker(name: str, module: str, env: dict[str, str], workdir: Path,
                 extra_env: dict[str, str] | None = None) -> Worker:
    """`python -m <module> worker` with the deployment's env, its own state dir and port."""
    state_dir = workdir / f"state-{name}"
    port = free_port()
    full = {**os.environ, **env, "DISTILLWATCH_STATE_DIR": str(state_dir),
            "DISTILLWATCH_WEB_PORT": str(port), **(extra_env or {})}
    full["PYTHONPATH"] = str(ROOT) + os.pathsep + full.get("PYTHONPATH", "")
    log_path = workdir / f"{name}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", module, "worker"], env=full, cwd=ROOT,
        stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
    )
    return Worker(name, process, port, state_dir, log_path, full)

"""`distillwatch sql`: ad-hoc queries, also while a worker holds the embedded engine.

chDB allows one process per data path. When a worker of this state directory is running,
the query is sent to it over HTTP and run there read-only; otherwise it opens the engine
(or the server) itself. Either way the query runs with `readonly=1`.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from streams.clickhouse import connect, query_rows
from streams.errors import QueryError
from streams.settings import Settings


def running_worker(state_dir: Path) -> str | None:
    """The HTTP address of the live worker of this state directory, if there is one."""
    path = state_dir / "worker.json"
    try:
        info = json.loads(path.read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    return str(info["url"])


def run_query(settings: Settings, query: str) -> tuple[list[str], list[list[Any]], str]:
    """(columns, rows, where it ran) of a read-only query."""
    worker = running_worker(settings.state_dir) if settings.clickhouse_embedded else None
    if worker is not None:
        request = urllib.request.Request(
            f"{worker}/sql/",
            data=json.dumps({"query": query}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = json.loads(exc.read() or b"{}").get("error", exc.reason)
            raise QueryError(f"the worker refused the query: {detail}") from exc
        except urllib.error.URLError as exc:
            raise QueryError(f"the worker at {worker} did not answer: {exc.reason}") from exc
        return body["columns"], body["rows"], f"worker {worker}"
    client = connect(settings)
    try:
        columns, rows = query_rows(client, query, readonly=True)
    except Exception as exc:
        raise QueryError(str(exc)) from exc
    return columns, rows, "direct"


def format_table(columns: list[str], rows: list[list[Any]], max_width: int = 60) -> str:
    """Rows as an aligned text table."""

    def cell(value: Any) -> str:
        text = f"{value:.3f}" if isinstance(value, float) else str(value)
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    cells = [[cell(v) for v in row] for row in rows]
    widths = [len(c) for c in columns]
    for row in cells:
        widths = [max(w, len(v)) for w, v in zip(widths, row, strict=True)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)

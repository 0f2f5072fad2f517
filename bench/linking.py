"""Campaign-linking benchmark: the linker over a simulated scenario, its campaign scorecard.

    python bench/linking.py                           # .data/default (simulated if missing)
    python bench/linking.py --data .data/hydra --scenario hydra
    python bench/linking.py --split 2                 # the three stages apart, two workers

Steps and what they print:

1. read ``<data>/events.jsonl`` into `ApiCall` records (msgspec, not the pydantic edge:
   the bench times the linker, not the decoder); when the file is missing, simulate the
   scenario into ``<data>`` first, as ``distillwatch simulate`` does;
2. compute the stand-in suspicion (`ExtractionShareSuspicion`) per call, timed apart, as
   the engine will provide `engine.last_suspicion`;
3. run `CampaignLinker` over the calls in event-time order (or, with ``--split N``, the
   three stages apart with N observer and N evidence workers, merged by event time) and
   print events/s, the stream volumes between the stages and the memory per account and
   per link key;
4. score the campaign alerts with `simulator.scorecard.score_alerts` and print the
   campaign rows, the benign look-alikes named, membership precision, and the issue's
   bar per campaign: first alert after the campaign's start, share of its accounts named,
   share named within 60 minutes of their own start.
"""

from __future__ import annotations

import gc
import sys
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import msgspec

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere in the checkout
    sys.path.insert(0, str(ROOT))

from models.linking import (  # noqa: E402
    CampaignClusters,
    CampaignLinker,
    ExtractionShareSuspicion,
    KeyEvidence,
    LinkObserver,
)
from models.records import ApiCall  # noqa: E402
from schemas.alert import Alert  # noqa: E402
from simulator.generate import generate, write_scenario  # noqa: E402
from simulator.scenario import load_scenario  # noqa: E402
from simulator.scorecard import campaign_bars, score_alerts  # noqa: E402


def _seconds(text: str | None) -> float | None:
    return None if text is None else datetime.fromisoformat(text).timestamp()


def call_from_event(event: Mapping[str, Any]) -> ApiCall:
    """An `ApiCall` from a contract event dict the simulator wrote (trusted input)."""
    request, response = event["request"], event["response"]
    prompt, client, account = event.get("prompt"), event.get("client"), event.get("account")
    simhash = prompt.get("simhash") if prompt else None
    return ApiCall(
        event_id=event["event_id"],
        ts=datetime.fromisoformat(event["ts"]).timestamp(),
        tenant_id=event["tenant_id"],
        account_id=event["account_id"],
        model=request["model"],
        status=response["status"],
        input_tokens=response["input_tokens"],
        output_tokens=response["output_tokens"],
        endpoint=request.get("endpoint"),
        max_tokens=request.get("max_tokens"),
        n=request.get("n", 1),
        logprobs=request.get("logprobs", False),
        tool_count=request.get("tool_count", 0),
        turn=request.get("turn", 1),
        stop_reason=response.get("stop_reason"),
        has_prompt=prompt is not None,
        simhash=int(simhash, 16) if simhash else None,
        topic=prompt.get("topic") if prompt else None,
        cot_request=prompt.get("cot_request", False) if prompt else False,
        jailbreak_score=prompt.get("jailbreak_score") if prompt else None,
        sysprompt_probe=prompt.get("sysprompt_probe", False) if prompt else False,
        has_client=client is not None,
        ip=client.get("ip") if client else None,
        asn=client.get("asn") if client else None,
        user_agent=client.get("user_agent") if client else None,
        tls_fingerprint=client.get("tls_fingerprint") if client else None,
        created_at=_seconds(account.get("created_at")) if account else None,
        payment_fingerprint=account.get("payment_fingerprint") if account else None,
    )


def read_calls(path: Path) -> list[ApiCall]:
    """Every event of a JSON-lines file as `ApiCall`, sorted by event time (stable)."""
    decode = msgspec.json.Decoder().decode
    with path.open("rb") as handle:
        calls = [call_from_event(decode(line)) for line in handle if line.strip()]
    calls.sort(key=lambda call: call.ts)
    return calls


def deep_size(root: object) -> int:
    """Bytes held by `root` and everything it references (shared objects counted once)."""
    seen: set[int] = set()
    total = 0
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or obj is None or isinstance(obj, bool | int | float):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            stack.extend(obj)
        elif hasattr(obj, "__slots__"):
            stack.extend(getattr(obj, name) for name in obj.__slots__ if hasattr(obj, name))
        elif hasattr(obj, "__dict__"):
            stack.append(vars(obj))
    return total


def run_split(
    calls: list[ApiCall], suspicions: list[float], workers: int
) -> tuple[list[Alert], dict[str, int]]:
    """The three stages apart: `workers` observers (by account), `workers` evidence
    workers (by key), one cluster stage; each stage's output merged by event time."""
    observers = [LinkObserver() for _ in range(workers)]
    evidences = [KeyEvidence() for _ in range(workers)]
    clusters = CampaignClusters()

    def shard(text: str) -> int:
        return zlib.crc32(text.encode()) % workers

    # stage 1, per account partition; stage 2 sees observations per key partition
    observations = [
        (obs.ts, index, obs)
        for index, (call, suspicion) in enumerate(zip(calls, suspicions, strict=True))
        for obs in observers[shard(call.account_id)].observe(call, suspicion)
    ]
    observations.sort(key=lambda item: (item[0], item[1]))
    edges = [edge for _, _, obs in observations for edge in evidences[shard(obs.hub)].add(obs)]
    # stage 3 in one place: edges arrive by event time, advanced per edge and at the end
    alerts: list[Alert] = []
    for edge in sorted(edges, key=lambda e: e.ts):
        alerts.extend(clusters.advance(edge.ts))
        clusters.add(edge)
    if calls:
        alerts.extend(clusters.advance(calls[-1].ts))
    return alerts, {"observations": len(observations), "edges": len(edges)}


def _iter_labels(path: Path) -> Iterator[dict[str, Any]]:
    decode = msgspec.json.Decoder().decode
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                yield decode(line)


@click.command()
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=ROOT / ".data" / "default",
    show_default=True,
    help="Directory with events.jsonl and labels.jsonl (simulated when missing).",
)
@click.option("--scenario", default="default", show_default=True, help="Scenario to simulate.")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--split", type=int, default=0, help="Run the stages apart with N workers each.")
def main(data: Path, scenario: str, seed: int, split: int) -> None:
    """Run campaign linking over a scenario and print speed, memory and the campaign bar."""
    events, labels_path = data / "events.jsonl", data / "labels.jsonl"
    if not events.exists() or not labels_path.exists():
        click.echo(f"[simulate] {scenario} seed {seed} into {data}", err=True)
        write_scenario(generate(load_scenario(scenario), seed=seed), data, progress=True)
    started = time.perf_counter()
    calls = read_calls(events)
    labels = list(_iter_labels(labels_path))
    click.echo(f"[read] {len(calls):,} events in {time.perf_counter() - started:.1f}s", err=True)

    started = time.perf_counter()
    stand_in = ExtractionShareSuspicion()
    suspicions = [stand_in.update(call) for call in calls]
    suspicion_s = time.perf_counter() - started

    gc.collect()
    started = time.perf_counter()
    linker = CampaignLinker()
    if split:
        alerts, volumes = run_split(calls, suspicions, split)
    else:
        observe = linker.observe
        alerts = []
        peak_keys = 0
        for index, (call, suspicion) in enumerate(zip(calls, suspicions, strict=True)):
            alerts.extend(observe(call, suspicion))
            if index % 50_000 == 0:
                peak_keys = max(peak_keys, len(linker.evidence))
        if calls:
            alerts.extend(linker.advance(calls[-1].ts))
        volumes = {"observations": linker.observations, "edges": linker.edges}
    linker_s = time.perf_counter() - started
    n = len(calls)
    click.echo(
        f"linker: {n:,} events in {linker_s:.1f}s = {n / linker_s:,.0f} events/s"
        f"{f' (split, {split} workers per stage, one process)' if split else ''};"
        f" stand-in suspicion {n / suspicion_s:,.0f} events/s"
    )
    click.echo(
        f"streams: {volumes['observations']:,} observations ({volumes['observations'] / n:.1%}"
        f" of events), {volumes['edges']:,} edges ({volumes['edges'] / n:.2%})"
    )
    if not split:
        observer, evidence, clusters = linker.observer, linker.evidence, linker.clusters
        accounts = len(observer)
        click.echo(
            f"memory: observer {observer.state_bytes()} B state per account,"
            f" {deep_size(observer._accounts) / max(accounts, 1):,.0f} B with its dict entry"
            f" and key ({accounts:,} accounts);"
            f" evidence {deep_size(evidence) / max(len(evidence), 1):,.0f} B per key"
            f" ({len(evidence):,} keys, {evidence.members_tracked:,} members at the end,"
            f" peak {peak_keys:,} keys);"
            f" clusters {deep_size(clusters) / 2**20:,.1f} MiB"
            f" ({clusters.accounts_tracked:,} accounts, {clusters.links_tracked:,} links)"
        )

    rows = [alert.model_dump(mode="json") for alert in alerts]
    card = score_alerts(labels, rows)
    campaign_alerts = [a for a in alerts if a.kind == "campaign"]
    click.echo(
        f"\ncampaign alerts: {len(campaign_alerts):,}"
        f" ({sum(a.status == 'firing' for a in campaign_alerts):,} firing),"
        f" {len({a.campaign_id for a in campaign_alerts}):,} campaign ids;"
        f" membership precision {_pct(card.campaign_alert_precision)} pooled,"
        f" {_pct(card.campaign_alert_precision_mean)} mean per alert"
    )
    click.echo(f"  {'campaign':28} {'archetype':18} {'named':>9} {'ttd(half)':>9}")
    for c in card.campaigns:
        ttd = "-" if c.ttd_s is None else f"{c.ttd_s / 60:.1f}m"
        click.echo(f"  {c.campaign_id:28} {c.archetype:18} {f'{c.named}/{c.accounts}':>9} {ttd:>9}")
    click.echo(f"\n  {'bar':28} {'first alert':>11} {'named':>7} {'in 60 min':>9}")
    for bar in sorted(campaign_bars(labels, alerts, within_s=3600.0).values(),
                      key=lambda bar: bar.campaign_id):
        first = "-" if bar.first_alert_s is None else f"{bar.first_alert_s / 60:.1f}m"
        click.echo(
            f"  {bar.campaign_id:28} {first:>11} {bar.named:>7.1%} {bar.named_within:>9.1%}"
        )
    benign = Counter(
        name for name, group in card.benign_by_archetype.items() for _ in range(group.alerted)
    )
    click.echo(
        f"\nbenign accounts named: {card.benign_alerted:,}/{card.benign_accounts:,}"
        f" {dict(benign) if benign else ''}"
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


if __name__ == "__main__":
    main()

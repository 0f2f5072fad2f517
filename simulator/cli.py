"""``simulate`` and ``evaluate`` click commands; the main ``distillwatch`` group registers them."""

from __future__ import annotations

import json
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import click
import msgspec

from simulator.generate import generate, write_labels, write_scenario
from simulator.scenario import ScenarioError, list_scenarios, load_scenario, parse_duration
from simulator.scorecard import Scorecard, format_scorecard, score_alerts


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every JSON object in ``path``, one per non-blank line; errors name the line."""
    decode = msgspec.json.Decoder().decode
    rows: list[dict[str, Any]] = []
    with Path(path).open("rb") as source:
        for number, line in enumerate(source, start=1):
            if not line.strip():
                continue
            try:
                rows.append(decode(line))
            except msgspec.DecodeError as exc:
                raise click.ClickException(f"{path}:{number}: not a JSON object: {exc}") from exc
    return rows


def scenario_days(labels_path: Path) -> float | None:
    """Length in days of the scenario whose ``scenario.json`` sits beside ``labels_path``."""
    summary = Path(labels_path).with_name("scenario.json")
    if not summary.exists():
        return None
    duration_s = json.loads(summary.read_text()).get("duration_s")
    return float(duration_s) / 86400.0 if duration_s else None


def evaluate_files(labels: Path, alerts: Path, days: float | None = None) -> Scorecard:
    """Score an alerts file against a labels file; ``days`` defaults to ``scenario.json``'s."""
    if days is None:
        days = scenario_days(labels)
    return score_alerts(read_jsonl(labels), read_jsonl(alerts), days=days)


class _Duration(click.ParamType):
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float):
            return value
        try:
            return parse_duration(value)
        except ScenarioError as exc:
            self.fail(str(exc), param, ctx)


@click.command("simulate")
@click.option(
    "--scenario",
    default="default",
    show_default=True,
    help=f"Scenario name ({', '.join(list_scenarios())}) or path to a TOML file.",
)
@click.option("--seed", type=int, default=7, show_default=True, help="Random seed.")
@click.option(
    "--duration",
    type=_Duration(),
    default=None,
    help="Event-time length: 6h, 90m, 45s or seconds (default: the scenario's).",
)
@click.option(
    "--fleet-scale",
    type=float,
    default=None,
    help="Multiply every population's account count (default 1.0).",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a scenario knob, e.g. attack.hydra.accounts=100 (value parsed as TOML).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for events.jsonl (unless --to-kafka), labels.jsonl and scenario.json.",
)
@click.option(
    "--to-kafka",
    is_flag=True,
    help="Produce the events to the input topic instead of writing events.jsonl.",
)
@click.option(
    "--speed",
    type=float,
    default=None,
    help="With --to-kafka: replay event time this many times faster (default: at once).",
)
@click.option(
    "--batch",
    type=click.IntRange(1, 10_000),
    default=1,
    show_default=True,
    help="With --to-kafka: events per record (a JSON array, as a gateway flush sends them).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def simulate_command(
    scenario: str,
    seed: int,
    duration: float | None,
    fleet_scale: float | None,
    settings: tuple[str, ...],
    out: Path,
    to_kafka: bool,
    speed: float | None,
    batch: int,
    quiet: bool,
) -> None:
    """Write a labelled scenario: events in event-time order, one label per account."""
    try:
        loaded = load_scenario(scenario, _parse_settings(settings))
    except ScenarioError as exc:
        raise click.ClickException(str(exc)) from exc
    started = time.perf_counter()
    sim = generate(loaded, seed=seed, duration_s=duration, fleet_scale=fleet_scale)
    if to_kafka:
        events, accounts = _produce(sim, out, speed=speed, batch=batch, progress=not quiet)
    else:
        events, accounts = write_scenario(sim, out, progress=not quiet)
    elapsed = time.perf_counter() - started
    click.echo(
        f"{loaded.name}: {events:,} events from {accounts:,} accounts"
        f" ({sim.summary()['attack_accounts']:,} attacking) in {elapsed:.1f}s"
        f" ({events / max(elapsed, 1e-9):,.0f} events/s) -> {out}",
        err=True,
    )


def _produce(
    sim: Any, out: Path, *, speed: float | None, batch: int, progress: bool
) -> tuple[int, int]:
    """Stream the simulation into Kafka; write its labels and summary to ``out``."""
    from streams.errors import StreamsError
    from streams.producer import produce_lines
    from streams.settings import Settings

    root = click.get_current_context().find_root().obj
    settings = root if isinstance(root, Settings) else Settings()
    encode = msgspec.json.Encoder().encode
    try:
        report = produce_lines(
            settings, (encode(event) for event in sim.events()), speed=speed, batch=batch,
            progress=progress,
        )
    except StreamsError as exc:
        raise click.ClickException(str(exc)) from exc
    if report.failed:
        raise click.ClickException(f"{report.failed:,} records were not delivered")
    write_labels(sim, out, events=report.events)
    return report.events, len(sim.labels)


def _parse_settings(settings: tuple[str, ...]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for setting in settings:
        key, sep, text = setting.partition("=")
        if not sep:
            raise click.BadParameter(f"{setting!r} is not KEY=VALUE", param_hint="--set")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text  # a bare word, e.g. timing=poisson
        overrides[key.strip()] = value
    return overrides


@click.command("evaluate")
@click.option(
    "--labels",
    "labels_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="labels.jsonl of the scenario.",
)
@click.option(
    "--alerts",
    "alerts_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Alerts, one JSON object per line.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the scorecard as one JSON object.")
@click.option(
    "--days",
    type=float,
    default=None,
    help="Scenario length in days (default: scenario.json beside the labels, else derived).",
)
def evaluate_command(
    labels_path: Path, alerts_path: Path, as_json: bool, days: float | None
) -> None:
    """Score alerts against a labelled scenario: campaigns, recall, time to detect, noise."""
    card = evaluate_files(labels_path, alerts_path, days)
    if as_json:
        click.echo(json.dumps(card.to_dict(), indent=2))
    else:
        click.echo(format_scorecard(card))


if __name__ == "__main__":  # pragma: no cover - convenience while the main group is wired up
    group = click.Group("simulator", commands=[simulate_command, evaluate_command])
    sys.exit(group())

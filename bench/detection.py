"""Detection benchmark: simulate a labelled scenario, score it offline, print the scorecard.

    python bench/detection.py                       # default scenario, seed 7, six hours
    python bench/detection.py --scenario demo --seed 3 --duration 30m

Steps and their wall-clock timings:

1. ``simulate``: the scenario into ``.data/bench/<scenario>-seed<seed>-<duration>s/``
   (``--reuse`` keeps files already there);
2. ``distillwatch score --input events.jsonl --output alerts.jsonl``, in a subprocess,
   exactly as an operator would run it (the installed ``distillwatch`` script when on
   PATH, else ``python -m streams``);
3. ``evaluate``: the scorecard, printed and saved as ``scorecard.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere in the checkout
    sys.path.insert(0, str(ROOT))

from simulator.cli import evaluate_files  # noqa: E402
from simulator.generate import generate, write_scenario  # noqa: E402
from simulator.scenario import load_scenario, parse_duration  # noqa: E402
from simulator.scorecard import format_scorecard  # noqa: E402


def score_command(events: Path, alerts: Path) -> list[str]:
    """The argv that runs the offline detector over ``events`` into ``alerts``."""
    installed = shutil.which("distillwatch")
    program = [installed] if installed else [sys.executable, "-m", "streams"]
    return [*program, "score", "--input", str(events), "--output", str(alerts)]


def _mib(path: Path) -> str:
    return f"{path.stat().st_size / 2**20:,.1f} MiB"


@click.command()
@click.option("--scenario", default="default", show_default=True, help="Scenario name or TOML.")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--duration", default=None, help="Event-time length, e.g. 6h (default: scenario's).")
@click.option("--fleet-scale", type=float, default=None, help="Multiply account counts.")
@click.option("--reuse", is_flag=True, help="Keep an already simulated scenario in place.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=ROOT / ".data" / "bench",
    show_default=True,
    help="Parent directory of the run (git-ignored).",
)
def main(
    scenario: str,
    seed: int,
    duration: str | None,
    fleet_scale: float | None,
    reuse: bool,
    out: Path,
) -> None:
    """Simulate, score with `distillwatch score`, and print the detection scorecard."""
    loaded = load_scenario(scenario)
    duration_s = parse_duration(duration) if duration else loaded.duration_s
    scale_tag = "" if fleet_scale is None else f"-x{fleet_scale:g}"
    run_dir = out / f"{loaded.name}-seed{seed}-{duration_s:.0f}s{scale_tag}"
    events, labels, alerts = (run_dir / n for n in ("events.jsonl", "labels.jsonl", "alerts.jsonl"))
    timings: dict[str, float] = {}

    if reuse and events.exists() and labels.exists():
        click.echo(f"[simulate] reusing {run_dir}", err=True)
    else:
        started = time.perf_counter()
        sim = generate(loaded, seed=seed, duration_s=duration_s, fleet_scale=fleet_scale)
        written, accounts = write_scenario(sim, run_dir, progress=True)
        timings["simulate"] = time.perf_counter() - started
        click.echo(
            f"[simulate] {written:,} events, {accounts:,} accounts, {_mib(events)}"
            f" in {timings['simulate']:.1f}s ({written / timings['simulate']:,.0f} events/s)",
            err=True,
        )

    argv = score_command(events, alerts)
    click.echo(f"[score] {' '.join(argv)}", err=True)
    # the checkout must win over any installed copy, for the subprocess too
    python_path = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in python_path if p)}
    started = time.perf_counter()
    completed = subprocess.run(argv, cwd=ROOT, env=env, check=False)
    timings["score"] = time.perf_counter() - started
    if completed.returncode != 0 or not alerts.exists():
        raise click.ClickException(
            f"`{' '.join(argv[-5:])}` exited with {completed.returncode} after"
            f" {timings['score']:.1f}s; nothing to evaluate"
        )
    n_events = sum(1 for _ in events.open("rb"))
    click.echo(
        f"[score] {timings['score']:.1f}s ({n_events / timings['score']:,.0f} events/s)", err=True
    )

    started = time.perf_counter()
    card = evaluate_files(labels, alerts)
    timings["evaluate"] = time.perf_counter() - started
    (run_dir / "scorecard.json").write_text(json.dumps(card.to_dict(), indent=2) + "\n")

    click.echo(format_scorecard(card))
    click.echo("")
    click.echo(
        "timings: " + ", ".join(f"{step} {seconds:.1f}s" for step, seconds in timings.items())
    )


if __name__ == "__main__":
    main()

"""The `distillwatch` command line: worker, topics, produce, score, sql, simulate, evaluate,
demo."""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

import click

from streams.errors import StreamsError
from streams.settings import Settings

# The worker's garbage-collector thresholds (see `worker`); bench/core.py measures with them.
WORKER_GC_THRESHOLD = (50_000, 20, 100)


def _settings(ctx: click.Context) -> Settings:
    settings = ctx.obj
    assert isinstance(settings, Settings)
    return settings


@click.group()
@click.pass_context
def main(ctx: click.Context) -> None:
    """distillwatch: real-time detection of model distillation and extraction campaigns.

    Configuration comes from environment variables (see the README)."""
    try:
        ctx.obj = Settings()
    except Exception as exc:
        raise click.ClickException(f"bad configuration: {exc}") from exc


@main.command()
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run a stream-processing worker until interrupted."""
    from streams import memory

    memory.limit_arenas()  # before any thread starts (see streams/memory.py)
    import faust

    from streams.kafka import ensure_topics
    from streams.pipeline import Pipeline

    settings = _settings(ctx)
    try:
        created = ensure_topics(settings)
    except StreamsError as exc:
        raise click.ClickException(str(exc)) from exc
    if created:
        click.echo(f"created topics: {', '.join(created)}", err=True)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    pipeline = Pipeline(settings)
    try:
        pipeline.open_clickhouse()
    except StreamsError as exc:
        raise click.ClickException(str(exc)) from exc
    # The worker allocates small objects by the million; CPython's default collection
    # thresholds made every step 2-6x slower (bench/PROFILE.md). What exists at start-up
    # (modules, the app) never needs collecting again.
    gc.collect()
    gc.freeze()
    gc.set_threshold(*WORKER_GC_THRESHOLD)
    faust.Worker(pipeline.app, loglevel=settings.log_level, quiet=True).execute_from_commandline()


@main.group()
def topics() -> None:
    """Create or describe the pipeline's Kafka topics."""


@topics.command("create")
@click.pass_context
def topics_create(ctx: click.Context) -> None:
    """Create the topics that do not exist yet."""
    from streams.kafka import ensure_topics

    try:
        created = ensure_topics(_settings(ctx.find_root()))
    except StreamsError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"created: {', '.join(created)}" if created else "all topics exist")


@topics.command("describe")
@click.pass_context
def topics_describe(ctx: click.Context) -> None:
    """List the topics with their purpose and partition count."""
    from streams.kafka import describe_topics
    from streams.sql import format_table

    try:
        rows = describe_topics(_settings(ctx.find_root()))
    except StreamsError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        format_table(
            ["topic", "partitions", "purpose"],
            [[r["topic"], r["partitions"] if r["partitions"] is not None else "missing",
              r["purpose"]] for r in rows],
        )
    )


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--rate", type=float,
              help="events per second (wall clock); default: as fast as possible")
@click.option("--speed", type=float, help="replay event time compressed by this factor instead")
@click.option("--batch", type=int, default=1, show_default=True,
              help="events per record (a JSON array), as a gateway flush sends them")
@click.option("--topic", help="topic to write to; default: the input topic")
@click.pass_context
def produce(ctx: click.Context, file: Path, rate: float | None, speed: float | None,
            batch: int, topic: str | None) -> None:
    """Send a JSON-lines FILE of events to the input topic, keyed by account."""
    from streams.producer import produce_lines

    if batch < 1 or batch > 10_000:
        raise click.BadParameter("must be between 1 and 10,000", param_hint="--batch")
    if rate is not None and speed is not None:
        raise click.UsageError("give --rate or --speed, not both")
    total = sum(1 for _ in file.open("rb"))
    try:
        with file.open("rb") as handle:
            report = produce_lines(_settings(ctx), handle, topic=topic, rate=rate, speed=speed,
                                   batch=batch, total=total)
    except StreamsError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"sent {report.events:,} events in {report.records:,} records in {report.seconds:.1f}s"
        f" ({report.events / max(report.seconds, 1e-9):,.0f} events/s)"
        + (f"; {report.failed:,} FAILED" if report.failed else ""),
        err=True,
    )
    if report.failed:
        sys.exit(1)


@main.command()
@click.option("--input", "input_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="events, one JSON event (or batch) per line, in any order")
@click.option("--output", "output_path", required=True, type=click.Path(path_type=Path),
              help="alerts, one per line ('-' for standard output)")
@click.option("--deterministic", is_flag=True,
              help="set detected_at to the event time, so that replays are byte-identical")
@click.pass_context
def score(ctx: click.Context, input_path: Path, output_path: Path, deterministic: bool) -> None:
    """Run the streaming pipeline's detection over a file, offline, in event time."""
    from models.linking.linker import CampaignLinker
    from streams.pipeline import engine_from_settings
    from streams.replay import score_file

    engine = engine_from_settings(_settings(ctx))
    linker = CampaignLinker()
    stamp = not deterministic
    if str(output_path) == "-":
        report = score_file(input_path, sys.stdout, engine, linker=linker, stamp_wall_clock=stamp)
    else:
        output_path.parent.mkdir(parents=True, exist_ok=True)
        with output_path.open("w") as out:
            report = score_file(input_path, out, engine, linker=linker, stamp_wall_clock=stamp)
    for lineno, rejection in report.rejections:
        where = "" if rejection.batch_index is None else f" element {rejection.batch_index}"
        click.echo(f"line {lineno}{where}: rejected ({rejection.kind}): {rejection.reason}",
                   err=True)
    if report.rejected > len(report.rejections):
        click.echo(f"... and {report.rejected - len(report.rejections):,} more rejected", err=True)
    click.echo(
        f"{report.events:,} events, {report.rejected:,} rejected, {report.alerts:,} alerts"
        f" -> {output_path}", err=True,
    )


@main.command()
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "tsv"]), default="table",
              show_default=True)
@click.pass_context
def sql(ctx: click.Context, query: str, fmt: str) -> None:
    """Run a read-only SQL QUERY against distillwatch's ClickHouse tables."""
    from streams.sql import format_table, run_query

    try:
        columns, rows, where = run_query(_settings(ctx), query)
    except StreamsError as exc:
        raise click.ClickException(str(exc)) from exc
    if fmt == "json":
        for row in rows:
            click.echo(json.dumps(dict(zip(columns, row, strict=True)), default=str))
    elif fmt == "tsv":
        click.echo("\t".join(columns))
        for row in rows:
            click.echo("\t".join(str(v) for v in row))
    else:
        click.echo(format_table(columns, rows))
        click.echo(f"(ran: {where})", err=True)


@main.command()
@click.option("--scenario", default="demo", show_default=True, help="simulator scenario")
@click.option("--seed", default=7, show_default=True)
@click.option("--speed", default=120.0, show_default=True,
              help="event time replayed this many times faster than real time")
@click.pass_context
def demo(ctx: click.Context, scenario: str, seed: int, speed: float) -> None:
    """End to end on the embedded defaults: worker, simulated attack traffic, live alerts, SQL."""
    from streams.demo import run_demo

    try:
        run_demo(_settings(ctx), scenario=scenario, seed=seed, speed=speed)
    except StreamsError as exc:
        raise click.ClickException(str(exc)) from exc


def _register_simulator() -> None:
    try:
        from simulator.cli import evaluate_command, simulate_command
    except ImportError:  # the simulator package is optional for a worker-only install
        return
    main.add_command(simulate_command, "simulate")
    main.add_command(evaluate_command, "evaluate")


_register_simulator()

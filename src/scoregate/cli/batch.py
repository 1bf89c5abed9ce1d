"""``scoregate batch``: score files beyond memory on every core; resume, list, show and verify jobs.

``scoregate batch REF INPUT OUTPUT [options]`` starts a job (the group inserts the ``run``
command when the first word is not one of its subcommands), so the common case reads as
the issue's interface and ``resume JOB``, ``list``, ``show JOB``, ``verify JOB`` sit beside it.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import click
import typer
from rich.table import Table
from typer.core import TyperGroup

from scoregate.cli.app import app, get_registry, out, rule
from scoregate.errors import InvalidInputError, ScoregateError
from scoregate.limits import between, positive, seconds


class _RunByDefault(TyperGroup):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


batch_app = typer.Typer(cls=_RunByDefault, no_args_is_help=True, help="Score files in batch: run, resume, verify.")
app.add_typer(batch_app, name="batch", rich_help_panel="Registry")

EXIT_FAILED = 1  # the reject rate went above the limit
EXIT_STOPPED = 9  # a chunk failed twice or the job was interrupted: resumable


def _keep(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    names = tuple(v.strip() for v in value.split(","))
    if any(not n for n in names) or len(set(names)) != len(names):
        raise InvalidInputError(f"invalid --keep {value!r}: expected distinct column names separated by commas")
    return names


class _Bar:
    """A rich progress bar on a terminal, nothing otherwise (a nightly job's log stays clean)."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = None
        if out.is_terminal:
            self.progress = Progress(
                TextColumn("[bold]scoring"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("rows  {task.fields[rate]}"),
                TimeRemainingColumn(),
                console=out,
            )
            self.progress.start()
            self.task = self.progress.add_task("rows", total=None, rate="")
        self.started: float | None = None
        self.first = 0

    def __call__(self, done: int, total: int) -> None:
        import time

        if self.progress is None:
            return
        now = time.monotonic()
        if self.started is None:
            self.started, self.first = now, done
        elapsed = max(now - self.started, 1e-9)
        rate = (done - self.first) / elapsed if done > self.first else 0.0
        self.progress.update(self.task, completed=done, total=total, rate=f"{rate:,.0f} rows/s" if rate else "")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _report(result: Any) -> None:
    from scoregate.batch.job import JobState

    colour = {JobState.DONE: "green", JobState.FAILED: "red", JobState.STOPPED: "yellow"}[result.state]
    out.print(
        f"[{colour}]{result.state.value}[/] job {result.job}: {result.scored} rows scored, {result.rejected} rejected "
        f"({result.chunks_done}/{result.chunks_total} chunks, {result.seconds:.1f} s)"
    )
    if result.state is not JobState.DONE:
        out.print(result.message, highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAILED if result.state is JobState.FAILED else EXIT_STOPPED)


@batch_app.command("run")
def batch_run(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION or NAME@ALIAS.")],
    input: Annotated[str, typer.Argument(help="Parquet, CSV or JSON Lines: a file, a folder or a glob; s3:// too.")],
    output: Annotated[str, typer.Argument(help="A new folder: the output parts, rejects and the job's manifest.")],
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: the number of cores).")] = None,
    keep: Annotated[str | None, typer.Option(help="Input columns copied to the output, e.g. id,customer_id.")] = None,
    chunk_rows: Annotated[int, typer.Option(help="Rows per chunk: what one worker holds at once.")] = 100_000,
    format: Annotated[str, typer.Option("--format", help="Output parts: parquet or csv.")] = "parquet",
    max_reject_rate: Annotated[
        float, typer.Option(help="Fail the job when more than this share of rows breaks the rules.")
    ] = 0.01,
    engine: Annotated[str, typer.Option(help="local, ray or spark.")] = "local",
    log: Annotated[bool, typer.Option("--log", help="Append the scored rows to the prediction log.")] = False,
    chunk_timeout: Annotated[
        float, typer.Option(help="Seconds one chunk may take; then its worker is killed.", callback=rule(seconds))
    ] = 3600.0,
    ray_address: Annotated[str | None, typer.Option(help="--engine ray: the cluster (default RAY_ADDRESS).")] = None,
) -> None:
    """Score a file (or a folder of them) with a registered version, beyond memory and resumably."""
    from scoregate.batch.plan import MAX_CHUNK_ROWS, BatchOptions, Engine, OutputFormat
    from scoregate.batch.service import BatchService

    between("--chunk-rows", chunk_rows, 1, MAX_CHUNK_ROWS)
    between("--max-reject-rate", max_reject_rate, 0.0, 1.0)
    if workers is not None:
        between("--workers", workers, 1, 256)
    try:
        output_format, chosen = OutputFormat(format), Engine(engine)
    except ValueError:
        raise InvalidInputError(f"invalid --format {format!r} or --engine {engine!r}") from None
    options = BatchOptions(
        chunk_rows=chunk_rows,
        keep=_keep(keep),
        output_format=output_format,
        max_reject_rate=max_reject_rate,
        log=log,
    )
    bar = _Bar()
    try:
        result = BatchService(get_registry()).start(
            ref,
            input,
            output,
            options,
            engine=chosen,
            workers=workers,
            chunk_timeout=chunk_timeout,
            on_progress=bar,
            on_plan=lambda m: out.print(f"job {m.job}: {m.total_rows} rows in {len(m.chunks)} chunks"),
            ray_address=ray_address,
        )
    finally:
        bar.close()
    _report(result)


@batch_app.command("resume")
def batch_resume(
    job: Annotated[str, typer.Argument(help="The job id (see `scoregate batch list`).")],
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: the number of cores).")] = None,
    ray_address: Annotated[str | None, typer.Option(help="--engine ray: the cluster (default RAY_ADDRESS).")] = None,
) -> None:
    """Finish a stopped or killed job; refused when its input changed."""
    from scoregate.batch.service import BatchService

    if workers is not None:
        between("--workers", workers, 1, 256)
    bar = _Bar()
    try:
        result = BatchService(get_registry()).resume(job, workers=workers, on_progress=bar, ray_address=ray_address)
    finally:
        bar.close()
    _report(result)


@batch_app.command("list")
def batch_list(limit: Annotated[int, typer.Option(help="Newest jobs shown.")] = 50) -> None:
    """The newest batch jobs."""
    from scoregate.batch.service import BatchService

    positive("--limit", limit, at_most=10_000)
    table = Table("job", "version", "state", "rows", "scored", "rejected", "engine", "by", "started")
    for r in BatchService(get_registry()).list(limit):
        table.add_row(
            r.job,
            r.ref,
            r.state,
            str(r.rows),
            str(r.scored),
            str(r.rejected),
            r.engine,
            r.created_by,
            f"{r.created_at:%Y-%m-%d %H:%M:%S}",
        )
    out.print(table)


@batch_app.command("show")
def batch_show(
    job: Annotated[str, typer.Argument(help="The job id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
) -> None:
    """A job's record and its progress, read from its folder (works while it runs)."""
    from dataclasses import asdict

    from scoregate.batch.service import BatchService

    service = BatchService(get_registry())
    record = asdict(service.get(job))
    try:
        record["progress"] = service.progress(job)
    except ScoregateError as exc:
        record["progress"] = {"unavailable": exc.message}
    if as_json:
        out.print_json(json.dumps(record, default=str))
        return
    table = Table("field", "value", title=f"batch job {job}", show_header=False)
    for key in ("ref", "artifact_digest", "state", "message", "engine", "input", "input_digest", "output"):
        table.add_row(key, str(record[key]))
    for key in ("output_digest", "rows", "scored", "rejected", "chunks", "runs", "seconds", "created_by"):
        table.add_row(key, str(record[key]))
    table.add_row("created_at", str(record["created_at"]))
    table.add_row("finished_at", str(record["finished_at"]))
    p = record["progress"]
    if "chunks_done" in p:
        table.add_row(
            "progress", f"{p['chunks_done']}/{p['chunks_total']} chunks, {p['rows_done']}/{p['rows_total']} rows"
        )
    for f in record["input_files"]:
        table.add_row("input file", f"{f['url']} ({f['size']} bytes, sha256:{f['sha256']})")
    out.print(table)


@batch_app.command("verify")
def batch_verify(
    job: Annotated[str, typer.Argument(help="The job id.")],
    sample_chunks: Annotated[int, typer.Option(help="Chunks re-scored from the input.")] = 3,
    sample_rows: Annotated[int, typer.Option(help="Rows compared per re-scored chunk.")] = 1000,
) -> None:
    """Check the output against the recorded digests and re-score a sample from the input; exit 1 on a mismatch."""
    from scoregate.batch.service import BatchService

    between("--sample-chunks", sample_chunks, 1, 1_000)
    between("--sample-rows", sample_rows, 1, 1_000_000)
    check = BatchService(get_registry()).verify(job, sample_chunks=sample_chunks, sample_rows=sample_rows)
    if check.ok:
        out.print(
            f"[green]verified[/] job {job}: {check.parts_checked} parts match, {check.rows_rescored} rows re-scored"
        )
        return
    out.print(f"[red]MISMATCH[/] job {job}:")
    for problem in check.problems:
        out.print(f"  {problem}", highlight=False)
    raise typer.Exit(1)

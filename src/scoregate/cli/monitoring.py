"""``scoregate monitor``: reference profiles, drift against them, and the history of results."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from scoregate.cli.app import app, err, get_registry, out
from scoregate.errors import InvalidInputError, ScoregateError

monitor_app = typer.Typer(no_args_is_help=True, help="Monitoring: reference profiles, drift, history of results.")
app.add_typer(monitor_app, name="monitor", rich_help_panel="Monitoring")

#: Exit code of ``drift --fail-on-drift`` when a column drifted.
DRIFT_FOUND = 1


class ArgumentError(ScoregateError):
    """A bad option value: exit 2, like a bad reference."""


@monitor_app.command("reference")
def reference(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION or NAME@ALIAS.")],
    data: Annotated[Path, typer.Argument(help="The reference data (Parquet or CSV), e.g. the training data.")],
    score: Annotated[
        bool, typer.Option("--score/--no-score", help="Score the data with the version's model to profile its outputs.")
    ] = True,
) -> None:
    """Profile DATA (streamed, every row) and bind the profile to the version; immutable once recorded."""
    from scoregate.monitoring.service import record_reference

    registry = get_registry()
    try:
        version, profile, digest, new = record_reference(registry, ref, data, score=score)
    finally:
        registry.close()
    outputs = sum(1 for c in profile.columns if c.role.value == "output")
    verb = "recorded" if new else "already recorded (same profile)"
    out.print(
        f"reference profile sha256:{digest[:12]} {verb} for [bold]{escape(version.ref)}[/]: "
        f"{profile.source.rows:,} rows, {len(profile.columns) - outputs} inputs, {outputs} outputs, "
        f"{len(profile.canonical_json()) / 1024:.0f} KiB",
        highlight=False,
    )


@monitor_app.command("drift")
def drift(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION or NAME@ALIAS.")],
    current: Annotated[Path | None, typer.Option(help="Current data to compare (Parquet or CSV).")] = None,
    from_log: Annotated[bool, typer.Option("--from-log", help="Compare the version's prediction log.")] = False,
    since: Annotated[str | None, typer.Option(help="With --from-log: rows of the last 15m, 24h, 7d, ...")] = None,
    between: Annotated[
        tuple[str, str] | None, typer.Option(help="With --from-log: rows logged from A up to B (ISO 8601, UTC).")
    ] = None,
    reference_data: Annotated[
        Path | None, typer.Option("--reference", help="Build the reference from this file instead of the stored one.")
    ] = None,
    exact_ks: Annotated[
        bool, typer.Option("--exact-ks", help="Also the exact KS over raw values (needs --reference).")
    ] = False,
    calibrated: Annotated[
        bool, typer.Option("--calibrated", help="Thresholds from a bootstrap over reference chunks, not fixed.")
    ] = False,
    alpha: Annotated[float, typer.Option(help="False discovery rate across columns.")] = 0.01,
    statistic: Annotated[
        str | None, typer.Option(help="Decide every column by this statistic (psi, ks, jensen_shannon, ...).")
    ] = None,
    score: Annotated[
        bool, typer.Option("--score/--no-score", help="Score the current data when its outputs are not in it.")
    ] = True,
    record: Annotated[
        bool, typer.Option("--record/--no-record", help="Store the result and link it to the version.")
    ] = True,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the result JSON to this file.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result JSON.")] = False,
    fail_on_drift: Annotated[bool, typer.Option("--fail-on-drift", help="Exit 1 when any column drifted.")] = False,
) -> None:
    """Compare current data with the version's reference profile, column by column."""
    from scoregate.monitoring.drift import DriftSettings
    from scoregate.monitoring.statistics import Statistic
    from scoregate.refs import ModelRef

    ModelRef.parse(ref)
    if (current is None) == (not from_log):
        raise ArgumentError("give exactly one of --current FILE and --from-log")
    if not from_log and (since is not None or between is not None):
        raise ArgumentError("--since and --between go with --from-log")
    if since is not None and between is not None:
        raise ArgumentError("give --since or --between, not both")
    if exact_ks and (from_log or reference_data is None):
        raise ArgumentError("--exact-ks needs raw values on both sides: give --current FILE and --reference FILE")
    window = _window(since, between) if from_log else None
    chosen = None
    if statistic is not None:
        try:
            chosen = Statistic(statistic)
        except ValueError:
            raise ArgumentError(
                f"invalid --statistic {statistic!r}: choose one of {', '.join(s.value for s in Statistic)}"
            ) from None
    try:
        settings = DriftSettings(alpha=alpha, statistic=chosen, calibrated=calibrated)
    except ValueError as exc:
        raise ArgumentError(f"invalid drift settings: {_first(exc)}") from None
    if output is not None and (output.is_dir() or not output.parent.is_dir()):
        raise InvalidInputError(f"cannot write {output}: give a file in an existing folder")
    from scoregate.monitoring import service

    registry = get_registry()
    try:
        if from_log:
            run = service.drift_log(
                registry,
                ref,
                window,
                reference=reference_data,
                settings=settings,
                exact_ks=exact_ks,
                record=record,
            )
        else:
            run = service.drift_file(
                registry,
                ref,
                current,
                reference=reference_data,
                settings=settings,
                exact_ks=exact_ks,
                score=score,
                record=record,
            )
        changes = _evaluate_alerts(registry, run)
    finally:
        registry.close()
    result = run.result
    if output is not None:
        tmp = output.with_name(f".{output.name}.tmp")
        tmp.write_bytes(result.canonical_json())
        tmp.replace(output)
    if as_json:
        out.print_json(result.canonical_json().decode())
    else:
        _print_result(result)
        for note in run.notes:
            err.print(f"note: {escape(note)}", highlight=False)
        drifted = [c.name for c in result.drifted]
        judged = sum(1 for c in result.columns if c.drifted is not None)
        stored = f"; result sha256:{run.digest[:12]} recorded" if run.digest else ""
        names = f" ({escape(', '.join(drifted))})" if drifted else ""
        out.print(
            f"{len(drifted)} of {judged} judged columns drifted{names}; {result.current.rows:,} current rows, "
            f"profile sha256:{run.profile_digest[:12]}{stored}",
            highlight=False,
        )
        if changes:
            from scoregate.cli.alerting import print_changes

            print_changes(changes, result.subject.ref if result.subject else ref)
    if fail_on_drift and result.drifted:
        raise typer.Exit(DRIFT_FOUND)


def _evaluate_alerts(registry: Any, run: Any) -> list[Any]:
    """A recorded result is an observation: evaluate the version's alerts on it right away."""
    if run.digest is None or run.result.subject is None:
        return []
    from scoregate.monitoring.alerting import evaluate_version

    return evaluate_version(registry, run.result.subject.ref)


def _window(since: str | None, between: tuple[str, str] | None) -> tuple[dt.datetime | None, dt.datetime | None]:
    from scoregate.monitoring.logsource import parse_between, parse_since

    try:
        if since is not None:
            return parse_since(since), None
        if between is not None:
            return parse_between(*between)
    except ValueError as exc:
        raise ArgumentError(str(exc)) from None
    return None, None


def _first(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return errors()[0]["msg"]
    return str(exc).splitlines()[0]


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0 or 1e-3 <= abs(value) < 1e4:
        return f"{value:.4f}"
    return f"{value:.2e}"


def _print_result(result: Any) -> None:
    subject = result.subject.ref if result.subject else "reference"
    table = Table(
        "column",
        "role",
        "type",
        "statistic",
        "value",
        "threshold",
        "p adj.",
        "verdict",
        "nulls cur.",
        "note",
        title=f"drift of {escape(subject)}",
    )
    for c in result.columns:
        verdict = "-" if c.drifted is None else ("[red]drifted[/]" if c.drifted else "[green]ok[/]")
        threshold = c.calibration.critical_value if c.calibration else c.threshold
        nulls = c.quality.null_share_current
        table.add_row(
            escape(c.name),
            c.role.value,
            c.type.value,
            c.statistic.value if c.statistic else "-",
            _fmt(c.value),
            _fmt(threshold),
            _fmt(c.p_adjusted),
            verdict,
            "-" if nulls is None else f"{nulls:.1%}",
            escape(c.note or ""),
        )
    out.print(table)


@monitor_app.command("history")
def history(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION or NAME@ALIAS.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The drift results recorded for a version, oldest first."""
    from scoregate.monitoring import store

    registry = get_registry()
    try:
        version = registry.resolve(ref)
        entries = store.history(registry, version)
    finally:
        registry.close()
    if as_json:
        out.print_json(
            json.dumps(
                [
                    {
                        "seq": e.seq,
                        "time": e.time.isoformat(),
                        "actor": e.actor,
                        "result_digest": e.result_digest,
                        "profile_digest": e.profile_digest,
                        "current": e.current,
                        "columns": e.columns,
                        "drifted": e.drifted,
                        "calibrated": e.calibrated,
                    }
                    for e in entries
                ]
            )
        )
        return
    if not entries:
        out.print(f"no drift results recorded for {escape(version.ref)}")
        return
    table = Table("time (UTC)", "by", "result", "profile", "current data", "rows", "drifted", title=escape(version.ref))
    for e in entries:
        data = e.current.get("uri") or e.current.get("source", "")
        table.add_row(
            f"{e.time:%Y-%m-%d %H:%M:%S}",
            escape(e.actor),
            f"sha256:{e.result_digest[:12]}",
            f"sha256:{e.profile_digest[:12]}",
            escape(str(data)),
            f"{e.current.get('rows', 0):,}",
            f"{len(e.drifted)}/{e.columns}" + (f" ({escape(', '.join(e.drifted[:5]))})" if e.drifted else ""),
        )
    out.print(table)


@monitor_app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION or NAME@ALIAS.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the profile document.")] = False,
) -> None:
    """The reference profile bound to a version: where it came from and each column's summary."""
    from scoregate.monitoring import store

    registry = get_registry()
    try:
        version = registry.resolve(ref)
        stored = store.bound_reference(registry, version)
    finally:
        registry.close()
    profile = stored.profile
    if as_json:
        out.print_json(profile.canonical_json().decode())
        return
    source = profile.source
    out.print(
        f"[bold]{escape(version.ref)}[/] reference profile sha256:{stored.digest} "
        f"({len(profile.canonical_json()) / 1024:.0f} KiB), recorded {stored.recorded_at:%Y-%m-%d %H:%M:%S} UTC "
        f"by {escape(stored.recorded_by)}\n{source.rows:,} rows of {escape(source.uri or '-')} "
        f"sha256:{source.sha256 or '-'}; {profile.statistics}",
        highlight=False,
    )
    table = Table("column", "role", "type", "bins", "nulls", "mean", "std", "range / top levels")
    for c in profile.columns:
        if c.kind.value == "numeric":
            detail = "-" if c.minimum is None else f"[{c.minimum:g}, {c.maximum:g}]"
        elif c.kind.value == "categorical":
            ranked = sorted(zip(c.levels, c.counts, strict=False), key=lambda lc: -lc[1])[:4]
            detail = ", ".join(f"{escape(level)} {count / max(c.count, 1):.0%}" for level, count in ranked)
        else:
            detail = "not binned"
        table.add_row(
            escape(c.name),
            c.role.value,
            c.type.value,
            str(len(c.counts)),
            f"{c.nulls / c.rows:.1%}" if c.rows else "-",
            _fmt(c.mean),
            _fmt(c.std),
            detail,
        )
    out.print(table)


@monitor_app.command("performance")
def performance(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION or NAME@ALIAS.")],
    by: Annotated[str, typer.Option(help="Period of prediction time: day or week (UTC; weeks start Monday).")] = "day",
    since: Annotated[str | None, typer.Option(help="Predictions of the last 15m, 24h, 7d, ...")] = None,
    between: Annotated[
        tuple[str, str] | None, typer.Option(help="Predictions logged from A up to B (ISO 8601, UTC).")
    ] = None,
    reference_data: Annotated[
        Path | None,
        typer.Option("--reference", help="Labelled data to calibrate the estimate on (default: the training sample)."),
    ] = None,
    label: Annotated[str | None, typer.Option(help="With --reference: its label column.")] = None,
    complete_share: Annotated[
        float, typer.Option(help="A period's figure is the realized one once this share of it has labels.")
    ] = 0.95,
    record: Annotated[
        bool, typer.Option("--record/--no-record", help="Store the result and link it to the version.")
    ] = True,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the result JSON to this file.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result JSON.")] = False,
) -> None:
    """Realized metrics where labels have landed, the label-free estimate where not, per period."""
    from scoregate.monitoring.measure import measure
    from scoregate.monitoring.performance import PerformanceSettings, Period
    from scoregate.refs import ModelRef

    ModelRef.parse(ref)
    try:
        period = Period(by)
    except ValueError:
        raise ArgumentError(f"invalid --by {by!r}: choose day or week") from None
    if since is not None and between is not None:
        raise ArgumentError("give --since or --between, not both")
    if label is not None and reference_data is None:
        raise ArgumentError("--label goes with --reference FILE")
    if reference_data is not None and label is None:
        raise ArgumentError("--reference FILE needs --label COLUMN (the reference's labels)")
    try:
        settings = PerformanceSettings(complete_share=complete_share)
    except ValueError as exc:
        raise ArgumentError(f"invalid --complete-share {complete_share}: {_first(exc)}") from None
    start, end = _window(since, between)
    if output is not None and (output.is_dir() or not output.parent.is_dir()):
        raise InvalidInputError(f"cannot write {output}: give a file in an existing folder")
    registry = get_registry()
    try:
        result, digest = measure(
            registry,
            ref,
            record_result=record,
            by=period,
            since=start,
            until=end,
            reference=reference_data,
            label=label,
            settings=settings,
        )
    finally:
        registry.close()
    if output is not None:
        tmp = output.with_name(f".{output.name}.tmp")
        tmp.write_bytes(result.canonical_json())
        tmp.replace(output)
    if as_json:
        out.print_json(result.to_json())
        return
    _print_performance(result)
    for note in result.notes:
        err.print(f"note: {escape(note)}", highlight=False)
    overall = result.overall
    stored = f"; result sha256:{digest[:12]} recorded" if digest else ""
    figure = "-" if overall.figure is None else f"{overall.figure:.4f} ({overall.source.value})"
    out.print(
        f"{result.headline} {figure} over {overall.predictions:,} predictions, "
        f"{overall.matched_share:.1%} labelled{stored}",
        highlight=False,
    )


_SHOWN = {
    "binary": ("roc_auc", "accuracy", "precision", "recall", "f1", "log_loss", "brier", "calibration_error"),
    "multiclass": ("roc_auc", "accuracy", "precision", "recall", "f1", "log_loss"),
    "regression": ("mae", "rmse", "r2"),
}


def _print_performance(result: Any) -> None:
    names = _SHOWN[result.task.value]
    estimated = result.calibration is not None
    columns = ["period", "predictions", "labelled", "lag p50/p90 (d)", *names]
    if estimated:
        columns += [f"est. {result.headline} [95% band]", "est. accuracy"]
    columns.append(f"{result.headline} shown")
    table = Table(*columns, title=f"performance of {escape(result.subject.ref)} by {result.by.value}")
    for p in [*result.periods, result.overall]:
        label = "all" if p.start is None else f"{p.start:%Y-%m-%d}"
        lag = "-" if p.lag is None else f"{p.lag.median_days:.1f}/{p.lag.p90_days:.1f}"
        row = [label, f"{p.predictions:,}", f"{p.matched_share:.1%}", lag, *(_fmt(p.realized.get(n)) for n in names)]
        if estimated:
            e = p.estimated.get(result.headline)
            band = "-" if e is None or e.low is None else f" [{e.low:.4f}, {e.high:.4f}]"
            accuracy = p.estimated.get("accuracy")
            row += ["-" if e is None else _fmt(e.value) + band, _fmt(accuracy.value if accuracy else None)]
        row.append("-" if p.figure is None else f"{p.figure:.4f} {p.source.value}")
        table.add_row(*row)
    out.print(table)
    if result.calibration is not None:
        c = result.calibration
        out.print(
            f"estimate calibrated on {escape(c.uri)} ({c.rows:,} rows, {c.positives:,} positive): it assumes "
            f"scores stay calibrated; calibration error on the reference {c.error_calibrated:.4f} "
            f"(cross-fitted; the raw scores' {c.error_raw:.4f})",
            highlight=False,
        )

"""``scoregate validate``, ``profile``, ``loadtest`` and ``reproduce``.

Registered on the main Typer app by ``register_commands(app, get_registry)``. Each
check writes its report folder, records its run on the version as governance evidence
(``--no-record`` to skip; the caller's token must allow it), prints a summary and exits
1 when the check fails (validation failures, latency budget exceeded, a prediction that
does not reproduce), so CI can gate on it. The gates judge a recorded run again under
the policy; ``scoregate check`` says whether it counts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from scoregate.cli.app import rule
from scoregate.limits import (
    DEFAULT_CALL_TIMEOUT_S,
    DEFAULT_MODEL_TIMEOUT_S,
    MAX_DURATION_S,
    MAX_PROFILED_REQUESTS,
    MAX_ROWS_PER_REQUEST,
    MAX_RPS,
    MAX_USERS,
    at_least,
    between,
    milliseconds,
    seconds,
)
from scoregate.validation.settings import (
    DEFAULT_ATOL,
    DEFAULT_INDEPENDENT_ATOL,
    DEFAULT_INDEPENDENT_RTOL,
    DEFAULT_MAX_DURATION_S,
    DEFAULT_RTOL,
)

out = Console()

#: Exit code when a check ran but did not pass (errors a user causes keep the CLI's own codes).
CHECK_FAILED = 1


def _default_folder(kind: str, ref: str) -> Path:
    return Path("scoregate-reports") / f"{kind}-{ref.replace('@', '-')}"


def _may_record(registry: Any, ref: str, *, validate: bool = False) -> None:
    """Refuse before the (long) run when the caller may not record the evidence afterwards."""
    from scoregate.governance.access import Permission

    caller = registry.whoami()
    caller.require(Permission.REGISTER, subject=ref)
    if validate:
        caller.require(Permission.VALIDATE, subject=ref)


def _record(registry: Any, ref: str, kind: str, document: dict[str, Any], name: str) -> dict[str, Any]:
    """Record this run's ``document`` on ``ref`` as ``kind`` evidence and say whether it counts."""
    from scoregate.cli.app import governance_for

    record = governance_for(registry).record_run(ref, kind, document, name=name)
    out.print(
        f"recorded {kind} run #{record['id']} on {escape(ref)} (sha256:{record['digest'][:12]}, "
        f"bound to artifact sha256:{record['bound_digest'][:12]} and its contract)",
        highlight=False,
    )
    if record["problems"]:
        out.print(
            f"it does not count for the policy: {escape('; '.join(record['problems'][:3]))}",
            highlight=False,
            soft_wrap=True,
        )
    return record


def _duration_rule(name: str, value: str) -> None:
    from scoregate.perf.loadtest import parse_duration

    between(name, parse_duration(value), 1, MAX_DURATION_S, "seconds")


def register_commands(app: typer.Typer, get_registry: Callable[[], Any]) -> None:
    @app.command(rich_help_panel="Validation and performance")
    def validate(
        ref: Annotated[str, typer.Argument(help="NAME@VERSION or NAME@ALIAS.")],
        target: Annotated[
            str, typer.Option(help="'python' (in-process) or the base URL of a running scoring server.")
        ] = "python",
        protocol: Annotated[str, typer.Option(help="For a URL target: json or v2.")] = "json",
        seed: Annotated[int, typer.Option(help="Seed for sampled rows (same seed, same cases).")] = 0,
        timeout: Annotated[float, typer.Option(help="Seconds one case may take before it counts as hung.")] = 10.0,
        max_duration: Annotated[
            float, typer.Option(help="Seconds the whole run may take; what is left is reported as not run.")
        ] = DEFAULT_MAX_DURATION_S,
        reference: Annotated[
            str,
            typer.Option(
                help="Parity reference: 'subprocess' (the artifact in a separate process), 'scorer' (your "
                "--reference-scorer file), 'onnx' (the sklearn model converted, scored by onnxruntime) or 'none'."
            ),
        ] = "subprocess",
        reference_scorer: Annotated[
            Path | None, typer.Option(help="For --reference scorer: a .py file with score(rows) or predict(frame).")
        ] = None,
        golden: Annotated[
            Path | None, typer.Option(help="Golden file of inputs and expected outputs (.json/.jsonl/.csv/.parquet).")
        ] = None,
        atol: Annotated[float, typer.Option(help="Parity tolerance, absolute (subprocess, golden).")] = DEFAULT_ATOL,
        rtol: Annotated[float, typer.Option(help="Parity tolerance, relative (subprocess, golden).")] = DEFAULT_RTOL,
        independent_atol: Annotated[
            float, typer.Option(help="Parity tolerance, absolute, for scorer and onnx references.")
        ] = DEFAULT_INDEPENDENT_ATOL,
        independent_rtol: Annotated[
            float, typer.Option(help="Parity tolerance, relative, for scorer and onnx references.")
        ] = DEFAULT_INDEPENDENT_RTOL,
        latency_budget_ms: Annotated[
            float | None, typer.Option(help="Latency budget per case; default the version's latency_budget_ms.")
        ] = None,
        memory_calls: Annotated[int, typer.Option(help="Repeated calls the memory check measures.")] = 20,
        memory_limit_mb: Annotated[
            float, typer.Option(help="Resident-memory growth over those calls that fails the memory check.")
        ] = 50.0,
        reference_rows: Annotated[int, typer.Option(help="Reference rows sampled into one case.")] = 100,
        output: Annotated[Path | None, typer.Option("--output", "-o", help="Report folder.")] = None,
        record: Annotated[
            bool, typer.Option("--record/--no-record", help="Record this run on the version as validation evidence.")
        ] = True,
        mark_validated: Annotated[
            bool, typer.Option("--mark-validated", help="When it passes, also mark the version validated.")
        ] = False,
    ) -> None:
        """Validate a version before deployment: generated edge cases, refusals, parity; JSON + HTML report."""
        from scoregate.refs import ModelRef
        from scoregate.validation import HttpTarget, ValidationSettings
        from scoregate.validation import validate as run_validation

        ModelRef.parse(ref)
        settings = ValidationSettings(
            reference=reference,
            reference_scorer=reference_scorer,
            golden=golden,
            atol=atol,
            rtol=rtol,
            independent_atol=independent_atol,
            independent_rtol=independent_rtol,
            timeout_s=timeout,
            max_duration_s=max_duration,
            latency_budget_ms=latency_budget_ms,
            memory_calls=memory_calls,
            memory_limit_mb=memory_limit_mb,
            seed=seed,
            reference_rows=reference_rows,
        )
        if mark_validated and not record:
            raise typer.BadParameter("--mark-validated needs the run recorded", param_hint="--no-record")
        registry = get_registry()
        version = registry.resolve(ref)
        if record:
            _may_record(registry, version.ref, validate=mark_validated)
        chosen = None
        if target != "python":
            if not target.startswith(("http://", "https://")):
                raise typer.BadParameter("use 'python' or an http(s) URL", param_hint="--target")
            chosen = HttpTarget(target, version.name, version.version, version.input_schema, protocol=protocol)
        folder = output or _default_folder("validation", version.ref)
        try:
            report = run_validation(registry, version.ref, target=chosen, settings=settings, out_dir=folder)
        finally:
            if chosen is not None:
                chosen.close()
        table = Table("case", "expected", "outcome", "reason", title=f"{report.model}: failed cases")
        for c in report.failures[:40]:
            table.add_row(escape(c.case.id), c.case.expect, c.outcome, escape(c.reason[:160]))
        if report.failures:
            out.print(table)
        _show_validation(report)
        out.print(f"report: {folder / 'report.json'} (HTML: {folder / 'report.html'})")
        recorded = _record(registry, version.ref, "validation", report.to_dict(), "report.json") if record else None
        marked = False
        if mark_validated and recorded is not None:
            if not recorded["problems"]:
                from scoregate.governance.service import Governance

                status = Governance(registry).mark_validated(version.ref)
                out.print(f"marked {escape(version.ref)} validated (status {status})")
                marked = True
            else:
                out.print(f"not marked validated: this run of {escape(version.ref)} does not meet the policy")
        out.print("[green]PASSED[/]" if report.passed else "[red]FAILED[/]")
        if not report.passed or (mark_validated and not marked):
            raise typer.Exit(CHECK_FAILED)

    @app.command(rich_help_panel="Validation and performance")
    def profile(
        ref: Annotated[str, typer.Argument(help="NAME@VERSION or NAME@ALIAS.")],
        requests: Annotated[
            int, typer.Option(help="Requests to profile.", callback=rule(between, 1, MAX_PROFILED_REQUESTS))
        ] = 200,
        rows: Annotated[
            int, typer.Option(help="Rows per request.", callback=rule(between, 1, MAX_ROWS_PER_REQUEST))
        ] = 1,
        top: Annotated[int, typer.Option(help="Functions to list.", callback=rule(at_least, 1))] = 15,
        timeout: Annotated[
            float,
            typer.Option(
                help="Seconds the whole run may take, loading the model included; then it is stopped (exit 1).",
                callback=rule(seconds),
            ),
        ] = DEFAULT_MODEL_TIMEOUT_S,
        call_timeout: Annotated[
            float,
            typer.Option(
                help="Seconds one request may take before the model counts as hung.",
                callback=rule(seconds),
            ),
        ] = DEFAULT_CALL_TIMEOUT_S,
        output: Annotated[
            Path | None, typer.Option("--output", "-o", help="Folder for .prof, SVG/HTML graphs.")
        ] = None,
        record: Annotated[
            bool, typer.Option("--record/--no-record", help="Record this run on the version as profile evidence.")
        ] = True,
    ) -> None:
        """Profile the scoring path (JSON parsing, validation, frame, framework call, serialization)."""
        from scoregate.errors import ModelTimeoutError
        from scoregate.perf.profile import profile_version

        registry = get_registry()
        version = registry.resolve(ref)
        if record:
            _may_record(registry, version.ref)
        folder = output or _default_folder("profile", version.ref)
        report = profile_version(
            registry,
            version.ref,
            requests=requests,
            rows_per_request=rows,
            out_dir=folder,
            timeout=timeout,
            call_timeout=call_timeout,
        )
        out.print(escape(report.render_text(top)), highlight=False)
        files = [p for p in (report.prof_path, report.callgraph_path, report.flamegraph_path) if p is not None]
        out.print("wrote " + ", ".join(str(p) for p in [*files, folder / "profile.json"]))
        for note in report.notes:
            out.print(f"note: {escape(note)}")
        out.print(f"report: {folder / 'profile.json'}")
        if record:
            _record(registry, version.ref, "profile", report.to_dict(), "profile.json")
        if report.stopped is not None:
            raise ModelTimeoutError(report.stopped)

    @app.command(rich_help_panel="Validation and performance")
    def loadtest(
        target: Annotated[str, typer.Argument(help="Endpoint URL, or NAME@VERSION to serve locally for the run.")],
        model: Annotated[
            str | None, typer.Option(help="The version behind a base URL (read from a /models/REF/predict URL).")
        ] = None,
        rps: Annotated[
            float,
            typer.Option(
                help="Target requests per second, all users together.", callback=rule(between, 0.001, MAX_RPS)
            ),
        ] = 10.0,
        duration: Annotated[str, typer.Option(help="Run time: 30s, 10m, 1h.", callback=rule(_duration_rule))] = "1m",
        users: Annotated[
            int, typer.Option(help="Concurrent simulated users.", callback=rule(between, 1, MAX_USERS))
        ] = 10,
        rows: Annotated[
            int, typer.Option(help="Rows per request.", callback=rule(between, 1, MAX_ROWS_PER_REQUEST))
        ] = 1,
        budget_ms: Annotated[
            float | None,
            typer.Option(help="Latency budget; default the version's latency_budget_ms.", callback=rule(milliseconds)),
        ] = None,
        interval: Annotated[
            float | None, typer.Option(help="Seconds per reporting interval.", callback=rule(seconds))
        ] = None,
        request_timeout: Annotated[
            float | None,
            typer.Option(
                help="Seconds a request may wait before it counts as failed (default 10x the budget, 1-30 s).",
                callback=rule(seconds),
            ),
        ] = None,
        timeout: Annotated[
            float,
            typer.Option(
                help="Seconds the local server may take to load and warm up the model, and the reference "
                "scores to be computed; then the run stops (exit 1).",
                callback=rule(seconds),
            ),
        ] = DEFAULT_MODEL_TIMEOUT_S,
        output: Annotated[Path | None, typer.Option("--output", "-o", help="Report folder (CSV, HTML, JSON).")] = None,
        record: Annotated[
            bool,
            typer.Option("--record/--no-record", help="Record this run on the version as loadtest evidence."),
        ] = True,
    ) -> None:
        """Load-test an endpoint with Locust; exits 1 when p95/p99 exceed the latency budget."""
        from functools import partial

        from scoregate.cli.loadtest_server import served_in_child
        from scoregate.errors import ModelTimeoutError
        from scoregate.perf.loadtest import ref_from_url, run_loadtest

        registry = get_registry()
        named = model or (ref_from_url(target) if target.startswith("http") else target)
        name = named or "endpoint"
        if record and named:
            _may_record(registry, registry.resolve(named).ref)
        folder = output or _default_folder("loadtest", name)
        report = run_loadtest(
            registry,
            target,
            model=model,
            rps=rps,
            duration=duration,
            users=users,
            rows_per_request=rows,
            budget_ms=budget_ms,
            interval_s=interval,
            request_timeout=request_timeout,
            timeout=timeout,
            out_dir=folder,
            serve=partial(served_in_child, timeout=timeout),
        )
        out.print(escape(report.render_text()), highlight=False)
        out.print(f"report: {folder / 'report.json'} (HTML: {folder / 'report.html'})")
        if record and report.artifact_digest is not None:
            _record(registry, report.model, "loadtest", report.to_dict(), "report.json")
        if report.stopped is not None:
            raise ModelTimeoutError(report.stopped)
        if report.timed_out or report.unanswered:
            waited = report.timed_out + report.unanswered
            raise ModelTimeoutError(
                f"{waited} of {report.overall.requests} requests to {report.model} got no answer "
                f"({report.timed_out} timed out after {report.request_timeout_s:g} s, "
                f"{report.unanswered} still waiting when the run ended)"
            )
        if not report.passed:
            raise typer.Exit(CHECK_FAILED)

    @app.command(rich_help_panel="Validation and performance")
    def reproduce(
        request_id: Annotated[str, typer.Argument(help="The request id (x-request-id) of a logged prediction.")],
        tolerance: Annotated[
            float, typer.Option(help="Largest absolute difference accepted for a number (labels: exact).")
        ] = 1e-9,
        as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
        predictions_dir: Annotated[
            Path | None, typer.Option(help="Prediction log folder; default <home>/predictions.")
        ] = None,
    ) -> None:
        """Re-score a logged prediction with its exact registered version; exit 1 when it does not reproduce."""
        import sys

        from scoregate.governance.reproduce import reproduce as run_reproduce

        result = run_reproduce(get_registry(), request_id, tolerance=tolerance, predictions_dir=predictions_dir)
        if as_json:
            sys.stdout.write(result.to_json_bytes().decode() + "\n")
        else:
            _show_reproduction(result)
        if not result.matched:
            raise typer.Exit(CHECK_FAILED)


def _show_validation(report: Any) -> None:
    """The checks, the parity line and, for a run that stopped or a reference that failed, one error line each."""
    checks = Table("check", "result", "reason", title=f"{report.model}: checks")
    for c in report.checks:
        colour = {"pass": "green", "fail": "red"}.get(c.status, "dim")
        checks.add_row(c.id, f"[{colour}]{c.status}[/]", escape(c.reason[:200]))
    out.print(checks)
    counts = report.counts()
    p = report.parity
    tolerance = f"atol={p.atol:g}, rtol={p.rtol:g}"
    out.print(
        f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped; parity ({p.reference}, "
        f"{p.outcome}, {tolerance}): {p.rows_compared} rows, {p.mismatches} mismatches, "
        f"largest difference {p.comparison.max_observed:.3g}"
        + (f"; golden: {p.golden.rows_compared} rows, {p.golden.mismatches} mismatches" if p.golden else "")
    )
    if p.error:
        style = "red" if p.failed else "yellow"
        out.print(f"[{style}]{'error' if p.failed else 'note'}:[/] {escape(p.error)}", highlight=False)
    if report.stopped:
        out.print(f"[red]error:[/] stopped early: {escape(report.stopped)}", highlight=False)


def _size(value: float) -> str:
    return f"{value:.3g}" if value == value and value != float("inf") else "differs"


def _show_reproduction(result: Any) -> None:
    for r in result.requests:
        out.print(
            f"request {escape(r.request_id)}: {escape(r.ref)} (artifact sha256:{r.artifact_digest[:12]}), "
            f"{r.rows} row(s) logged {r.logged_at:%Y-%m-%d %H:%M:%S} UTC"
            + (f" via {escape(r.route)}" if r.route else ""),
            highlight=False,
        )
        if r.error:
            out.print(f"[red]could not re-score:[/] {escape(r.error)}")
        table = Table("output", "max abs difference", title=f"tolerance {r.tolerance:g}, labels exact")
        for name, size in r.max_difference.items():
            table.add_row(escape(name), _size(size) if size else "0")
        if r.max_difference:
            out.print(table)
        if r.differences:
            diffs = Table("row", "output", "logged", "re-scored", "difference", title="values that differ")
            for d in r.differences[:40]:
                diffs.add_row(
                    str(d.row), escape(d.output), escape(repr(d.logged)), escape(repr(d.rescored)), _size(d.size)
                )
            out.print(diffs)
            if len(r.differences) > 40:
                out.print(f"... and {len(r.differences) - 40} more")
    if result.matched:
        out.print(f"[green]MATCH[/]: every output reproduced (largest difference {result.max_difference:.3g})")
        return
    if result.packages:
        packages = Table("package", "recorded", "current", title="packages that differ from the recorded lock")
        for p in result.packages:
            packages.add_row(escape(p.name), p.recorded or "-", p.current or "-")
        out.print(packages)
    else:
        out.print("no installed package differs from the lock recorded with the version")
    out.print("[red]MISMATCH[/]: the logged prediction does not reproduce")


__all__ = ["register_commands"]

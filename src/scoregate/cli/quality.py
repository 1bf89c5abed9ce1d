"""``scoregate validate``, ``scoregate profile`` and ``scoregate loadtest``.

Registered on the main Typer app by ``register_commands(app, get_registry)``. Each
command writes its report folder, prints a summary and exits 1 when the check
fails (validation failures, latency budget exceeded), so CI can gate on it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

out = Console()

#: Exit code when a check ran but did not pass (errors a user causes keep the CLI's own codes).
CHECK_FAILED = 1


def _default_folder(kind: str, ref: str) -> Path:
    return Path("scoregate-reports") / f"{kind}-{ref.replace('@', '-')}"


def register_commands(app: typer.Typer, get_registry: Callable[[], Any]) -> None:
    @app.command()
    def validate(
        ref: Annotated[str, typer.Argument(help="NAME@VERSION or NAME@ALIAS.")],
        target: Annotated[
            str, typer.Option(help="'python' (in-process) or the base URL of a running scoring server.")
        ] = "python",
        protocol: Annotated[str, typer.Option(help="For a URL target: json or v2.")] = "json",
        seed: Annotated[int, typer.Option(help="Seed for sampled rows (same seed, same cases).")] = 0,
        timeout: Annotated[float, typer.Option(help="Seconds one case may take before it counts as hung.")] = 10.0,
        reference: Annotated[
            str, typer.Option(help="Parity reference: 'subprocess' (artifact loaded in a separate process) or 'none'.")
        ] = "subprocess",
        golden: Annotated[
            Path | None, typer.Option(help="Golden file of inputs and expected outputs (.json/.jsonl/.csv/.parquet).")
        ] = None,
        atol: Annotated[float, typer.Option(help="Parity tolerance, absolute.")] = 1e-6,
        rtol: Annotated[float, typer.Option(help="Parity tolerance, relative.")] = 1e-6,
        output: Annotated[Path | None, typer.Option("--output", "-o", help="Report folder.")] = None,
    ) -> None:
        """Validate a version before deployment: generated edge cases, refusals, parity; JSON + HTML report."""
        from scoregate.refs import ModelRef
        from scoregate.validation import HttpTarget
        from scoregate.validation import validate as run_validation

        ModelRef.parse(ref)
        registry = get_registry()
        version = registry.resolve(ref)
        chosen = None
        if target != "python":
            if not target.startswith(("http://", "https://")):
                raise typer.BadParameter("use 'python' or an http(s) URL", param_hint="--target")
            chosen = HttpTarget(target, version.name, version.version, version.input_schema, protocol=protocol)
        folder = output or _default_folder("validation", version.ref)
        try:
            report = run_validation(
                registry,
                version.ref,
                target=chosen,
                seed=seed,
                timeout=timeout,
                reference=reference,
                golden=golden,
                atol=atol,
                rtol=rtol,
                out_dir=folder,
            )
        finally:
            if chosen is not None:
                chosen.close()
        counts = report.counts()
        table = Table("case", "expected", "outcome", "reason", title=f"{report.model}: failed cases")
        for c in report.failures[:40]:
            table.add_row(escape(c.case.id), c.case.expect, c.outcome, escape(c.reason[:160]))
        if report.failures:
            out.print(table)
        p = report.parity
        out.print(
            f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped; parity ({p.reference}): "
            f"{p.rows_compared} rows, {p.mismatches} mismatches, largest difference {p.max_difference:.3g}"
        )
        out.print(f"report: {folder / 'report.html'}")
        out.print("[green]PASSED[/]" if report.passed else "[red]FAILED[/]")
        if not report.passed:
            raise typer.Exit(CHECK_FAILED)

    @app.command()
    def profile(
        ref: Annotated[str, typer.Argument(help="NAME@VERSION or NAME@ALIAS.")],
        requests: Annotated[int, typer.Option(help="Requests to profile.")] = 200,
        rows: Annotated[int, typer.Option(help="Rows per request.")] = 1,
        top: Annotated[int, typer.Option(help="Functions to list.")] = 15,
        output: Annotated[
            Path | None, typer.Option("--output", "-o", help="Folder for .prof, SVG/HTML graphs.")
        ] = None,
    ) -> None:
        """Profile the scoring path (JSON parsing, validation, frame, framework call, serialization)."""
        from scoregate.perf.profile import profile_version

        registry = get_registry()
        version = registry.resolve(ref)
        folder = output or _default_folder("profile", version.ref)
        report = profile_version(registry, version.ref, requests=requests, rows_per_request=rows, out_dir=folder)
        out.print(escape(report.render_text(top)), highlight=False)
        files = [p for p in (report.prof_path, report.callgraph_path, report.flamegraph_path) if p is not None]
        out.print("wrote " + ", ".join(str(p) for p in files))
        for note in report.notes:
            out.print(f"note: {escape(note)}")

    @app.command()
    def loadtest(
        target: Annotated[str, typer.Argument(help="Endpoint URL, or NAME@VERSION to serve locally for the run.")],
        model: Annotated[
            str | None, typer.Option(help="The version behind a base URL (read from a /models/REF/predict URL).")
        ] = None,
        rps: Annotated[float, typer.Option(help="Target requests per second, all users together.")] = 10.0,
        duration: Annotated[str, typer.Option(help="Run time: 30s, 10m, 1h.")] = "1m",
        users: Annotated[int, typer.Option(help="Concurrent simulated users.")] = 10,
        rows: Annotated[int, typer.Option(help="Rows per request.")] = 1,
        budget_ms: Annotated[
            float | None, typer.Option(help="Latency budget; default the version's latency_budget_ms.")
        ] = None,
        interval: Annotated[float | None, typer.Option(help="Seconds per reporting interval.")] = None,
        output: Annotated[Path | None, typer.Option("--output", "-o", help="Report folder (CSV, HTML, JSON).")] = None,
    ) -> None:
        """Load-test an endpoint with Locust; exits 1 when p95/p99 exceed the latency budget."""
        from scoregate.perf.loadtest import ref_from_url, run_loadtest

        registry = get_registry()
        name = model or (ref_from_url(target) if target.startswith("http") else target) or "endpoint"
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
            out_dir=folder,
        )
        out.print(escape(report.render_text()), highlight=False)
        out.print(f"report: {folder / 'report.html'}")
        if not report.passed:
            raise typer.Exit(CHECK_FAILED)


__all__ = ["register_commands"]

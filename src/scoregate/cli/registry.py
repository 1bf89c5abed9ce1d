"""Registry commands: register, models, alias, schema, predict, retire."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from scoregate.cli.app import (
    alias_app,
    app,
    err,
    first_error,
    get_registry,
    models_app,
    out,
    pairs,
    read_text_file,
    rule,
    writable_file,
)
from scoregate.errors import InvalidInputError
from scoregate.flavors import FLAVOR_NAMES, detect_flavor
from scoregate.limits import DEFAULT_MODEL_TIMEOUT_S, between, milliseconds, seconds
from scoregate.refs import MAX_VERSION

#: A JSON file of rows to score is read whole: a bound on what that may take.
MAX_JSON_INPUT_BYTES = 256 << 20


@app.command(rich_help_panel="Registry")
def register(
    name: Annotated[str, typer.Argument(help="Model name, e.g. credit-risk.")],
    artifact: Annotated[Path, typer.Argument(help="Model file or directory.")],
    flavor: Annotated[
        str | None, typer.Option(help=f"One of: {', '.join(FLAVOR_NAMES)} (found by itself for an MLflow directory).")
    ] = None,
    train_data: Annotated[Path | None, typer.Option(help="Training data (csv, parquet, json, jsonl).")] = None,
    target: Annotated[str | None, typer.Option(help="Target column in the training data.")] = None,
    schema: Annotated[Path | None, typer.Option(help="Input schema JSON (overrides inference).")] = None,
    outputs: Annotated[
        Path | None,
        typer.Option(help="Declared outputs JSON: [{name, type, nullable}] (default: inferred, and NaN refused)."),
    ] = None,
    metric: Annotated[list[str] | None, typer.Option(help="Metric NAME=VALUE (repeatable).")] = None,
    param: Annotated[list[str] | None, typer.Option(help="Parameter NAME=VALUE (repeatable).")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Tag KEY=VALUE (repeatable).")] = None,
    description: Annotated[str | None, typer.Option()] = None,
    owner: Annotated[str | None, typer.Option()] = None,
    risk_tier: Annotated[str | None, typer.Option(help="low, medium or high.")] = None,
    parent: Annotated[
        int | None, typer.Option(help="Version this one was derived from.", callback=rule(between, 1, MAX_VERSION))
    ] = None,
    latency_budget_ms: Annotated[
        float, typer.Option(help="p99 budget for serving.", callback=rule(milliseconds))
    ] = 300.0,
    timeout: Annotated[
        float,
        typer.Option(
            help="Seconds loading the artifact and scoring the training sample may take; "
            "a model that hangs is refused, nothing stored.",
            callback=rule(seconds),
        ),
    ] = DEFAULT_MODEL_TIMEOUT_S,
    profile: Annotated[
        bool,
        typer.Option(
            help="With --train-data (Parquet or CSV): profile every training row (streamed) and bind the "
            "reference profile that monitoring compares with."
        ),
    ] = True,
    profile_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds the reference profile may take; past it the version has none.", callback=rule(seconds)
        ),
    ] = 900.0,
) -> None:
    """Register a new version of a model."""
    from scoregate.schema import ModelSchema

    model_schema = None
    if schema is not None:
        text = read_text_file(schema, "schema file")
        try:
            model_schema = ModelSchema.model_validate_json(text)
        except ValueError as exc:
            raise InvalidInputError(f"invalid schema file {schema}: {first_error(exc)}") from None
    declared = _read_outputs(outputs) if outputs is not None else None
    registry = get_registry()
    version = registry.register(
        name,
        artifact,
        flavor=flavor or detect_flavor(artifact),
        train_data=train_data,
        target=target,
        schema=model_schema,
        outputs=declared,
        metrics=pairs(metric, "--metric", numeric=True),
        params=pairs(param, "--param"),
        tags=pairs(tag, "--tag"),
        description=description,
        owner=owner,
        risk_tier=risk_tier,
        parent_version=parent,
        latency_budget_ms=latency_budget_ms,
        timeout=timeout,
    )
    out.print(
        f"registered [bold]{version.ref}[/] ({version.flavor}, sha256:{version.artifact_digest[:12]}, "
        f"{len(version.input_schema.features)} features)"
    )
    if train_data is not None and profile:
        from rich.markup import escape

        from scoregate.monitoring.service import profile_at_registration

        done = profile_at_registration(registry, version, train_data, timeout=profile_timeout)
        if done.digest is not None:
            out.print(f"reference profile sha256:{done.digest[:12]} recorded ({done.rows:,} rows)", highlight=False)
        else:
            err.print(
                f"warning: no reference profile: {escape(done.note or '')}; add one with "
                f"`scoregate monitor reference {escape(version.ref)} DATA`",
                highlight=False,
            )


def _read_outputs(path: Path) -> list[Any]:
    """The ``--outputs`` file: a JSON list of output fields, or an object with an ``outputs`` list."""
    from pydantic import TypeAdapter

    from scoregate.schema import OutputField

    try:
        document = json.loads(path.read_text())
    except OSError as exc:
        raise InvalidInputError(f"cannot read outputs file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise InvalidInputError(f"invalid outputs file {path}: not JSON ({exc})") from None
    if isinstance(document, dict):
        document = document.get("outputs")
    if not isinstance(document, list) or not document:
        raise InvalidInputError(f"invalid outputs file {path}: expected a non-empty list of {{name, type, nullable}}")
    try:
        return TypeAdapter(list[OutputField]).validate_python(document)
    except ValueError as exc:
        raise InvalidInputError(f"invalid outputs file {path}: {first_error(exc)}") from None


@models_app.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List every model with its latest version and aliases."""
    from scoregate.monitoring.alerting import inventory_line, model_brief

    registry = get_registry()
    try:
        summaries = registry.list_models()
        monitoring = {s.name: model_brief(registry, s) for s in summaries}
    finally:
        registry.close()
    if as_json:
        out.print_json(json.dumps([s.model_dump(mode="json") | {"monitoring": monitoring[s.name]} for s in summaries]))
        return
    table = Table("name", "latest", "versions", "aliases", "owner", "risk tier", "monitoring", "description")
    for s in summaries:
        aliases = ", ".join(f"{a}→{v}" for a, v in s.aliases.items())
        table.add_row(
            s.name,
            str(s.latest_version or "-"),
            str(s.versions),
            aliases,
            s.owner or "",
            s.risk_tier or "",
            escape(inventory_line(monitoring[s.name])),
            s.description or "",
        )
    out.print(table)


@models_app.command("show")
def models_show(
    ref: Annotated[str, typer.Argument(help="NAME, NAME@VERSION or NAME@ALIAS.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show one version: artifact, schema, metrics, lineage."""
    version = get_registry().resolve(ref)
    if as_json:
        out.print_json(version.model_dump_json(exclude={"environment"}))
        return
    table = Table(show_header=False, box=None)
    rows = [
        ("reference", version.ref),
        ("status", version.status + (f" ({version.retire_reason})" if version.retire_reason else "")),
        ("aliases", ", ".join(version.aliases) or "-"),
        ("flavor", version.flavor),
        ("artifact", f"{version.artifact_name} sha256:{version.artifact_digest} ({version.artifact_size} bytes)"),
        ("description", version.description or "-"),
        ("metrics", ", ".join(f"{k}={v:g}" for k, v in version.metrics.items()) or "-"),
        ("params", ", ".join(f"{k}={v}" for k, v in version.params.items()) or "-"),
        ("tags", ", ".join(f"{k}={v}" for k, v in version.tags.items()) or "-"),
        (
            "training data",
            f"{version.training_data_uri or '-'} sha256:{version.training_data_digest or '-'} "
            f"({version.training_rows or 0} rows)",
        ),
        ("code version", (version.code_version or "-") + (" (uncommitted changes)" if version.code_dirty else "")),
        ("parent", str(version.parent_version or "-")),
        ("python", version.environment.get("python", "-")),
        ("packages", ", ".join(f"{k}=={v}" for k, v in version.environment.get("flavor_packages", {}).items())),
        ("latency budget", f"{version.latency_budget_ms:g} ms"),
        ("registered", f"{version.created_at:%Y-%m-%d %H:%M:%S} UTC by {version.created_by or '-'}"),
    ]
    for key, value in rows:
        table.add_row(f"[bold]{key}[/]", value)
    out.print(table)
    # validity rules refuse; the observed profile of the training data only flags
    features = Table("feature", "type", "nullable", "validity rules", "observed in training", title="input schema")
    for f in version.input_schema.features:
        features.add_row(
            f.name, f.type.value, "yes" if f.nullable else "no", f.limits_text() or "-", f.observed_text() or "-"
        )
    out.print(features)
    shown = ", ".join(f"{o.name} ({o.type.value}{', nullable' if o.nullable else ''})" for o in version.output_schema)
    contract = version.input_schema.output_contract
    out.print(f"[bold]outputs[/]: {shown or '-'}" + (f" ({contract.value})" if contract else ""))


@models_app.command("set-tier")
def models_set_tier(
    name: Annotated[str, typer.Argument()],
    tier: Annotated[str, typer.Argument(help="low, medium or high.")],
    reason: Annotated[str, typer.Option()],
) -> None:
    """Move a model to another risk tier (admin): every version is then held to that tier's gates."""
    get_registry().set_risk_tier(name, tier, reason=reason)
    out.print(f"{name}: risk tier {tier}")


@models_app.command("versions")
def models_versions(name: Annotated[str, typer.Argument()]) -> None:
    """List the versions of one model."""
    versions = get_registry().list_versions(name)
    table = Table("version", "status", "aliases", "flavor", "digest", "metrics", "registered")
    for v in versions:
        table.add_row(
            str(v.version),
            v.status,
            ", ".join(v.aliases),
            v.flavor,
            v.artifact_digest[:12],
            ", ".join(f"{k}={val:g}" for k, val in v.metrics.items()),
            f"{v.created_at:%Y-%m-%d %H:%M}",
        )
    out.print(table)


@app.command("schema", rich_help_panel="Registry")
def schema_show(ref: Annotated[str, typer.Argument()]) -> None:
    """Print a version's input schema as JSON (edit it and pass it to register --schema)."""
    version = get_registry().resolve(ref)
    sys.stdout.write(version.input_schema.model_dump_json(indent=2, exclude={"outputs", "output_contract"}) + "\n")


@alias_app.command("set")
def alias_set(
    ref: Annotated[str, typer.Argument(help="The version to point at: NAME@VERSION or NAME@ALIAS.")],
    alias: Annotated[str, typer.Argument(help="Alias to set, e.g. staging.")],
    no_overwrite: Annotated[bool, typer.Option("--no-overwrite", help="Fail if the alias points elsewhere.")] = False,
    reason: Annotated[str | None, typer.Option(help="Why (recorded in the alias history and audit log).")] = None,
) -> None:
    """Point an alias at a version (moving it if it exists: this is also the rollback)."""
    from scoregate.refs import ModelRef

    registry = get_registry()
    version = registry.resolve(ModelRef.parse(ref, require_selector=True))
    record = registry.set_alias(version.name, alias, version.version, overwrite=not no_overwrite, reason=reason)
    out.print(f"{record.name}@{record.alias} → version {record.version}")


@alias_app.command("delete")
def alias_delete(name: Annotated[str, typer.Argument()], alias: Annotated[str, typer.Argument()]) -> None:
    """Delete an alias."""
    get_registry().delete_alias(name, alias)
    out.print(f"deleted {name}@{alias}")


@alias_app.command("list")
def alias_list(name: Annotated[str | None, typer.Argument()] = None) -> None:
    """List aliases, of one model or of all."""
    table = Table("model", "alias", "version", "updated")
    for record in get_registry().aliases(name):
        table.add_row(record.name, record.alias, str(record.version), f"{record.updated_at:%Y-%m-%d %H:%M:%S}")
    out.print(table)


@app.command(rich_help_panel="Registry")
def predict(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION or NAME@ALIAS.")],
    input: Annotated[Path, typer.Option("--input", "-i", help="Rows: .json, .jsonl, .csv or .parquet.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write .csv, .json or .parquet.")] = None,
    timeout: Annotated[
        float,
        typer.Option(
            help="Seconds loading the model and scoring the rows may take; then it is stopped.",
            callback=rule(seconds),
        ),
    ] = DEFAULT_MODEL_TIMEOUT_S,
) -> None:
    """Score rows from a file with a registered version (validated against its schema)."""
    from scoregate.refs import ModelRef
    from scoregate.registry import isolated
    from scoregate.registry.lineage import read_table
    from scoregate.schema import flag_frame, prepare_frame, prepare_records

    ModelRef.parse(ref, require_selector=True)
    if output is not None:
        if output.suffix.lower() not in (".csv", ".json", ".parquet"):
            raise InvalidInputError(f"unsupported --output extension {output.suffix!r}: use .csv, .json or .parquet")
        writable_file(output, "--output")  # before scoring, not after
    registry = get_registry()
    version = registry.resolve(ref)
    schema = version.input_schema
    if input.suffix.lower() == ".json":
        frame = prepare_records(schema, _read_json_rows(input))
    else:
        frame = prepare_frame(schema, read_table(input, what="input file"))
    predictions = isolated.predict(registry, version, frame, timeout=timeout)
    flagged = flag_frame(schema, frame).summary()
    if flagged:  # one line, whether the predictions go to the terminal or a file
        out.print(flagged, markup=False, highlight=False, soft_wrap=True)
    if output is not None:
        writer = {
            ".csv": lambda p: predictions.to_csv(p, index=False),
            ".json": lambda p: predictions.to_json(p, orient="records"),
            ".parquet": lambda p: predictions.to_parquet(p, index=False),
        }[output.suffix.lower()]
        _write_atomically(output, writer)
        out.print(f"wrote {len(predictions)} predictions of {version.ref} to {output}")
        return
    table = Table(*map(str, predictions.columns), title=f"{version.ref}: {len(predictions)} rows")
    for row in predictions.head(50).itertuples(index=False):
        table.add_row(*(f"{v:.6g}" if isinstance(v, float) else str(v) for v in row))
    out.print(table)


def _write_atomically(path: Path, writer: Any) -> None:
    """Write through a temporary file beside ``path`` and rename it: a reader never sees half a file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial{path.suffix}")
    try:
        writer(partial)
        os.replace(partial, path)
    except OSError as exc:
        raise InvalidInputError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        partial.unlink(missing_ok=True)


def _read_json_rows(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(read_text_file(path, "input file", max_bytes=MAX_JSON_INPUT_BYTES))
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"input file {path} is not valid JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("rows"), list):
        data = data["rows"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise InvalidInputError(f'input file {path}: expected a list of row objects or {{"rows": [...]}}')
    return data


@app.command(rich_help_panel="Registry")
def retire(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION.")],
    reason: Annotated[str, typer.Option(help="Why the version is retired (recorded).")],
) -> None:
    """Retire a version: it stays on record but can no longer hold an alias."""
    version = get_registry().retire(ref, reason=reason)
    out.print(f"retired {version.ref}: {version.retire_reason}")

"""``scoregate image build|test|run|stop``, ``scoregate deploy`` and ``scoregate k8s render``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from scoregate.cli.app import app, get_registry, out
from scoregate.errors import InvalidInputError, ScoregateError

image_app = typer.Typer(no_args_is_help=True, help="Build, test and run a model version's OCI image.")
k8s_app = typer.Typer(no_args_is_help=True, help="Kubernetes manifests for a model version's image.")
app.add_typer(image_app, name="image", rich_help_panel="Packaging")
app.add_typer(k8s_app, name="k8s", rich_help_panel="Packaging")

EngineOption = Annotated[str | None, typer.Option(help="podman or docker (default: whichever is on PATH).")]
RuntimeOption = Annotated[
    str | None, typer.Option(help="OCI runtime passed to podman as --runtime (default runc; '' for podman's own).")
]


def _engine(engine: str | None, runtime: str | None):  # type: ignore[no-untyped-def]
    from scoregate.packaging import Engine

    return Engine.detect(engine, runtime)


@image_app.command("build")
def image_build(
    model: Annotated[str, typer.Argument(help="NAME@VERSION (or an alias).")],
    base: Annotated[str, typer.Option(help="Base image with python3 3.11 (python3 -m venv must work).")] = (
        "python:3.11-slim"
    ),
    tag: Annotated[str | None, typer.Option(help="Image tag (default localhost/scoregate/NAME:VERSION).")] = None,
    engine: EngineOption = None,
    runtime: RuntimeOption = None,
) -> None:
    """Generate the build context under <home>/images/NAME-VERSION and build it offline."""
    from scoregate.packaging import build_image

    registry = get_registry()
    built = build_image(registry, model, base=base, tag=tag, engine=_engine(engine, runtime))
    out.print(f"built [bold]{escape(built.tag)}[/] for {built.ref} in {built.seconds:.0f} s")
    out.print(f"  image id  {built.image_id}")
    out.print(f"  context   {built.context} (sha256:{built.context_digest[:16]}…)")
    if built.evidence:
        out.print(f"  evidence  image #{built.evidence.get('id')} recorded on {built.ref}")
    for note in built.notes:
        out.print(f"  [yellow]note[/] {escape(note)}")


@image_app.command("test")
def image_test(
    model: Annotated[str, typer.Argument(help="NAME@VERSION the image claims to serve.")],
    image: Annotated[str | None, typer.Option(help="Image to test (default the version's tag).")] = None,
    output: Annotated[Path | None, typer.Option(help="Write the JSON report here too.")] = None,
    record: Annotated[bool, typer.Option(help="Record this run on the version as validation evidence.")] = True,
    engine: EngineOption = None,
    runtime: RuntimeOption = None,
) -> None:
    """Start the image, run the validation suite and parity against it, stop it."""
    from scoregate.packaging import test_image

    result = test_image(get_registry(), model, image=image, engine=_engine(engine, runtime), record=record)
    report = result.report
    if output is not None:
        output.write_bytes(report.to_json_bytes())
    counts = report.counts()
    verdict = "[green]passed[/]" if result.passed else "[red]FAILED[/]"
    out.print(f"image {escape(result.image)} as {result.ref}: {verdict}")
    out.print(f"  cases  {counts}")
    p = report.parity
    out.print(f"  parity {p.rows_compared} rows, {p.mismatches} mismatches, max difference {p.max_difference:.3g}")
    if result.measured:
        out.print(f"  memory peak RSS {result.measured['peak_rss_bytes'] / 2**20:.0f} MiB (server process)")
    if result.label_problem:
        out.print(f"  [red]label[/] {escape(result.label_problem)}")
    for failure in report.failures[:5]:
        out.print(f"  [red]fail[/] {escape(failure.case.id)}: {escape(failure.reason)}")
    if result.evidence:
        out.print(f"  evidence validation #{result.evidence.get('id')} recorded")
    if not result.passed:
        raise typer.Exit(1)


@image_app.command("run")
def image_run(
    model: Annotated[str, typer.Argument(help="NAME@VERSION")],
    port: Annotated[int, typer.Option(help="Stable port (a proxy forwards it to the container).")] = 8080,
    image: Annotated[str | None, typer.Option(help="Image (default the version's tag).")] = None,
    engine: EngineOption = None,
    runtime: RuntimeOption = None,
) -> None:
    """Start the version's container in the background, served on PORT."""
    from scoregate.packaging import run_image

    if not 1 <= port <= 65535:
        raise InvalidInputError(f"invalid --port {port}")
    state = run_image(get_registry(), model, port=port, image=image, engine=_engine(engine, runtime))
    out.print(f"{state['ref']} serving on http://127.0.0.1:{state['port']} (container {state['container']})")


@image_app.command("stop")
def image_stop(
    name: Annotated[str, typer.Argument(help="Model name")],
    engine: EngineOption = None,
    runtime: RuntimeOption = None,
) -> None:
    """Stop the container and the proxy serving NAME."""
    from scoregate.packaging import stop

    state = stop(get_registry(), name, engine=_engine(engine, runtime))
    out.print(f"stopped {state['ref']}" if state else f"nothing serves {name} here")


@app.command("deploy", rich_help_panel="Packaging")
def deploy_command(
    model: Annotated[str, typer.Argument(help="NAME@VERSION to deploy.")],
    replace: Annotated[str, typer.Option(help="NAME@VERSION currently serving (started with `image run`).")],
    image: Annotated[str | None, typer.Option(help="Image (default the version's tag).")] = None,
    drain: Annotated[
        float,
        typer.Option(help="Longest wait, in seconds, for requests in flight on the old container before it stops."),
    ] = 30.0,
    engine: EngineOption = None,
    runtime: RuntimeOption = None,
) -> None:
    """Start MODEL beside the serving version, check health and parity, switch the port, stop the old one."""
    from scoregate.packaging import deploy

    if drain < 0:
        raise InvalidInputError(f"invalid --drain {drain:g}: must be 0 or more")
    result = deploy(
        get_registry(), model, replace=replace, image=image, engine=_engine(engine, runtime), drain_seconds=drain
    )
    if not result.ok:
        out.print(f"[red]deploy of {result.ref} refused[/]: {escape(result.reason or '')}")
        out.print(f"{result.replaced} keeps serving on port {result.port}")
        raise typer.Exit(1)
    out.print(f"{result.ref} now serves on port {result.port}; {result.replaced} stopped")
    if not result.drained:
        out.print(f"[yellow]requests still in flight on {result.replaced} after {drain:g} s were cut off[/]")
    out.print(f"rollback: scoregate deploy {result.replaced} --replace {result.ref}")


@k8s_app.command("render")
def k8s_render(
    model: Annotated[str | None, typer.Argument(help="NAME@VERSION (not with --registry)")] = None,
    registry_service: Annotated[
        bool,
        typer.Option(
            "--registry",
            help="The registry service's manifests instead (team mode): Deployment, Service, NetworkPolicies; "
            "database and store credentials referenced from Secrets.",
        ),
    ] = False,
    database_secret: Annotated[str, typer.Option(help="--registry: Secret with key url (database).")] = (
        "scoregate-registry-database"
    ),
    store_secret: Annotated[str, typer.Option(help="--registry: Secret with key url and the store's keys.")] = (
        "scoregate-registry-store"
    ),
    database_selector: Annotated[
        str, typer.Option(help="--registry: labels of the database pods only the service may reach.")
    ] = "app.kubernetes.io/name=postgresql",
    image: Annotated[str | None, typer.Option(help="Image reference pods pull (default the local tag).")] = None,
    namespace: Annotated[str, typer.Option()] = "default",
    replicas: Annotated[int, typer.Option()] = 2,
    min_replicas: Annotated[int, typer.Option()] = 2,
    max_replicas: Annotated[int, typer.Option()] = 10,
    cpu_request: Annotated[str | None, typer.Option(help="Measured CPU request, e.g. 250m.")] = None,
    memory_request: Annotated[str | None, typer.Option(help="Measured memory request, e.g. 300Mi.")] = None,
    cpu_limit: Annotated[str | None, typer.Option()] = None,
    memory_limit: Annotated[str | None, typer.Option()] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
    check: Annotated[
        bool,
        typer.Option(
            help="Validate against the Kubernetes schemas, Pod Security 'restricted' and what KServe's and "
            "Knative's admission webhooks check (probe ports, container names, resources)."
        ),
    ] = False,
    target: Annotated[
        str, typer.Option(help="k8s (ServiceAccount, Deployment, Service, HPA, PDB) or kserve (InferenceService).")
    ] = "k8s",
) -> None:
    """Manifests for one target as YAML: raw Kubernetes objects, or a KServe InferenceService."""
    from scoregate.packaging import k8s

    if target not in {t.value for t in k8s.Target}:
        raise InvalidInputError(f"invalid --target {target[:20]!r}: choose k8s or kserve")
    if min_replicas < 1 or max_replicas < min_replicas or replicas < 1:
        raise InvalidInputError("replicas must be >= 1 and --max-replicas >= --min-replicas")
    if registry_service:
        if model is not None:
            raise InvalidInputError("--registry renders the registry service: give no model")
        from scoregate.packaging.k8s_registry import RegistryManifest, render_registry

        spec = RegistryManifest(
            namespace=namespace,
            replicas=replicas,
            database_secret=database_secret,
            store_secret=store_secret,
            database_selector=database_selector,
            **({"image": image} if image else {}),
        )
        _emit(k8s, render_registry(spec), check, output, "the registry service")
        return
    if model is None:
        raise InvalidInputError("give the model version to render (NAME@VERSION), or --registry")
    given = {"cpu_request": cpu_request, "memory_request": memory_request}
    given |= {"cpu_limit": cpu_limit, "memory_limit": memory_limit}
    given = {k: v for k, v in given.items() if v}
    registry = get_registry()
    version = registry.resolve(model)
    resources = k8s.Resources(**given, source="given") if given else k8s.measured_resources(registry, version.ref)
    docs = k8s.render(
        version,
        image=image,
        namespace=namespace,
        replicas=replicas,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        resources=resources,
        target=target,
    )
    _emit(k8s, docs, check, output, f"{version.ref} ({target})")


def _emit(k8s: Any, docs: list[dict[str, Any]], check: bool, output: Path | None, what: str) -> None:
    if check:
        problems = k8s.validate_manifests(docs)
        if problems:
            raise ScoregateError("invalid manifests: " + "; ".join(problems))
    text = k8s.to_yaml(docs)
    if output is not None:
        output.write_text(text)
        out.print(f"wrote {len(docs)} manifests for {what} to {output}")
    else:
        typer.echo(text, nl=False)

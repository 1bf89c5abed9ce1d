"""``scoregate traffic``: split an alias's traffic with a canary, copy it to a shadow.

A policy is checked and gated when it is set (see ``Registry.set_traffic_policy``), so
the server never meets a policy it must ignore.
"""

from __future__ import annotations

import re
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from scoregate.cli.app import app, get_registry, out
from scoregate.errors import InvalidInputError
from scoregate.refs import ModelRef
from scoregate.traffic import TrafficPolicy

traffic_app = typer.Typer(no_args_is_help=True, help="Canary splits and shadows of an alias's traffic.")
app.add_typer(traffic_app, name="traffic", rich_help_panel="Serving")

_CANARY = re.compile(r"(?P<ref>[^=]+)=(?P<percent>[0-9]+(?:\.[0-9]+)?)%?")


def _alias_ref(text: str) -> ModelRef:
    ref = ModelRef.parse(text, require_selector=True)
    if ref.alias is None:
        raise InvalidInputError(f"a traffic policy belongs to NAME@ALIAS, not a version: got {text[:80]!r}")
    return ref


def _version_of(text: str, model: str, option: str) -> int:
    ref = ModelRef.parse(text, require_selector=True)
    if ref.name != model:
        raise InvalidInputError(f"{option} {text[:80]!r} names model {ref.name!r}; the policy splits {model!r}")
    if ref.version is None:
        raise InvalidInputError(f"{option} needs NAME@VERSION (a fixed version), got {text[:80]!r}")
    return ref.version


@traffic_app.command("set")
def traffic_set(
    ref: Annotated[str, typer.Argument(help="NAME@ALIAS whose traffic is split, e.g. credit-risk@production.")],
    canary: Annotated[str | None, typer.Option(help="NAME@VERSION=PERCENT%, e.g. credit-risk@4=10%.")] = None,
    sticky_key: Annotated[
        str | None, typer.Option(help="Input field whose value keeps a customer on one version of the canary.")
    ] = None,
    shadow: Annotated[str | None, typer.Option(help="NAME@VERSION that scores a copy of the traffic.")] = None,
    shadow_sample: Annotated[float, typer.Option(help="Share of requests copied to the shadow, (0, 1].")] = 1.0,
    reason: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Set the canary split and/or shadow of an alias (gated like the alias for a protected one)."""
    alias = _alias_ref(ref)
    if canary is None and shadow is None:
        raise InvalidInputError("give --canary, --shadow or both (`scoregate traffic clear` removes a policy)")
    if sticky_key is not None and canary is None:
        raise InvalidInputError("--sticky-key applies to a canary: give --canary too")
    document: dict[str, dict[str, object]] = {}
    if canary is not None:
        match = _CANARY.fullmatch(canary.strip())
        if match is None:
            raise InvalidInputError(f"invalid --canary {canary[:80]!r}: expected NAME@VERSION=PERCENT%")
        version = _version_of(match["ref"], alias.name, "--canary")
        percent = float(match["percent"])
        if not 0 < percent <= 100:
            raise InvalidInputError(f"invalid --canary {canary[:80]!r}: the percent must be in (0, 100]")
        document["canary"] = {"version": version, "percent": percent, "sticky_field": sticky_key}
    if shadow is not None:
        if not 0 < shadow_sample <= 1:
            raise InvalidInputError(f"invalid --shadow-sample {shadow_sample!r}: must be in (0, 1]")
        document["shadow"] = {"version": _version_of(shadow, alias.name, "--shadow"), "sample": shadow_sample}
    policy = get_registry().set_traffic_policy(alias.name, alias.alias, TrafficPolicy.parse(document), reason=reason)
    out.print(f"{escape(str(alias))}: {escape(_describe(policy))}", highlight=False)


@traffic_app.command("clear")
def traffic_clear(
    ref: Annotated[str, typer.Argument(help="NAME@ALIAS.")],
    reason: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Remove an alias's traffic policy: all of its traffic goes to the version it points at."""
    alias = _alias_ref(ref)
    get_registry().set_traffic_policy(alias.name, alias.alias, None, reason=reason)
    out.print(f"{escape(str(alias))}: no traffic policy", highlight=False)


@traffic_app.command("show")
def traffic_show(ref: Annotated[str | None, typer.Argument(help="NAME@ALIAS; default every policy.")] = None) -> None:
    """The traffic policies in force."""
    wanted = _alias_ref(ref) if ref is not None else None
    registry = get_registry()
    serving = {(a.name, a.alias): a.version for a in registry.aliases()}
    table = Table("alias", "serves", "policy")
    for (name, alias), raw in sorted(registry.traffic_policies().items()):
        if wanted is not None and (name, alias) != (wanted.name, wanted.alias):
            continue
        table.add_row(
            escape(f"{name}@{alias}"), str(serving.get((name, alias), "-")), escape(_describe(TrafficPolicy.parse(raw)))
        )
    if not table.row_count:
        out.print(f"{escape(str(wanted)) if wanted else 'no alias'} has no traffic policy", highlight=False)
        return
    out.print(table)


def _describe(policy: TrafficPolicy | None) -> str:
    if policy is None:
        return "no traffic policy"
    parts = []
    if policy.canary is not None:
        sticky = f", sticky on {policy.canary.sticky_field}" if policy.canary.sticky_field else ""
        parts.append(f"canary version {policy.canary.version} takes {policy.canary.percent:g}%{sticky}")
    if policy.shadow is not None:
        parts.append(f"shadow version {policy.shadow.version} scores {policy.shadow.sample:.0%} of requests")
    return "; ".join(parts)


__all__ = ["traffic_app"]

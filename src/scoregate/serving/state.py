"""What one worker serves: loaded versions, alias routes, traffic policies, hot swap.

The routing table is an immutable snapshot replaced by reference: a request looks
its route up once, validates and queues its rows without yielding to the event loop,
so it always completes on the version it started with (a large request, validated in
slices with yields between them, holds its version so it is not retired meanwhile).
When the registry's alias revision changes, the new versions are loaded and warmed on
a loader thread, the table is swapped in one assignment, and versions no longer
routed are retired: their scoring threads finish the jobs already queued and exit.

A version that cannot be loaded (not found, an artifact that fails its integrity
check, a flavor error) does not take the others down: it is logged in one line, kept
in :attr:`ServingState.unavailable` with the reason (``/v2/health/ready`` and the
``scoregate_model_loaded`` gauge report it, a request for it gets 503 naming the
reason), and retried at the next alias change. Only when nothing at all can be served
does the worker refuse to start.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scoregate.errors import InvalidReferenceError, NotFoundError, ScoregateError
from scoregate.extra_fields import ExtraFields
from scoregate.refs import REFERENCE_RULE, ModelRef, is_alias, is_version
from scoregate.schema import FeatureType, ModelSchema, RecordFlagger, RecordValidator
from scoregate.serving.batcher import Batcher, Outputs
from scoregate.serving.errors import HTTPError, bounded
from scoregate.serving.metrics import Metrics
from scoregate.serving.options import DEFAULT_DIRECT_BELOW
from scoregate.serving.policy import TrafficPolicy, choose_canary
from scoregate.serving.source import AliasEntry, ModelSource, VersionInfo

log = logging.getLogger("scoregate.serving")

DEFAULT_ALIAS = "production"


class Served:
    """One loaded model version in this worker."""

    __slots__ = (
        "batcher",
        "drop_extra",
        "feature_names",
        "flagger",
        "header",
        "holds",
        "info",
        "known",
        "m_batch",
        "m_latency",
        "m_rows",
        "name",
        "outputs",
        "ref",
        "retired",
        "strict",
        "validator",
        "version",
        "version_label",
    )

    def __init__(self, info: VersionInfo, batcher: Batcher, validator: RecordValidator, metrics: Metrics) -> None:
        self.info = info
        self.name = info.name
        self.version = info.version
        self.version_label = str(info.version)
        self.ref = info.ref
        self.header = info.ref.encode()
        self.batcher = batcher
        self.validator = validator
        #: flags scored values outside the observed profile (inactive for a schema without one)
        self.flagger = RecordFlagger(info.input_schema)
        self.feature_names = info.input_schema.feature_names
        self.known = frozenset(self.feature_names)
        #: No nullable feature: a row that passes validation with as many keys as features has no undeclared one.
        self.strict = not any(f.nullable for f in info.input_schema.features)
        self.drop_extra = info.extra_fields is ExtraFields.DROP
        self.outputs: Outputs | None = None  # from the warm-up call: names and dtypes
        self.holds = 0  # large requests between routing and queueing their slices
        self.retired = False
        self.m_latency = metrics.child(metrics.latency, info.name, self.version_label)
        self.m_batch = metrics.child(metrics.batch_rows, info.name, self.version_label)
        self.m_rows = metrics.child(metrics.rows, info.name, self.version_label, "false")

    def hold(self) -> None:
        self.holds += 1

    def release(self) -> None:
        """End a hold; a version retired meanwhile is closed now that nothing else will queue to it."""
        self.holds -= 1
        if self.retired and not self.holds:
            self.batcher.close()

    def retire(self) -> None:
        self.retired = True
        if not self.holds:
            self.batcher.close()


@dataclass(slots=True)
class Route:
    """Where requests for ``name@selector`` go."""

    primary: Served
    alias: str | None = None
    policy: TrafficPolicy | None = None
    canary: Served | None = None
    shadow: Served | None = None

    def pick(self, first_row: Any) -> Served:
        if self.canary is not None and choose_canary(self.policy.canary, first_row):  # type: ignore[union-attr]
            return self.canary
        return self.primary

    def want_shadow(self) -> Served | None:
        shadow = self.shadow
        if shadow is None:
            return None
        sample = self.policy.shadow.sample  # type: ignore[union-attr]
        if sample >= 1.0 or random.random() < sample:
            return shadow
        return None


@dataclass(slots=True)
class ModelEntry:
    name: str
    aliases: dict[str, Route] = field(default_factory=dict)
    versions: dict[int, Route] = field(default_factory=dict)
    default: Route | None = None


@dataclass(slots=True)
class Table:
    revision: str | None = None
    models: dict[str, ModelEntry] = field(default_factory=dict)
    served: dict[tuple[str, int], Served] = field(default_factory=dict)


SCORING_MODES = ("thread", "inline")


def warmup_record(schema: ModelSchema) -> dict[str, Any]:
    """A row that satisfies the schema, for the warm-up call."""
    row: dict[str, Any] = {}
    for f in schema.features:
        if f.type in (FeatureType.FLOAT, FeatureType.INT):
            value: Any = 0.0 if f.type is FeatureType.FLOAT else 0
            if f.minimum is not None and value < f.minimum:
                value = f.minimum
            if f.maximum is not None and value > f.maximum:
                value = f.maximum
            if f.type is FeatureType.INT:
                value = int(value) if float(value).is_integer() else int(value) + 1
            row[f.name] = value
        elif f.type is FeatureType.BOOL:
            row[f.name] = False
        elif f.type is FeatureType.CATEGORY:
            row[f.name] = (f.categories or [""])[0]
        elif f.type is FeatureType.DATETIME:
            row[f.name] = dt.datetime(2024, 1, 1).isoformat()
        else:
            row[f.name] = ""
    return row


class ServingState:
    def __init__(
        self,
        source_factory: Callable[[], ModelSource],
        metrics: Metrics,
        *,
        models: list[str] | None = None,
        max_batch_rows: int = 256,
        poll_interval: float = 0.5,
        scorer_threads: int | None = None,
        scoring: str = "thread",
        direct_below: float = DEFAULT_DIRECT_BELOW,
    ) -> None:
        self._source_factory = source_factory
        self.source: ModelSource | None = None
        self.metrics = metrics
        self.models = list(models) if models else None
        self.max_batch_rows = max_batch_rows
        self.poll_interval = poll_interval
        self.scorer_threads = scorer_threads
        if scoring not in SCORING_MODES:
            raise ValueError(f"scoring must be one of {', '.join(SCORING_MODES)}, not {scoring!r}")
        self.scoring = scoring
        self.direct_below = direct_below
        self.table = Table()
        self.ready = False
        #: Wanted versions (or references) that are not served, and why.
        self.unavailable: dict[str, str] = {}
        #: Called with the source's credentials at every poll (``--require-token``); None: not polled.
        self.on_credentials: Callable[[dict[str, Any]], None] | None = None
        # Registry calls and model loading happen on one loader thread, never on the loop.
        self._loader = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-loader")
        self._poller: asyncio.Task[None] | None = None
        self._retired: list[Served] = []
        self.swap_count = 0
        self.last_error: str | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.source = await loop.run_in_executor(self._loader, self._source_factory)
        await self._refresh_credentials()
        await self.refresh(force=True)
        if not self.table.served and self.unavailable:
            reasons = "; ".join(f"{ref}: {why}" for ref, why in sorted(self.unavailable.items()))
            raise NotFoundError(f"nothing to serve: {reasons}")
        self.ready = True
        self._poller = asyncio.create_task(self._poll(), name="scoregate-alias-poller")

    async def stop(self, timeout: float = 30.0) -> None:
        self.ready = False
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._poller
        served = list(self.table.served.values()) + self._retired
        for s in served:
            s.batcher.close()
        loop = asyncio.get_running_loop()

        def join_all() -> None:
            for s in served:
                s.batcher.join(timeout)

        await loop.run_in_executor(None, join_all)
        self._loader.shutdown(wait=False, cancel_futures=True)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                await self._refresh_credentials()
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = str(exc)
                log.error("refreshing the served models failed, keeping the current ones: %s", _one_line(exc))

    async def _refresh_credentials(self) -> None:
        if self.on_credentials is None:
            return
        read = getattr(self.source, "credentials", None)
        if read is None:
            return
        credentials = await asyncio.get_running_loop().run_in_executor(self._loader, read)
        self.on_credentials(credentials)

    # --- refresh / hot swap ---------------------------------------------------------------------

    async def refresh(self, *, force: bool = False) -> bool:
        """Re-read aliases and policies; load, warm and swap in changes. True if swapped."""
        loop = asyncio.get_running_loop()
        revision = await loop.run_in_executor(self._loader, self.source.revision)  # type: ignore[union-attr]
        if revision == self.table.revision and not force:
            return False
        table, unavailable = await loop.run_in_executor(self._loader, self._build_table, revision)
        old = self.table
        self.table = table  # the atomic switch
        self.unavailable = unavailable
        retired = [s for key, s in old.served.items() if table.served.get(key) is not s]
        for s in retired:
            s.retire()
        self._retired = [s for s in self._retired if not s.batcher.join(0)] + retired
        if old.revision is not None:
            self.swap_count += 1
            self.metrics.swaps.inc()
        log.info(
            "serving %s (revision %s)", ", ".join(sorted(s.ref for s in table.served.values())) or "nothing", revision
        )
        return True

    def _wanted(
        self, unavailable: dict[str, str]
    ) -> tuple[list[AliasEntry], set[tuple[str, int]], dict[tuple[str, str], Any]]:
        source = self.source
        assert source is not None
        aliases = source.aliases()
        policies = source.policies()
        pinned: set[tuple[str, int]] = set()
        if self.models is None:
            return aliases, pinned, policies
        kept: list[AliasEntry] = []
        for text in self.models:
            try:
                ref = ModelRef.parse(text)
            except ScoregateError as exc:
                unavailable[text] = exc.message
                continue
            if ref.version is not None:
                try:
                    source.resolve(str(ref))
                except ScoregateError as exc:
                    unavailable[str(ref)] = exc.message
                    continue
                pinned.add((ref.name, ref.version))
            elif ref.alias is not None:
                match = [a for a in aliases if a.name == ref.name and a.alias == ref.alias]
                if not match:
                    unavailable[str(ref)] = f"model {ref.name} has no alias {ref.alias!r}"
                kept.extend(match)
            else:
                match = [a for a in aliases if a.name == ref.name]
                if match:
                    kept.extend(match)
                    continue
                try:
                    info = source.resolve(ref.name)
                except ScoregateError as exc:
                    unavailable[str(ref)] = exc.message
                    continue
                pinned.add((info.name, info.version))
        return kept, pinned, policies

    def _build_table(self, revision: str) -> tuple[Table, dict[str, str]]:
        unavailable: dict[str, str] = {}
        aliases, pinned, raw_policies = self._wanted(unavailable)
        policies: dict[tuple[str, str], TrafficPolicy] = {}
        for a in aliases:
            raw = raw_policies.get((a.name, a.alias))
            if raw:
                try:
                    policies[(a.name, a.alias)] = TrafficPolicy.parse(raw)
                except ScoregateError as exc:
                    log.error("ignoring the traffic policy of %s@%s: %s", a.name, a.alias, exc)
        needed: set[tuple[str, int]] = set(pinned) | {(a.name, a.version) for a in aliases}
        for (name, _alias), policy in policies.items():
            needed |= {(name, v) for v in policy.versions()}

        current = self.table.served
        served: dict[tuple[str, int], Served] = {}
        for key in sorted(needed):
            existing = current.get(key)
            if existing is not None and not existing.retired:
                served[key] = existing
                continue
            try:
                served[key] = self._load(*key)
            except Exception as exc:
                unavailable[f"{key[0]}@{key[1]}"] = _one_line(exc)
                log.debug("loading %s@%s failed", *key, exc_info=True)

        table = Table(revision=revision, served=served)
        for (name, version), s in served.items():
            entry = table.models.setdefault(name, ModelEntry(name))
            entry.versions[version] = Route(primary=s)
        for a in aliases:
            primary = served.get((a.name, a.version))
            if primary is None:
                # keep the alias on what this worker served before rather than dropping it
                old = self.table.models.get(a.name)
                previous = old.aliases.get(a.alias) if old else None
                if previous is None or previous.primary.retired:
                    reason = unavailable.get(f"{a.name}@{a.version}")
                    if reason is not None:
                        unavailable[f"{a.name}@{a.alias}"] = f"its version {a.version} is not loaded: {reason}"
                    continue
                primary = previous.primary
                served[(primary.name, primary.version)] = primary
                table.models.setdefault(a.name, ModelEntry(a.name)).versions.setdefault(
                    primary.version, Route(primary=primary)
                )
            route = Route(primary=primary, alias=a.alias)
            policy = policies.get((a.name, a.alias))
            if policy is not None:
                route.policy = policy
                if policy.canary is not None:
                    route.canary = served.get((a.name, policy.canary.version))
                if policy.shadow is not None:
                    route.shadow = served.get((a.name, policy.shadow.version))
            table.models.setdefault(a.name, ModelEntry(a.name)).aliases[a.alias] = route
        for entry in table.models.values():
            entry.default = entry.aliases.get(DEFAULT_ALIAS) or entry.versions[max(entry.versions)]
        for ref, reason in sorted(unavailable.items()):
            if self.unavailable.get(ref) != reason:  # once per reason, not at every poll
                log.error("not serving %s: %s", ref, reason)
        return table, unavailable

    def _load(self, name: str, version: int) -> Served:
        assert self.source is not None
        info, scorer = self.source.load(name, version)
        validator = RecordValidator(info.input_schema)
        ref = info.ref
        thread_init = None
        if self.scorer_threads:
            limit = self.scorer_threads

            def thread_init() -> None:
                from threadpoolctl import threadpool_limits

                threadpool_limits(limit)

        record = warmup_record(info.input_schema)
        warm = not validator.check(record, 0)
        inline = self.scoring == "inline"
        batcher = Batcher(
            scorer,
            validator,
            name=ref,
            max_batch_rows=self.max_batch_rows,
            on_batch=self.metrics.child(self.metrics.batch_rows, info.name, str(info.version)).observe,
            thread_init=thread_init,
            inline=inline,
            direct_below=self.direct_below,
        )
        served = Served(info, batcher, validator, self.metrics)
        try:
            if warm:
                for _ in range(3):
                    served.outputs = batcher.score_now([record])
        except Exception:
            batcher.close()
            raise
        log.info("loaded and warmed %s (scoring %s)", ref, "inline" if inline else "on its own thread")
        return served

    # --- lookups on the hot path -----------------------------------------------------------------

    def route(self, name: str, selector: str | None) -> Route:
        entry = self.table.models.get(name)
        if selector is not None and not (is_version(selector) or is_alias(selector)):
            raise InvalidReferenceError(
                f"invalid model reference {bounded(f'{name}@{selector}', 80)!r}: {REFERENCE_RULE}"
            )
        if entry is None:
            self._if_unavailable(name, selector)
            served = ", ".join(sorted(self.table.models)) or "none"
            raise NotFoundError(f"model {bounded(name, 80)!r} is not served here (served models: {served})")
        if selector is None:
            route = entry.default
        elif is_version(selector):
            route = entry.versions.get(int(selector))
            if route is None:
                self._if_unavailable(name, selector)
                raise NotFoundError(
                    f"version {selector} of model {name!r} is not served here "
                    f"(served versions: {', '.join(map(str, sorted(entry.versions)))})"
                )
        else:
            route = entry.aliases.get(selector)
            if route is None:
                self._if_unavailable(name, selector)
                raise NotFoundError(
                    f"model {name!r} has no served alias {selector!r} "
                    f"(served aliases: {', '.join(sorted(entry.aliases)) or 'none'})"
                )
        assert route is not None
        return route

    def _if_unavailable(self, name: str, selector: str | None) -> None:
        """503 naming the reason when the reference was wanted here but could not be loaded."""
        if not self.unavailable:
            return
        ref = name if selector is None else f"{name}@{int(selector) if is_version(selector) else selector}"
        reason = self.unavailable.get(ref)
        if reason is not None:
            raise HTTPError(503, "not_loaded", f"{ref} is not loaded: {reason}")

    def loaded(self) -> dict[tuple[str, str], bool]:
        """(model, version) -> whether it is served, for the loaded gauge (references that never
        resolved to a version are reported with the version they named, or none)."""
        out = {(s.name, s.version_label): True for s in self.table.served.values()}
        for ref in self.unavailable:
            name, _, selector = ref.partition("@")
            out.setdefault((name, selector if is_version(selector) else ""), False)
        return out


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ScoregateError):
        return exc.message
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {bounded(text, 200)}"

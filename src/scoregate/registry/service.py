"""The registry service: register, resolve, load, alias, retire.

Artifacts are written (content-addressed, idempotent) before the metadata
transaction; the transaction then records the version in one step. A failure at any
point leaves the registry as it was: an unreferenced blob is harmless and is
reused by the next registration of the same bytes.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import getpass
import io
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, selectinload

from scoregate.config import Settings
from scoregate.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    PolicyViolationError,
    ScoregateError,
    StoreUnavailableError,
    UnauthorizedError,
)
from scoregate.flavors import get_flavor
from scoregate.governance.access import Permission, Principal, Role, hash_token
from scoregate.governance.audit_checks import check_gone, check_rows, recorded_keys
from scoregate.governance.policy import DEFAULT_POLICY, EvidenceFact, Policy, VersionFacts, missing_items
from scoregate.governance.tables import (
    AliasHistoryRow,
    DecisionRow,
    EvidenceRow,
    PolicyExceptionRow,
    PolicyRow,
    TokenRow,
    UserRow,
)
from scoregate.limits import DEFAULT_MODEL_TIMEOUT_S, between, finite, milliseconds, seconds
from scoregate.refs import MAX_VERSION, ModelRef, validate_alias, validate_model_name
from scoregate.registry.artifacts import ArtifactStore
from scoregate.registry.database import WRITE, make_engine, migrate, redact
from scoregate.registry.isolated import SAMPLE_ROWS, try_artifact
from scoregate.registry.lineage import describe_training_data, environment, git_commit
from scoregate.registry.records import (
    RISK_TIERS,
    STATUSES,
    AliasRecord,
    LoadedModel,
    ModelSummary,
    ModelVersion,
)
from scoregate.registry.tables import (
    AliasRow,
    ModelRow,
    RevisionRow,
    TagRow,
    TrafficPolicyRow,
    VersionRow,
    utcnow,
)
from scoregate.schema import (
    ModelSchema,
    OutputContract,
    OutputField,
    infer_schema,
    open_categories,
    prepare_frame,
    settle_outputs,
)
from scoregate.traffic import TrafficPolicy

#: Rows of training data kept with a version for validation and monitoring.
REFERENCE_ROWS = 1000
ROUTING = "routing"


class Registry:
    """Models, versions and aliases over a metadata database and an artifact store."""

    def __init__(
        self,
        settings: Settings,
        *,
        token: str | None = None,
        migrate_schema: bool = True,
        request_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.token = token if token is not None else settings.token
        #: Carried by every audit event this instance records (one CLI command, one API request).
        self.request_id = request_id
        self.engine = make_engine(settings.resolved_database_url)
        if migrate_schema:
            migrate(self.engine)
        self.artifacts = ArtifactStore(settings.resolved_artifacts_url, settings.cache_dir, settings.artifacts_options)

    @classmethod
    def open(cls, settings: Settings | None = None) -> Registry:
        return cls(settings or Settings.load())

    def close(self) -> None:
        self.engine.dispose()

    def acting_as(self, token: str | None, *, request_id: str | None) -> Registry:
        """This registry (its engine and artifact store, shared) on behalf of another caller: the
        registry service makes one per API request, so each is authenticated by its own token."""
        other = copy.copy(self)
        other.token = token
        other.request_id = request_id
        return other

    # -- sessions ----------------------------------------------------------------------------

    @contextmanager
    def reading(self) -> Iterator[Session]:
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                yield session
        except OperationalError as exc:
            raise self._unavailable(exc) from None

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One transaction; on SQLite it holds the write lock from its first statement."""
        try:
            with (
                Session(self.engine.execution_options(**WRITE), expire_on_commit=False) as session,
                session.begin(),
            ):
                yield session
        except OperationalError as exc:
            raise self._unavailable(exc) from None

    def _unavailable(self, exc: OperationalError) -> StoreUnavailableError:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        return StoreUnavailableError(f"metadata database {redact(str(self.engine.url))} failed: {reason}")

    @contextmanager
    def mutation(self, permission: Permission | None, subject: str) -> Iterator[tuple[Session, Principal]]:
        """A write transaction on behalf of the caller, who must hold ``permission``."""
        with self.transaction() as session:
            actor = self._authenticate(session)
            if permission is not None:
                actor.require(permission, subject=subject)
            yield session, actor

    # -- identity ------------------------------------------------------------------------------

    def _authenticate(self, session: Session) -> Principal:
        """Resolve the caller's token; before the first user exists, the local user acts as admin.

        The token and user rows are checked against the audit log, and so is "no user yet":
        users deleted in SQL do not hand out the local admin.
        """
        if session.scalar(select(func.count()).select_from(UserRow)) == 0:
            check_gone(session, UserRow.__table__, recorded_keys(session, UserRow.__table__))
            return Principal(name=_current_user() or "local", roles=(Role.ADMIN,), authenticated=False)
        if not self.token:
            raise UnauthorizedError(
                "an API token is required: set SCOREGATE_TOKEN or `token` in the config file "
                "(`scoregate init` printed the first one)"
            )
        row = session.scalars(select(TokenRow).where(TokenRow.token_hash == hash_token(self.token))).one_or_none()
        if row is None:
            raise UnauthorizedError("the API token is not valid")
        user = session.get(UserRow, row.user_id)
        check_rows(session, [row, user])
        if row.revoked_at is not None:
            raise UnauthorizedError(
                f"the API token {row.prefix}… was revoked on {_aware(row.revoked_at):%Y-%m-%d %H:%M} UTC"
            )
        if row.expires_at is not None and _aware(row.expires_at) <= utcnow():
            raise UnauthorizedError(
                f"the API token {row.prefix}… expired on {_aware(row.expires_at):%Y-%m-%d %H:%M} UTC"
            )
        if user is None or user.disabled:
            raise UnauthorizedError("the API token belongs to a disabled user")
        return Principal(name=user.name, roles=tuple(Role(r) for r in user.roles), token_id=row.id)

    def whoami(self) -> Principal:
        with self.reading() as session:
            return self._authenticate(session)

    def record_event(
        self,
        session: Session,
        actor: Principal,
        action: str,
        subject: str,
        *,
        before: Any = None,
        after: Any = None,
        reason: str | None = None,
    ) -> None:
        """Append the audit event of a change, in the change's own transaction, after the change:
        the event records the audited rows written so far, and a transaction that writes one
        after its last event is refused at commit."""
        from scoregate.governance.audit import append_event

        append_event(
            session,
            actor=actor.name,
            action=action,
            subject=subject,
            before=before,
            after=after,
            reason=reason,
            request_id=self.request_id,
        )

    # -- registration --------------------------------------------------------------------------

    def register(
        self,
        name: str,
        artifact: Path | str,
        *,
        flavor: str,
        train_data: Path | str | None = None,
        target: str | None = None,
        schema: ModelSchema | None = None,
        outputs: Sequence[OutputField] | None = None,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        description: str | None = None,
        owner: str | None = None,
        risk_tier: str | None = None,
        parent_version: int | None = None,
        latency_budget_ms: float = 300.0,
        code_dir: Path | None = None,
        timeout: float = DEFAULT_MODEL_TIMEOUT_S,
        train_data_uri: str | None = None,
        code_version: tuple[str | None, bool | None] | None = None,
    ) -> ModelVersion:
        """Register a new immutable version of ``name``; the model is created on first use.

        ``outputs`` (or the ``outputs`` of ``schema``) declares the output contract; without
        it the outputs are inferred from the model's scores on reference rows, and a NaN
        or null among them is refused rather than recorded as nullable.

        Loading the artifact and scoring the training sample must finish within ``timeout``
        seconds; a model that does not is refused (:class:`ModelTimeoutError`), nothing stored.

        ``train_data_uri`` and ``code_version`` record where the client had the training file and
        its git commit, when a remote client uploaded them (the service sees only the copies).
        """
        validate_model_name(name)
        self.whoami().require(Permission.REGISTER, subject=name)  # fail before the expensive work
        artifact = Path(artifact).expanduser()
        if not artifact.exists():
            raise InvalidInputError(f"artifact {artifact} does not exist")
        if risk_tier is not None and risk_tier not in RISK_TIERS:
            raise InvalidInputError(f"invalid risk tier {risk_tier!r}: choose one of {', '.join(RISK_TIERS)}")
        milliseconds("latency budget", latency_budget_ms)
        seconds("timeout", timeout)
        if parent_version is not None:
            between("parent version", parent_version, 1, MAX_VERSION)
        metrics = _check_metrics(metrics or {})
        if outputs and schema is not None and schema.outputs:
            raise InvalidInputError("the outputs are declared twice (outputs and the schema's outputs): give one")
        declared = list(outputs or (schema.outputs if schema is not None else []))
        names = [o.name for o in declared]
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise InvalidInputError(f"the declared outputs name {', '.join(twice)} more than once")
        tags = {str(k): str(v) for k, v in (tags or {}).items()}
        flavor_impl = get_flavor(flavor)

        training = describe_training_data(Path(train_data)) if train_data is not None else None
        inferred = schema is None and training is not None
        if training is not None and train_data_uri is not None:
            training = dataclasses.replace(training, uri=train_data_uri[:1024])
        if schema is None:
            if training is not None:
                schema = infer_schema(training.frame, target=target)
            elif flavor == "mlflow":
                from scoregate.flavors.mlflow import mlflow_signature_schema

                schema = mlflow_signature_schema(artifact)
            if schema is None:
                raise InvalidInputError(
                    "cannot work out the model's input schema: give --train-data (the schema is inferred "
                    "from it) or --schema FILE"
                )
        elif target is not None and schema.target is None:
            schema = schema.model_copy(update={"target": target})

        reference: pd.DataFrame | None = None
        sample = None
        if training is not None:
            drawn = training.frame.sample(n=min(REFERENCE_ROWS, len(training.frame)), random_state=0)
            reference = drawn.sort_index().reset_index(drop=True)
            sample = prepare_frame(schema, reference).head(SAMPLE_ROWS)
        # the model's code runs in a worker process, so a hang is stopped at the timeout
        trial = try_artifact(flavor, artifact, sample, timeout=timeout)
        if inferred and trial.accepts_unseen:
            # an inferred closed set opens where the model takes unknown levels; a declared
            # schema keeps what its author declared
            schema = open_categories(schema, trial.accepts_unseen)
        if trial.outputs is not None:
            fields, contract = settle_outputs(trial.outputs, declared)
            schema = schema.model_copy(update={"outputs": fields, "output_contract": contract})
        else:
            contract = OutputContract.DECLARED if declared else None
            schema = schema.model_copy(update={"outputs": declared, "output_contract": contract})

        digest, size, kind = self.artifacts.put(artifact)
        reference_digest = None
        if reference is not None:
            buffer = io.BytesIO()
            reference.to_parquet(buffer, index=False)
            reference_digest = self.artifacts.put_bytes(buffer.getvalue())
        commit, dirty = code_version if code_version is not None else git_commit(code_dir)

        fields = dict(
            flavor=flavor,
            status="registered",
            description=description,
            artifact_digest=digest,
            artifact_size=size,
            artifact_kind=kind,
            artifact_name=artifact.name,
            input_schema=schema.model_dump(mode="json", exclude={"outputs"}),
            output_schema=[o.model_dump(mode="json") for o in schema.outputs],
            metrics=metrics,
            params=dict(params or {}),
            latency_budget_ms=float(latency_budget_ms),
            training_data_uri=training.uri if training else None,
            training_data_digest=training.digest if training else None,
            training_rows=training.rows if training else None,
            training_schema_digest=schema.digest(),
            reference_digest=reference_digest,
            reference_rows=len(reference) if reference is not None else None,
            code_version=commit,
            code_dirty=dirty,
            parent_version=parent_version,
            # an MLflow directory delegates to the flavor inside it: pin that one's packages too
            environment=environment(
                tuple(dict.fromkeys(flavor_impl.packages + get_flavor(trial.scorer_flavor).packages + trial.packages))
            ),
        )
        for attempt in range(10):
            try:
                return self._insert_version(name, fields, tags, description, owner, risk_tier)
            except DBIntegrityError:
                # Another process took the same model name or version number between our
                # read and our insert (PostgreSQL); the retry sees its row and moves on.
                if attempt == 9:
                    raise ConflictError(f"could not allocate a version of {name!r}: too much contention") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _insert_version(
        self,
        name: str,
        fields: dict[str, Any],
        tags: dict[str, str],
        description: str | None,
        owner: str | None,
        risk_tier: str | None,
    ) -> ModelVersion:
        with self.mutation(Permission.REGISTER, name) as (session, actor):
            model = session.scalars(select(ModelRow).where(ModelRow.name == name).with_for_update()).one_or_none()
            if model is not None:
                check_rows(session, [model])  # its risk tier chooses the gates: not one set in SQL
            now = utcnow()
            if model is None:
                model = ModelRow(
                    name=name, description=description, owner=owner, risk_tier=risk_tier, created_at=now, updated_at=now
                )
                session.add(model)
                session.flush()
            else:
                if risk_tier is not None and risk_tier != model.risk_tier:
                    # the tier chooses the gates: a registration must not lower them for every version
                    raise ConflictError(
                        f"model {name!r} is in risk tier {model.risk_tier or 'unset (the default tier)'}; an admin "
                        f"changes it with `scoregate models set-tier {name} {risk_tier} --reason ...`"
                    )
                if owner is not None:
                    model.owner = owner
                if description is not None and model.description is None:
                    model.description = description
                model.updated_at = now
            parent = fields.get("parent_version")
            latest = session.scalar(select(func.max(VersionRow.version)).where(VersionRow.model_id == model.id)) or 0
            if parent is not None and not (1 <= parent <= latest):
                raise NotFoundError(f"parent version {name}@{parent} not found")
            row = VersionRow(model_id=model.id, version=latest + 1, created_at=now, created_by=actor.name, **fields)
            row.tags = [TagRow(key=k, value=v) for k, v in sorted(tags.items())]
            session.add(row)
            session.flush()
            record = self._to_record(session, row, model)
            self.record_event(
                session,
                actor,
                "register",
                record.ref,
                after={
                    "artifact_digest": record.artifact_digest,
                    "flavor": record.flavor,
                    "training_data_digest": record.training_data_digest,
                    "risk_tier": model.risk_tier,
                },
            )
            return record

    # -- lookups -------------------------------------------------------------------------------

    def resolve(self, ref: str | ModelRef) -> ModelVersion:
        """The version a reference names; ``name`` alone means its latest version."""
        parsed = ref if isinstance(ref, ModelRef) else ModelRef.parse(ref)
        with self.reading() as session:
            model, row = self.find(session, parsed)
            return self._to_record(session, row, model)

    def model_row(self, session: Session, name: str) -> ModelRow:
        """The model called ``name``, or NotFoundError."""
        model = session.scalars(select(ModelRow).where(ModelRow.name == name)).one_or_none()
        if model is None:
            raise NotFoundError(f"model {name!r} not found")
        return model

    def find(self, session: Session, ref: ModelRef) -> tuple[ModelRow, VersionRow]:
        """The model and version a reference names, each row checked against the audit log
        (and the alias row, for ``name@alias``): TamperedError if one was changed in SQL."""
        model = self.model_row(session, ref.name)
        if ref.alias is not None:
            alias = session.scalars(
                select(AliasRow).where(AliasRow.model_id == model.id, AliasRow.alias == ref.alias)
            ).one_or_none()
            if alias is None:
                known = session.scalars(select(AliasRow.alias).where(AliasRow.model_id == model.id)).all()
                listing = f"; its aliases: {', '.join(sorted(known))}" if known else "; it has no aliases"
                raise NotFoundError(f"alias {ref.alias!r} of model {ref.name!r} not found{listing}")
            target = session.get(VersionRow, alias.version_id)
            check_rows(session, [model, alias, target])
            return model, target  # type: ignore[return-value]
        query = select(VersionRow).where(VersionRow.model_id == model.id).options(selectinload(VersionRow.tags))
        if ref.version is not None:
            row = session.scalars(query.where(VersionRow.version == ref.version)).one_or_none()
        else:
            row = session.scalars(query.order_by(VersionRow.version.desc()).limit(1)).one_or_none()
        if row is None:
            latest = session.scalar(select(func.max(VersionRow.version)).where(VersionRow.model_id == model.id))
            have = f"its versions are 1-{latest}" if latest else "it has no versions"
            raise NotFoundError(f"{ref} not found: {have}")
        check_rows(session, [model, row])
        return model, row

    def load(self, ref: str | ModelRef) -> LoadedModel:
        """Fetch the artifact, verify its digest and load it with its flavor."""
        record = self.resolve(ref)
        path = self.artifacts.materialize(record.artifact_digest, record.artifact_kind, record.artifact_name)
        scorer = get_flavor(record.flavor).load(path)
        return LoadedModel(version=record, scorer=scorer)

    def reference_data(self, ref: str | ModelRef) -> pd.DataFrame:
        record = self.resolve(ref)
        if record.reference_digest is None:
            raise NotFoundError(f"{record.ref} has no reference data (it was registered without --train-data)")
        return pd.read_parquet(io.BytesIO(self.artifacts.read_bytes(record.reference_digest)))

    def list_models(self) -> list[ModelSummary]:
        with self.reading() as session:
            models = session.scalars(select(ModelRow).order_by(ModelRow.name)).all()
            counts = {
                model_id: (count, latest)
                for model_id, count, latest in session.execute(
                    select(VersionRow.model_id, func.count(), func.max(VersionRow.version)).group_by(
                        VersionRow.model_id
                    )
                )
            }
            aliases: dict[int, dict[str, int]] = {}
            for model_id, alias, version in session.execute(
                select(AliasRow.model_id, AliasRow.alias, VersionRow.version).join(
                    VersionRow, AliasRow.version_id == VersionRow.id
                )
            ):
                aliases.setdefault(model_id, {})[alias] = version
            return [
                ModelSummary(
                    name=m.name,
                    description=m.description,
                    owner=m.owner,
                    risk_tier=m.risk_tier,
                    latest_version=counts.get(m.id, (0, None))[1],
                    versions=counts.get(m.id, (0, None))[0],
                    aliases=dict(sorted(aliases.get(m.id, {}).items())),
                    created_at=m.created_at,
                    updated_at=m.updated_at,
                )
                for m in models
            ]

    def list_versions(self, name: str) -> list[ModelVersion]:
        with self.reading() as session:
            model = self.model_row(session, name)
            rows = session.scalars(
                select(VersionRow)
                .where(VersionRow.model_id == model.id)
                .options(selectinload(VersionRow.tags))
                .order_by(VersionRow.version)
            ).all()
            return [self._to_record(session, row, model) for row in rows]

    # -- aliases -------------------------------------------------------------------------------

    def set_alias(
        self, name: str, alias: str, version: int, *, overwrite: bool = True, reason: str | None = None
    ) -> AliasRecord:
        """Point ``name@alias`` at ``version`` (moving it if it exists, unless ``overwrite`` is off).

        A protected alias (``production`` by default) moves only when the version meets
        the governance policy of its risk tier; the refusal lists every missing item.
        """
        return self.move_aliases([(name, alias, version)], overwrite=overwrite, reason=reason)[0]

    def move_aliases(
        self, moves: list[tuple[str, str, int]], *, overwrite: bool = True, reason: str | None = None
    ) -> list[AliasRecord]:
        """Move several aliases in one transaction: all move or none does."""
        if not moves:
            raise InvalidInputError("no alias moves given")
        for _, alias, _ in moves:
            validate_alias(alias)
        with self.mutation(None, ", ".join(f"{n}@{a}" for n, a, _ in moves)) as (session, actor):
            return [
                self._move_alias(session, actor, name, alias, version, overwrite=overwrite, reason=reason)
                for name, alias, version in moves
            ]

    def _move_alias(
        self,
        session: Session,
        actor: Principal,
        name: str,
        alias: str,
        version: int,
        *,
        overwrite: bool,
        reason: str | None,
    ) -> AliasRecord:
        model, row = self.find(session, ModelRef(name, version=version))
        subject = f"{name}@{alias}"
        policy = self.policy_in_force(session)
        protection = policy.protection(alias)
        if protection is not None and protection != alias:
            raise InvalidInputError(
                f"alias {alias!r} looks like the protected alias {protection!r} (compared without case, separators, "
                f"abbreviations or digit look-alikes): use {protection!r}, which the policy gates, or a clearly "
                "different name"
            )
        protected = protection is not None
        if protected:
            tier = policy.tier(model.risk_tier)
            required = tier.protected_alias_role
            if required not in actor.roles and Role.ADMIN not in actor.roles:
                raise ForbiddenError(
                    f"{actor.name} may not move {subject}: policy rule for risk tier "
                    f"{model.risk_tier or policy.default_tier!r} requires the role {required.value}"
                )
        else:
            actor.require(Permission.MOVE_ALIAS, subject=subject)
        if row.status == "retired":
            raise ConflictError(f"{name}@{version} is retired; an alias cannot point at a retired version")
        current = session.scalars(
            select(AliasRow).where(AliasRow.model_id == model.id, AliasRow.alias == alias).with_for_update()
        ).one_or_none()
        previous = session.get(VersionRow, current.version_id) if current is not None else None
        check_rows(session, [current, previous])
        if previous is not None and previous.id == row.id:
            return AliasRecord(name=name, alias=alias, version=version, updated_at=_aware(current.updated_at))
        if previous is not None and not overwrite:
            raise ConflictError(f"alias {alias!r} of {name!r} already points at version {previous.version}")
        if protected:
            tier = policy.tier(model.risk_tier)
            missing = missing_items(tier, self.facts(session, model, row), utcnow())
            if missing:
                listing = "; ".join(m["message"] for m in missing)
                raise PolicyViolationError(
                    f"{name}@{version} may not become {alias} under the {model.risk_tier or policy.default_tier} "
                    f"risk-tier policy: {listing}",
                    details=missing,
                )
        now = utcnow()
        if current is None:
            current = AliasRow(model_id=model.id, alias=alias, version_id=row.id, updated_at=now)
            session.add(current)
        else:
            current.version_id = row.id
            current.updated_at = now
        if protected:
            if previous is not None and previous.status == "production":
                self.decide(session, actor, previous, "step down", "approved", reason or f"{alias} moved on")
            self.decide(session, actor, row, alias, "production", reason)
        session.add(
            AliasHistoryRow(model_id=model.id, alias=alias, version=version, actor=actor.name, reason=reason, at=now)
        )
        self._bump(session)
        self.record_event(
            session,
            actor,
            "alias.set",
            subject,
            before={"version": previous.version} if previous is not None else None,
            after={"version": version},
            reason=reason,
        )
        return AliasRecord(name=name, alias=alias, version=version, updated_at=now)

    def delete_alias(self, name: str, alias: str, *, reason: str | None = None) -> None:
        validate_alias(alias)
        with self.mutation(None, f"{name}@{alias}") as (session, actor):
            model = self.model_row(session, name)
            policy = self.policy_in_force(session)
            protected = policy.protection(alias) is not None  # look-alikes made before they were refused too
            if protected:
                actor.require(Permission.MOVE_PROTECTED_ALIAS, subject=f"{name}@{alias}")
            else:
                actor.require(Permission.MOVE_ALIAS, subject=f"{name}@{alias}")
            current = session.scalars(
                select(AliasRow).where(AliasRow.model_id == model.id, AliasRow.alias == alias)
            ).one_or_none()
            if current is None:
                raise NotFoundError(f"alias {alias!r} of model {name!r} not found")
            held = session.get(VersionRow, current.version_id)
            check_rows(session, [model, current, held])
            session.delete(current)
            policy_row = session.get(TrafficPolicyRow, (model.id, alias))
            if policy_row is not None:
                session.delete(policy_row)
            if held is not None and held.status == "production" and protected:
                self.decide(session, actor, held, "step down", "approved", reason or f"{alias} deleted")
            session.add(
                AliasHistoryRow(
                    model_id=model.id, alias=alias, version=None, actor=actor.name, reason=reason, at=utcnow()
                )
            )
            self._bump(session)
            self.record_event(
                session,
                actor,
                "alias.delete",
                f"{name}@{alias}",
                before={"version": held.version if held else None},
                reason=reason,
            )

    def alias_history(self, name: str, alias: str) -> list[dict[str, Any]]:
        """Every move of ``name@alias``, oldest first: {version (None = deleted), at, actor, reason}."""
        with self.reading() as session:
            model = self.model_row(session, name)
            rows = session.scalars(
                select(AliasHistoryRow)
                .where(AliasHistoryRow.model_id == model.id, AliasHistoryRow.alias == alias)
                .order_by(AliasHistoryRow.id)
            ).all()
            return [{"version": r.version, "at": _aware(r.at), "actor": r.actor, "reason": r.reason} for r in rows]

    def alias_at(self, name: str, alias: str, at: dt.datetime) -> int | None:
        """Which version held ``name@alias`` at time ``at`` (None if none did)."""
        at = _aware(at)
        holder = None
        for entry in self.alias_history(name, alias):
            if entry["at"] > at:
                break
            holder = entry["version"]
        return holder

    def rollback(self, name: str, alias: str, *, reason: str | None = None) -> AliasRecord:
        """Point ``name@alias`` back at the version that held it before the current one."""
        history = [h["version"] for h in self.alias_history(name, alias)]
        if not history or history[-1] is None:
            raise ConflictError(f"{name}@{alias} has no current holder to roll back from")
        current = history[-1]
        previous = next((v for v in reversed(history[:-1]) if v is not None and v != current), None)
        if previous is None:
            raise ConflictError(f"{name}@{alias} has no previous holder to roll back to")
        return self.set_alias(name, alias, previous, reason=reason or f"rollback from version {current}")

    def aliases(self, name: str | None = None) -> list[AliasRecord]:
        """Every alias with the version it points at (what the server serves), each alias,
        model and version row checked against the audit log."""
        query = (
            select(AliasRow, ModelRow, VersionRow)
            .join(ModelRow, AliasRow.model_id == ModelRow.id)
            .join(VersionRow, AliasRow.version_id == VersionRow.id)
            .order_by(ModelRow.name, AliasRow.alias)
        )
        if name is not None:
            query = query.where(ModelRow.name == name)
        with self.reading() as session:
            rows = session.execute(query).all()
            check_rows(session, [row for triple in rows for row in triple])
            return [AliasRecord(m.name, a.alias, v.version, a.updated_at) for a, m, v in rows]

    def alias_revision(self) -> str:
        """A token that changes whenever an alias or a traffic policy changes (cheap to poll)."""
        with self.reading() as session:
            value = session.scalar(select(RevisionRow.value).where(RevisionRow.name == ROUTING))
            return str(value or 0)

    def _bump(self, session: Session) -> None:
        updated = session.execute(
            update(RevisionRow).where(RevisionRow.name == ROUTING).values(value=RevisionRow.value + 1)
        )
        if updated.rowcount == 0:  # type: ignore[attr-defined]
            session.add(RevisionRow(name=ROUTING, value=1))

    # -- traffic policies ------------------------------------------------------------------------

    def set_traffic_policy(
        self,
        name: str,
        alias: str,
        policy: TrafficPolicy | Mapping[str, Any] | None,
        *,
        reason: str | None = None,
    ) -> TrafficPolicy | None:
        """Split ``name@alias``'s traffic (a canary, a shadow); ``None`` or an empty policy clears it.

        Checked when written, not when served: the alias must exist, the versions must be
        other live versions of the same model, a sticky field must be an input of both. A
        canary of a protected alias answers customers, so its version must meet the same
        gates as moving the alias to it, and only the role the tier names may set it.
        """
        validate_alias(alias)
        parsed = (
            None if policy is None else policy if isinstance(policy, TrafficPolicy) else TrafficPolicy.parse(policy)
        )
        if parsed is not None and parsed.empty:
            parsed = None
        subject = f"{name}@{alias}"
        with self.mutation(None, subject) as (session, actor):
            model = self.model_row(session, name)
            rules = self.policy_in_force(session)
            protected = rules.protection(alias) is not None
            if protected:
                required = rules.tier(model.risk_tier).protected_alias_role
                if required not in actor.roles and Role.ADMIN not in actor.roles:
                    raise ForbiddenError(
                        f"{actor.name} may not split {subject}'s traffic: policy rule for risk tier "
                        f"{model.risk_tier or rules.default_tier!r} requires the role {required.value}"
                    )
            else:
                actor.require(Permission.MOVE_ALIAS, subject=subject)
            current = session.scalars(
                select(AliasRow).where(AliasRow.model_id == model.id, AliasRow.alias == alias)
            ).one_or_none()
            row = session.get(TrafficPolicyRow, (model.id, alias))
            if parsed is not None:
                if current is None:
                    raise NotFoundError(
                        f"alias {alias!r} of model {name!r} not found: a traffic policy splits an alias"
                    )
                self._check_split(session, model, current, parsed, protected)
            before = dict(row.policy) if row is not None else None
            after = parsed.model_dump(mode="json", exclude_none=True) if parsed is not None else None
            if after is None:
                if row is None:
                    raise NotFoundError(f"{subject} has no traffic policy")
                session.delete(row)
            elif row is None:
                session.add(TrafficPolicyRow(model_id=model.id, alias=alias, policy=after, updated_at=utcnow()))
            else:
                row.policy = after
                row.updated_at = utcnow()
            self._bump(session)
            self.record_event(session, actor, "traffic_policy.set", subject, before=before, after=after, reason=reason)
            return parsed

    def _check_split(
        self, session: Session, model: ModelRow, current: AliasRow, policy: TrafficPolicy, protected: bool
    ) -> None:
        held = session.get(VersionRow, current.version_id)
        assert held is not None
        for role, target in (("canary", policy.canary), ("shadow", policy.shadow)):
            if target is None:
                continue
            _, row = self.find(session, ModelRef(model.name, version=target.version))
            if row.status in ("retired", "deleted"):
                raise ConflictError(f"the {role} {model.name}@{row.version} is {row.status}")
            if row.id == held.id:
                raise InvalidInputError(
                    f"the {role} {model.name}@{row.version} is the version {model.name}@{current.alias} already serves"
                )
            if role == "canary" and target.sticky_field is not None:
                for version in (held, row):
                    if target.sticky_field not in contract_schema(version).feature_names:
                        raise InvalidInputError(
                            f"the sticky field {target.sticky_field[:64]!r} is not an input of "
                            f"{model.name}@{version.version}"
                        )
            if role == "canary" and protected:
                tier = self.policy_in_force(session).tier(model.risk_tier)
                missing = missing_items(tier, self.facts(session, model, row), utcnow())
                if missing:
                    listing = "; ".join(m["message"] for m in missing)
                    raise PolicyViolationError(
                        f"{model.name}@{row.version} may not take a canary share of {model.name}@{current.alias}: it "
                        f"answers customers, so it must meet the same policy: {listing}",
                        details=missing,
                    )

    def traffic_policies(self) -> dict[tuple[str, str], dict[str, Any]]:
        """The serving policy of each alias that has one, checked against the audit log."""
        with self.reading() as session:
            rows = session.execute(
                select(TrafficPolicyRow, ModelRow).join(ModelRow, TrafficPolicyRow.model_id == ModelRow.id)
            ).all()
            check_rows(session, [row for pair in rows for row in pair])
            return {(model.name, row.alias): dict(row.policy) for row, model in rows}

    # -- lifecycle -------------------------------------------------------------------------------

    def retire(self, ref: str | ModelRef, *, reason: str) -> ModelVersion:
        parsed = ref if isinstance(ref, ModelRef) else ModelRef.parse(ref, require_selector=True)
        if not reason or not reason.strip():
            raise InvalidInputError("a reason is required to retire a version (--reason)")
        with self.mutation(Permission.RETIRE, str(parsed)) as (session, actor):
            model, row = self.find(session, parsed)
            if row.status == "retired":
                raise ConflictError(f"{model.name}@{row.version} is already retired")
            held = session.scalars(select(AliasRow.alias).where(AliasRow.version_id == row.id)).all()
            if held:
                raise ConflictError(
                    f"{model.name}@{row.version} still holds alias(es) {', '.join(sorted(held))}; "
                    "move or delete them before retiring it"
                )
            self.decide(session, actor, row, "retire", "retired", reason.strip())
            row.retired_at = utcnow()
            row.retire_reason = reason.strip()
            self.record_event(session, actor, "retire", f"{model.name}@{row.version}", reason=reason.strip())
            return self._to_record(session, row, model)

    def set_tag(self, ref: str | ModelRef, key: str, value: str) -> None:
        parsed = ref if isinstance(ref, ModelRef) else ModelRef.parse(ref, require_selector=True)
        if not key or len(key) > 128:
            raise InvalidInputError("a tag key needs 1-128 characters")
        with self.mutation(Permission.REGISTER, str(parsed)) as (session, actor):
            model, row = self.find(session, parsed)
            existing = session.get(TagRow, (row.id, key))
            before = existing.value if existing is not None else None
            if existing is None:
                session.add(TagRow(version_id=row.id, key=key, value=str(value)))
            else:
                existing.value = str(value)
            self.record_event(
                session, actor, "tag.set", f"{model.name}@{row.version}", before={key: before}, after={key: str(value)}
            )

    def delete_tag(self, ref: str | ModelRef, key: str) -> None:
        parsed = ref if isinstance(ref, ModelRef) else ModelRef.parse(ref, require_selector=True)
        with self.mutation(Permission.REGISTER, str(parsed)) as (session, actor):
            model, row = self.find(session, parsed)
            existing = session.get(TagRow, (row.id, key))
            if existing is None:
                raise NotFoundError(f"{model.name}@{row.version} has no tag {key[:128]!r}")
            before = existing.value
            session.delete(existing)
            session.flush()
            self.record_event(
                session, actor, "tag.delete", f"{model.name}@{row.version}", before={key: before}, after={key: None}
            )

    def set_description(self, ref: str | ModelRef, description: str | None) -> None:
        """The description of a model (``name``) or of one version (``name@3``, ``name@alias``); audited."""
        parsed = ref if isinstance(ref, ModelRef) else ModelRef.parse(ref)
        text = description.strip() if description else None
        if text is not None and len(text) > MAX_DESCRIPTION:
            raise InvalidInputError(f"a description has at most {MAX_DESCRIPTION} characters (got {len(text)})")
        with self.mutation(Permission.REGISTER, str(parsed)) as (session, actor):
            if parsed.version is None and parsed.alias is None:
                model = self.model_row(session, parsed.name)
                target: Any = model
                subject = model.name
            else:
                model, target = self.find(session, parsed)
                subject = f"{model.name}@{target.version}"
            before = target.description
            if before == text:
                return
            target.description = text
            if target is model:
                model.updated_at = utcnow()
            self.record_event(
                session, actor, "description.set", subject, before={"description": before}, after={"description": text}
            )

    def search_models(
        self,
        *,
        name: str | None = None,
        owner: str | None = None,
        risk_tier: str | None = None,
        alias: str | None = None,
    ) -> list[ModelSummary]:
        """Models whose name matches ``name`` (a glob: ``credit-*``), with that owner, risk tier
        or an alias of that name."""
        matches = _glob(name)
        return [
            m
            for m in self.list_models()
            if matches(m.name)
            and (owner is None or m.owner == owner)
            and (risk_tier is None or m.risk_tier == risk_tier)
            and (alias is None or alias in m.aliases)
        ]

    def search_versions(
        self,
        *,
        name: str | None = None,
        flavor: str | None = None,
        status: str | None = None,
        tags: Mapping[str, str] | None = None,
        alias: str | None = None,
        max_results: int = 1000,
    ) -> list[ModelVersion]:
        """Versions of the models matching ``name`` (a glob) with that flavor, status, every
        tag in ``tags`` (key: value) and ``alias``, newest first, at most ``max_results``."""
        max_results = int(between("max_results", max_results, 1, 100_000))
        if status is not None and status not in STATUSES:
            raise InvalidInputError(f"invalid status {status[:20]!r}: choose one of {', '.join(STATUSES)}")
        matches = _glob(name)
        wanted = {str(k): str(v) for k, v in (tags or {}).items()}
        with self.reading() as session:
            query = (
                select(VersionRow, ModelRow)
                .join(ModelRow, VersionRow.model_id == ModelRow.id)
                .options(selectinload(VersionRow.tags))
                .order_by(VersionRow.created_at.desc(), VersionRow.id.desc())
            )
            if flavor is not None:
                query = query.where(VersionRow.flavor == flavor)
            if status is not None:
                query = query.where(VersionRow.status == status)
            out: list[ModelVersion] = []
            for row, model in session.execute(query):
                if not matches(model.name):
                    continue
                if wanted and any({t.key: t.value for t in row.tags}.get(k) != v for k, v in wanted.items()):
                    continue
                record = self._to_record(session, row, model)
                if alias is not None and alias not in record.aliases:
                    continue
                out.append(record)
                if len(out) >= max_results:
                    break
            return out

    def set_risk_tier(self, name: str, risk_tier: str, *, reason: str) -> None:
        """Move a model to another risk tier (admin): it changes which gates all its versions meet."""
        if risk_tier not in RISK_TIERS:
            raise InvalidInputError(f"invalid risk tier {risk_tier[:20]!r}: choose one of {', '.join(RISK_TIERS)}")
        if not reason or not reason.strip():
            raise InvalidInputError("changing a risk tier needs a reason (--reason)")
        with self.mutation(Permission.MANAGE_POLICY, name) as (session, actor):
            model = self.model_row(session, name)
            before = model.risk_tier
            if before == risk_tier:
                raise ConflictError(f"model {name!r} is already in risk tier {risk_tier}")
            model.risk_tier = risk_tier
            model.updated_at = utcnow()
            self.record_event(
                session,
                actor,
                "model.set_tier",
                name,
                before={"risk_tier": before},
                after={"risk_tier": risk_tier},
                reason=reason.strip(),
            )

    # -- governance facts --------------------------------------------------------------------------

    def policy_in_force(self, session: Session) -> Policy:
        """The newest policy, checked against the audit log; so is the absence of a newer one
        (deleting the newest policy row in SQL would bring back the one before it)."""
        row = session.scalars(select(PolicyRow).order_by(PolicyRow.id.desc()).limit(1)).one_or_none()
        check_rows(session, [row])
        table = PolicyRow.__table__
        newest = row.id if row is not None else 0
        check_gone(session, table, [key for key in recorded_keys(session, table) if int(key) > newest])
        return Policy.parse(row.document if row is not None else DEFAULT_POLICY)

    def facts(self, session: Session, model: ModelRow, row: VersionRow) -> VersionFacts:
        """What the gates look at, with each recorded run judged again under the tier in force;
        every evidence, decision and exception row is checked against the audit log first."""
        from scoregate.governance.evidence import judge

        evidence_rows = session.scalars(
            select(EvidenceRow).where(EvidenceRow.version_id == row.id).order_by(EvidenceRow.id)
        ).all()
        decisions = session.scalars(select(DecisionRow).where(DecisionRow.version_id == row.id)).all()
        exceptions = session.scalars(select(PolicyExceptionRow).where(PolicyExceptionRow.version_id == row.id)).all()
        check_rows(session, [model, row, *evidence_rows, *decisions, *exceptions])
        tier = self.policy_in_force(session).tier(model.risk_tier)
        schema = contract_schema(row)
        evidence = []
        for e in evidence_rows:
            problems: list[str] = []
            if e.origin == "run":
                try:
                    document = orjson.loads(self.artifacts.read_bytes(e.digest))
                except (ScoregateError, orjson.JSONDecodeError) as exc:
                    problems = [f"its recorded document cannot be read: {getattr(exc, 'message', exc)}"]
                else:
                    problems = judge(
                        e.kind,
                        document if isinstance(document, dict) else {},
                        tier=tier,
                        schema=schema,
                        artifact_digest=row.artifact_digest,
                        has_reference=row.reference_digest is not None,
                        version_budget_ms=row.latency_budget_ms,
                    )
            evidence.append(
                EvidenceFact(
                    id=e.id,
                    kind=e.kind,
                    origin=e.origin,
                    bound_digest=e.bound_digest,
                    schema_digest=e.schema_digest,
                    author=e.author,
                    created_at=_aware(e.created_at),
                    problems=tuple(problems),
                    accepted_by=e.accepted_by,
                )
            )
        validated = [_aware(d.at) for d in decisions if d.action == "validate"]
        now = utcnow()
        waived = frozenset(e.rule for e in exceptions if _aware(e.expires_at) > now)
        return VersionFacts(
            ref=f"{model.name}@{row.version}",
            artifact_digest=row.artifact_digest,
            registrant=row.created_by,
            schema_digest=schema.contract_digest(),
            evidence=evidence,
            approvers=[d.actor for d in decisions if d.action == "approve"],
            last_validated=max(validated) if validated else None,
            waived_rules=waived,
        )

    def decide(
        self,
        session: Session,
        actor: Principal,
        row: VersionRow,
        action: str,
        to_status: str,
        reason: str | None,
        evidence: list[int] | None = None,
    ) -> None:
        """Record one lifecycle move of a version (status change with who, when, why, evidence)."""
        session.add(
            DecisionRow(
                version_id=row.id,
                action=action,
                from_status=row.status,
                to_status=to_status,
                actor=actor.name,
                reason=reason,
                evidence=evidence or [],
                at=utcnow(),
            )
        )
        row.status = to_status

    # -- conversion ------------------------------------------------------------------------------

    def _to_record(self, session: Session, row: VersionRow, model: ModelRow) -> ModelVersion:
        aliases = session.scalars(select(AliasRow.alias).where(AliasRow.version_id == row.id)).all()
        schema = contract_schema(row)
        return ModelVersion(
            name=model.name,
            version=row.version,
            flavor=row.flavor,
            status=row.status,
            description=row.description,
            created_by=row.created_by,
            created_at=_aware(row.created_at),
            retired_at=_aware(row.retired_at) if row.retired_at else None,
            retire_reason=row.retire_reason,
            artifact_digest=row.artifact_digest,
            artifact_size=row.artifact_size,
            artifact_kind=row.artifact_kind,
            artifact_name=row.artifact_name,
            input_schema=schema,
            output_schema=schema.outputs,
            metrics=row.metrics,
            params=row.params,
            tags={t.key: t.value for t in row.tags},
            aliases=sorted(aliases),
            latency_budget_ms=row.latency_budget_ms,
            training_data_uri=row.training_data_uri,
            training_data_digest=row.training_data_digest,
            training_rows=row.training_rows,
            training_schema_digest=row.training_schema_digest,
            reference_digest=row.reference_digest,
            reference_rows=row.reference_rows,
            code_version=row.code_version,
            code_dirty=row.code_dirty,
            parent_version=row.parent_version,
            environment=row.environment,
        )


def contract_schema(row: VersionRow) -> ModelSchema:
    """The version's whole contract: its input features and the outputs it promises."""
    return ModelSchema.model_validate({**row.input_schema, "outputs": row.output_schema})


def contract_digest(row: VersionRow) -> str:
    """The digest evidence is bound to besides the artifact: the same artifact registered
    again with another contract (looser ranges, nullable features) is another version."""
    return contract_schema(row).contract_digest()


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _check_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    checked = {}
    for key, value in metrics.items():
        if not isinstance(key, str) or not key:
            raise InvalidInputError(f"invalid metric name {key!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InvalidInputError(f"metric {key!r}: {value!r} is not a number") from None
        checked[key] = finite(f"metric {key!r}", number)
    return checked


def _current_user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


#: The longest description a model or a version keeps.
MAX_DESCRIPTION = 10_000


def _glob(pattern: str | None) -> Any:
    """A name filter: None matches everything; ``*`` and ``?`` are wildcards, case-sensitive."""
    if pattern is None:
        return lambda name: True
    import fnmatch

    return lambda name: fnmatch.fnmatchcase(name, pattern)

"""Reads the pages need that no service offers yet: a page of audit events by keyset, and the
aliases a model has ever had. Read-only, over the same tables the services use."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from scoregate.governance.audit import AuditEvent, _to_event
from scoregate.governance.tables import AliasHistoryRow
from scoregate.registry.tables import AuditEventRow

#: Events on one page of the audit log.
PAGE_SIZE = 50
_EVENTS = AuditEventRow.__table__


@dataclass(frozen=True)
class AuditFilter:
    subject: str | None = None
    actor: str | None = None
    action: str | None = None
    request_id: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def where(self) -> list:  # type: ignore[type-arg]
        c = _EVENTS.c
        clauses = []
        for column, value in (
            (c.subject, self.subject),
            (c.actor, self.actor),
            (c.action, self.action),
            (c.request_id, self.request_id),
        ):
            if value:
                clauses.append(column == value)
        if self.since is not None:
            clauses.append(c.time >= self.since)
        if self.until is not None:
            clauses.append(c.time < self.until)
        return clauses


@dataclass(frozen=True)
class AuditPage:
    events: list[AuditEvent]
    #: The ``before`` cursor of the next (older) page, None on the last page.
    older: int | None
    #: The ``after`` cursor of the previous (newer) page, None on the first page.
    newer: int | None


def audit_page(
    session: Session, where: AuditFilter, *, before: int | None = None, after: int | None = None, size: int = PAGE_SIZE
) -> AuditPage:
    """Newest first. Keyset on ``seq`` (the primary key): each page is one indexed range scan,
    however deep in a log of millions of events it is."""
    c = _EVENTS.c
    query = select(_EVENTS).where(*where.where())
    if after is not None:
        rows = session.execute(query.where(c.seq > after).order_by(c.seq.asc()).limit(size + 1)).all()
        more_newer = len(rows) > size
        rows = list(reversed(rows[:size]))
        events = [_to_event(r) for r in rows]
        older = events[-1].seq if events else None
        has_older = (
            bool(events)
            and session.execute(select(c.seq).where(*where.where(), c.seq < events[-1].seq).limit(1)).first()
            is not None
        )
        return AuditPage(events, older if has_older else None, events[0].seq if more_newer and events else None)
    if before is not None:
        query = query.where(c.seq < before)
    rows = session.execute(query.order_by(c.seq.desc()).limit(size + 1)).all()
    events = [_to_event(r) for r in rows[:size]]
    older = events[-1].seq if len(rows) > size else None
    newer = events[0].seq if before is not None and events else None
    return AuditPage(events, older, newer)


def event(session: Session, seq: int) -> AuditEvent | None:
    row = session.execute(select(_EVENTS).where(_EVENTS.c.seq == seq)).first()
    return _to_event(row) if row is not None else None


def alias_names(session: Session, model_id: int) -> list[str]:
    """Every alias the model has had, current or deleted, from its alias history."""
    return sorted(
        session.scalars(select(AliasHistoryRow.alias).where(AliasHistoryRow.model_id == model_id).distinct()).all()
    )


def audit_page_ascending(
    session: Session, where: AuditFilter, *, after: int | None = None, size: int = 2000
) -> list[AuditEvent]:
    """Oldest first from ``after``: the pages of an export."""
    c = _EVENTS.c
    query = select(_EVENTS).where(*where.where())
    if after is not None:
        query = query.where(c.seq > after)
    return [_to_event(r) for r in session.execute(query.order_by(c.seq.asc()).limit(size))]

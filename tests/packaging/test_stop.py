"""``image stop`` checks the caller's role before touching a container and writes an audit
event, as ``image run`` and ``deploy`` do."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from scoregate.errors import ForbiddenError
from scoregate.governance.service import Governance
from scoregate.packaging.service import _state_path, _write_state, read_state, stop
from scoregate.registry import Registry
from scoregate.registry.tables import AuditEventRow


class RecordingEngine:
    def __init__(self) -> None:
        self.removed: list[str] = []

    def remove(self, container: str) -> None:
        self.removed.append(container)


def test_stop_needs_the_role_and_is_audited(sqlite_settings, credit_files) -> None:  # type: ignore[no-untyped-def]
    admin_token = Governance(Registry(sqlite_settings)).init("admin")
    admin = Registry(sqlite_settings, token=admin_token)
    admin.register("credit-risk", credit_files["model"], flavor="sklearn", train_data=credit_files["train"])
    viewer = Registry(sqlite_settings, token=Governance(admin).add_user("vic", ["viewer"]))
    developer = Registry(sqlite_settings, token=Governance(admin).add_user("dave", ["developer"]))
    state = {"ref": "credit-risk@1", "container": "sg-credit-risk-1", "port": 8080, "image": "img", "previous": None}
    _write_state(_state_path(admin, "credit-risk"), state)
    engine = RecordingEngine()

    with pytest.raises(ForbiddenError, match=r"vic \(roles: viewer\) may not move alias"):
        stop(viewer, "credit-risk", engine=engine)  # type: ignore[arg-type]
    assert engine.removed == [] and read_state(admin, "credit-risk") == state

    _write_state(_state_path(admin, "credit-risk"), {**state, "previous": "credit-risk@0"})  # deployed
    with pytest.raises(ForbiddenError, match="may not move protected alias"):
        stop(developer, "credit-risk", engine=engine)  # type: ignore[arg-type]
    assert engine.removed == []

    assert stop(admin, "credit-risk", engine=engine)["ref"] == "credit-risk@1"  # type: ignore[arg-type,index]
    assert engine.removed == ["sg-credit-risk-1"] and read_state(admin, "credit-risk") is None
    with admin.reading() as session:
        event = session.scalars(select(AuditEventRow).where(AuditEventRow.action == "image.stop")).one()
    assert (event.actor, event.subject) == ("admin", "credit-risk@1")

"""Anchors: signed checkpoints kept outside the database catch what the chain alone cannot,
a chain rewritten or cut short consistently by the database's owner."""

from __future__ import annotations

import json
import re
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session

from scoregate.config import Settings
from scoregate.errors import InvalidInputError
from scoregate.governance import checkpoint
from scoregate.governance.audit import GENESIS, canonical_event, canonical_json, event_hash, iter_events, verify
from scoregate.registry import Registry
from tests.governance.test_lifecycle import register

SECRET_ENV = "TEST_ANCHOR_SECRET"


def one_line(err: str) -> str:
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    return " ".join(err.split())


def events(registry: Registry, count: int) -> None:
    """``count`` audited changes that write no rows (as ``image deploy`` records one)."""
    for i in range(count):
        with registry.mutation(None, "test") as (session, actor):
            registry.record_event(session, actor, "test.step", f"test:{i}")


@pytest.fixture
def registry(db_settings: Settings, credit_files) -> Registry:  # type: ignore[no-untyped-def]
    registry = Registry(db_settings)
    register(registry, credit_files, tier="low")
    registry.set_alias("credit-risk", "production", 1)
    return registry


@pytest.fixture
def keys(run, tmp_path: Path) -> tuple[Path, Path]:
    code, _, err = run("audit", "keygen", "-o", tmp_path / "keys")
    assert code == 0, err
    return tmp_path / "keys" / "audit-anchor.key", tmp_path / "keys" / "audit-anchor.pub"


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> str:
    value = "an-hmac-secret-of-32-characters!"
    monkeypatch.setenv(SECRET_ENV, value)
    return value


def anchor(run, private: Path, path: Path) -> dict:  # type: ignore[no-untyped-def]
    code, _, err = run("audit", "anchor", "--key", private, "-o", path)
    assert code == 0, err
    return json.loads(path.read_text())


# -- what the database's owner can do ------------------------------------------------------------


def _triggers(connection: Connection) -> dict[str, str]:
    if connection.dialect.name == "postgresql":
        return {}
    return dict(connection.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")).all())


def _off(connection: Connection, saved: dict[str, str]) -> None:
    if connection.dialect.name == "postgresql":
        for table in ("audit_events", "audit_keys"):
            connection.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
    for name in saved:
        connection.execute(text(f"DROP TRIGGER {name}"))


def _on(connection: Connection, saved: dict[str, str]) -> None:
    if connection.dialect.name == "postgresql":
        for table in ("audit_events", "audit_keys"):
            connection.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))
    for sql in saved.values():
        connection.execute(text(sql))


def rewrite_chain(engine: Engine, seq: int, **changes: str) -> None:
    """Change event ``seq`` and recompute its hash and every later one's, each linking to the
    one before, move the head along and put the triggers back: nothing inside shows it."""
    with Session(engine) as session:
        log = list(iter_events(session))
    prev = log[seq - 2].hash if seq > 1 else GENESIS
    with engine.begin() as connection:
        saved = _triggers(connection)
        _off(connection, saved)
        for event in log[seq - 1 :]:
            fields = {**event.to_dict(), **(changes if event.seq == seq else {})}
            line = canonical_event(
                event.seq,
                fields["time"],
                fields["actor"],
                fields["action"],
                fields["subject"],
                None if event.before is None else canonical_json(event.before),
                None if event.after is None else canonical_json(event.after),
                fields["reason"],
                fields["request_id"],
                prev,
                None,
                None if event.state is None else canonical_json(event.state),
            )
            digest = event_hash(line)
            connection.execute(
                text("UPDATE audit_events SET actor = :a, reason = :r, prev_hash = :p, hash = :h WHERE seq = :s"),
                {"a": fields["actor"], "r": fields["reason"], "p": prev, "h": digest, "s": event.seq},
            )
            prev = digest
        connection.execute(text("UPDATE audit_head SET last_hash = :h"), {"h": prev})
        _on(connection, saved)


def truncate_chain(engine: Engine, keep: int) -> None:
    """Delete the events after ``keep`` (they wrote no rows) and move the head back to it."""
    with engine.begin() as connection:
        assert not connection.execute(
            text("SELECT count(*) FROM audit_events WHERE seq > :k AND state IS NOT NULL"), {"k": keep}
        ).scalar()
        saved = _triggers(connection)
        _off(connection, saved)
        connection.execute(text("DELETE FROM audit_events WHERE seq > :k"), {"k": keep})
        last = connection.execute(text("SELECT hash FROM audit_events WHERE seq = :k"), {"k": keep}).scalar_one()
        connection.execute(text("UPDATE audit_head SET last_seq = :k, last_hash = :h"), {"k": keep, "h": last})
        _on(connection, saved)


# -- anchoring and verifying against anchors -----------------------------------------------------


def test_keygen_writes_a_key_pair_and_never_replaces_it(run, tmp_path: Path) -> None:
    code, _, err = run("audit", "keygen", "-o", tmp_path / "new" / "keys")
    assert code == 0, err
    private, public = tmp_path / "new" / "keys" / "audit-anchor.key", tmp_path / "new" / "keys" / "audit-anchor.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert (
        checkpoint.private_key(private.read_bytes(), "k").key_id
        == checkpoint.public_key(public.read_bytes(), "p").key_id
    )
    before = private.read_bytes()
    code, _, err = run("audit", "keygen", "-o", tmp_path / "new" / "keys")
    assert code == 3 and "already exists" in one_line(err) and private.read_bytes() == before


def test_an_anchor_holds_while_the_chain_grows(registry: Registry, keys, run, tmp_path: Path) -> None:
    private, public = keys
    made = anchor(run, private, tmp_path / "a.json")
    head = verify(registry.engine)
    assert (made["seq"], made["hash"]) == (head.checked, head.last_hash)
    assert set(made) == {"seq", "hash", "time", "scheme", "key_id", "signature"} and made["scheme"] == "ed25519"
    assert (tmp_path / "a.json").read_text() == checkpoint.parse(
        (tmp_path / "a.json").read_bytes(), "a"
    ).to_json() + "\n"
    events(registry, 2)
    code, out, err = run("audit", "verify", "--anchor", tmp_path / "a.json", "--public-key", public)
    assert code == 0, err
    assert f"anchor at event {made['seq']}" in out and "holds" in out


def test_a_rewritten_chain_is_caught_only_against_an_anchor(registry: Registry, keys, run, tmp_path: Path) -> None:
    private, public = keys
    made = anchor(run, private, tmp_path / "a.json")
    events(registry, 2)
    with Session(registry.engine) as session:
        moved = next(e.seq for e in iter_events(session) if e.action == "alias.set")
    rewrite_chain(registry.engine, moved, actor="somebody-else", reason="rewritten history")
    code, _, err = run("audit", "verify")
    assert code == 0, err  # consistent: without an anchor, nothing shows
    code, _, err = run("audit", "verify", "--anchor", tmp_path / "a.json", "--public-key", public)
    assert code == 1
    assert re.fullmatch(
        rf"tampered: anchor at event {made['seq']} \(.+\): event {made['seq']} has hash \w+…, the anchor records "
        rf"{made['hash'][:16]}…: the chain was rewritten",
        one_line(err),
    ), err


def test_a_truncated_chain_is_caught_only_against_an_anchor(registry: Registry, keys, run, tmp_path: Path) -> None:
    private, public = keys
    before = verify(registry.engine).checked
    events(registry, 3)
    made = anchor(run, private, tmp_path / "a.json")
    assert made["seq"] == before + 3
    truncate_chain(registry.engine, before + 1)
    assert run("audit", "verify")[0] == 0
    code, _, err = run("audit", "verify", "--anchor", tmp_path / "a.json", "--public-key", public)
    assert code == 1
    assert one_line(err).endswith(f"the chain ends at event {before + 1}: it was truncated"), err


def test_several_anchors_and_hmac_anchors(registry: Registry, keys, run, secret: str, tmp_path: Path) -> None:
    private, public = keys
    first = anchor(run, private, tmp_path / "1.json")
    events(registry, 1)
    code, out, err = run("audit", "anchor", "--hmac-env", SECRET_ENV)
    assert code == 0, err
    second = json.loads(out)
    assert second["scheme"] == "hmac-sha256" and second["seq"] == first["seq"] + 1 and secret not in out + err
    (tmp_path / "2.json").write_text(out)
    args = ["--anchor", tmp_path / "1.json", "--anchor", tmp_path / "2.json", "--public-key", public]
    code, out, err = run("audit", "verify", *args, "--hmac-env", SECRET_ENV)
    assert code == 0 and out.count("holds") == 2, err
    truncate_chain(registry.engine, first["seq"])
    code, _, err = run("audit", "verify", *args, "--hmac-env", SECRET_ENV)
    assert code == 1 and f"anchor at event {second['seq']}" in err and f"anchor at event {first['seq']} " not in err


def test_a_forged_anchor_is_refused_before_the_chain_is_read(
    registry: Registry, keys, run, secret: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private, public = keys
    made = anchor(run, private, tmp_path / "a.json")
    forged = {**made, "hash": "0" * 64}
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    code, _, err = run("audit", "verify", "--anchor", tmp_path / "forged.json", "--public-key", public)
    assert code == 1 and "its signature does not verify" in one_line(err)
    # signed with a key of the forger's own
    code, _, _ = run("audit", "keygen", "-o", tmp_path / "other")
    other = anchor(run, tmp_path / "other" / "audit-anchor.key", tmp_path / "other.json")
    code, _, err = run("audit", "verify", "--anchor", tmp_path / "other.json", "--public-key", public)
    assert code == 1 and f"signed with key {other['key_id']}, not with the key given" in one_line(err)
    (tmp_path / "relabelled.json").write_text(json.dumps({**other, "key_id": made["key_id"]}))
    code, _, err = run("audit", "verify", "--anchor", tmp_path / "relabelled.json", "--public-key", public)
    assert code == 1 and "does not verify" in one_line(err)
    # an HMAC anchor checked with another secret
    code, out, _ = run("audit", "anchor", "--hmac-env", SECRET_ENV)
    (tmp_path / "h.json").write_text(out)
    monkeypatch.setenv(SECRET_ENV, "a-different-secret-of-enough-length")
    code, _, err = run("audit", "verify", "--anchor", tmp_path / "h.json", "--hmac-env", SECRET_ENV)
    assert code == 1 and "not with the key given" in one_line(err)


# -- where anchors are kept ----------------------------------------------------------------------


def test_an_anchor_folder_is_written_once(registry: Registry, keys, run, tmp_path: Path) -> None:
    private, _ = keys
    folder = tmp_path / "anchors"
    folder.mkdir()
    code, _, err = run("audit", "anchor", "--key", private, "--to", folder)
    assert code == 0, err
    (written,) = folder.iterdir()
    seq = json.loads(written.read_text())["seq"]
    assert written.name == f"checkpoint-{seq:012d}.json"
    code, _, err = run("audit", "anchor", "--key", private, "--to", folder)
    assert code == 0 and "already anchors" in err  # nothing new since: the same checkpoint is there
    written.write_text(written.read_text().replace('"hash":"', '"hash":"0'))  # something else under its name
    before = written.read_bytes()
    code, _, err = run("audit", "anchor", "--key", private, "--to", folder)
    assert code == 3 and "never replaced" in one_line(err) and written.read_bytes() == before
    events(registry, 1)
    assert run("audit", "anchor", "--key", private, "--to", folder)[0] == 0
    assert len(list(folder.iterdir())) == 2


@pytest.mark.s3
def test_an_anchor_bucket_is_written_once(registry: Registry, keys, run, s3_endpoint: str, s3_bucket: str) -> None:
    import fsspec

    private, _ = keys
    options = ["--option", f"endpoint_url={s3_endpoint}", "--option", "key=testing", "--option", "secret=testing"]
    destination = f"s3://{s3_bucket}/anchors"
    code, _, err = run("audit", "anchor", "--key", private, "--to", destination, *options)
    assert code == 0, err
    fs = fsspec.filesystem("s3", endpoint_url=s3_endpoint, key="testing", secret="testing")
    (name,) = fs.ls(f"{s3_bucket}/anchors")
    body = json.loads(fs.cat(name))
    assert name.endswith(f"checkpoint-{body['seq']:012d}.json")
    code, _, err = run("audit", "anchor", "--key", private, "--to", destination, *options)
    assert code == 0 and "already anchors" in err
    fs.pipe(name, json.dumps({**body, "hash": "0" * 64}).encode())
    code, _, err = run("audit", "anchor", "--key", private, "--to", destination, *options)
    assert code == 3 and "never replaced" in one_line(err)
    assert json.loads(fs.cat(name))["hash"] == "0" * 64


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (the kernel's backlog does the accepting)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


def test_an_anchor_sent_to_a_webhook(registry: Registry, keys, run, receiver, silent_port: int, tmp_path: Path) -> None:
    private, _ = keys
    code, _, err = run("audit", "anchor", "--key", private, "--to", receiver.url, "-o", tmp_path / "a.json")
    assert code == 0, err
    assert receiver.received[0]["body"].decode() + "\n" == (tmp_path / "a.json").read_text()
    receiver.answers.append(500)
    code, _, err = run("audit", "anchor", "--key", private, "--to", receiver.url)
    assert code == 6 and "answered HTTP 500" in one_line(err)
    code, _, err = run(
        "audit", "anchor", "--key", private, "--to", f"http://127.0.0.1:{silent_port}/", "--timeout", "0.5"
    )
    assert code == 6 and "did not answer within 0.5 s" in one_line(err)


# -- bad input -----------------------------------------------------------------------------------

#: An S3 endpoint nothing listens on: botocore retries with backoff, which --timeout bounds.
UNREACHABLE_S3 = ("--option", "endpoint_url=http://127.0.0.1:1", "--option", "key=x", "--option", "secret=y")


def test_bad_keys_anchors_and_folders_are_refused_in_one_line(
    registry: Registry, keys, run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private, public = keys
    made = anchor(run, private, tmp_path / "a.json")
    garbled = tmp_path / "garbled.key"
    garbled.write_bytes(private.read_bytes().replace(b"\n", b"\n#", 2))
    rsa_key = tmp_path / "rsa.key"
    rsa_key.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    monkeypatch.delenv("SCOREGATE_AUDIT_HMAC_KEY", raising=False)
    cases = [
        (("anchor", "--key", tmp_path / "missing.key"), 3, "does not exist"),
        (("anchor", "--key", garbled), 3, "is not a readable PEM private key"),
        (("anchor", "--key", tmp_path / "a.json"), 3, "is not a PEM private key"),
        (("anchor", "--key", rsa_key), 3, "is a RSA private key; checkpoints are signed with Ed25519"),
        (("anchor", "--key", public), 3, "is not a readable PEM private key"),
        (("anchor",), 3, "environment variable SCOREGATE_AUDIT_HMAC_KEY is not set"),
        (("anchor", "--key", private, "--hmac-env", "X"), 3, "not both"),
        (("anchor", "--key", private, "-o", a_file / "a.json"), 3, "give a new file in an existing folder"),
        (("anchor", "--key", private, "-o", tmp_path / "a.json"), 3, "already exists"),
        (("anchor", "--key", private, "--to", tmp_path / "nowhere"), 3, "does not exist"),
        (("anchor", "--key", private, "--to", tmp_path, "--timeout", "inf"), 3, "invalid --timeout inf"),
        (("anchor", "--key", private, "--to", "s3://b/a", *UNREACHABLE_S3, "--timeout", "2"), 6, "s3://b/a"),
        (("keygen", "-o", a_file / "keys"), 3, "cannot create folder"),
        (("verify", "--public-key", public), 3, "give --anchor FILE as well"),
        (("verify", "--anchor", tmp_path / "a.json"), 3, "give --public-key FILE"),
        (("verify", "--anchor", a_file, "--public-key", public), 3, "is not a checkpoint: not JSON"),
        (("verify", "--anchor", tmp_path / "a.json", "--public-key", rsa_key), 3, "RSA"),
    ]
    if Path("/proc").is_dir():  # a folder nobody may write in, root included
        cases.append((("anchor", "--key", private, "-o", "/proc/anchor.json"), 3, "cannot write /proc/anchor.json"))
    for field, value, rule in [
        ("seq", "3", "seq must be a positive integer"),
        ("seq", 0, "seq must be a positive integer"),
        ("hash", "xyz", "hash must be 64 lowercase hex digits"),
        ("scheme", "rot13", "scheme must be one of ed25519, hmac-sha256"),
        ("time", "yesterday", "time must be ISO 8601"),
        ("extra", 1, "unknown ['extra']"),
    ]:
        path = tmp_path / f"bad-{field}-{value}.json"
        path.write_text(json.dumps({**made, field: value}))
        cases.append((("verify", "--anchor", path, "--public-key", public), 3, rule))
    for args, code, message in cases:
        got, _, err = run("audit", *args)
        assert got == code and message in one_line(err), (args, got, err)


def test_an_anchor_beyond_the_head_is_a_truncated_chain(
    registry: Registry, keys, run, db_settings: Settings, tmp_path: Path
) -> None:
    private, public = keys
    events(registry, 1)
    head = verify(registry.engine)
    far = checkpoint.sign(head.checked + 5, "a" * 64, checkpoint.private_key(private.read_bytes(), "k"))
    (tmp_path / "far.json").write_text(far.to_json())
    code, _, err = run("audit", "verify", "--anchor", tmp_path / "far.json", "--public-key", public)
    assert code == 1 and one_line(err).endswith(f"the chain ends at event {head.checked}: it was truncated")


def test_a_broken_chain_or_an_empty_log_is_not_anchored(db_settings: Settings, keys, run, credit_files) -> None:
    private, _ = keys
    empty = Registry(db_settings)
    code, _, err = run("audit", "anchor", "--key", private)
    assert code == 3 and "nothing to anchor" in one_line(err)
    register(empty, credit_files, tier="low")
    with empty.engine.begin() as connection:
        connection.execute(text("UPDATE models SET owner = 'mallory'"))
    code, _, err = run("audit", "anchor", "--key", private)
    assert code == 5 and "does not verify, so it is not anchored: models row credit-risk" in one_line(err)


def test_checkpoints_are_pure_values() -> None:
    key = checkpoint.hmac_key("x" * 32, "test")
    made = checkpoint.sign(7, "ab" * 32, key)
    assert checkpoint.parse(made.to_json().encode(), "t") == made
    assert checkpoint.signature_problem(made, key) is None
    assert checkpoint.signature_problem(
        checkpoint.parse(made.to_json().replace('"seq":7', '"seq":8').encode(), "t"), key
    )
    with pytest.raises(InvalidInputError, match="at least 16 characters"):
        checkpoint.hmac_key("short", "test")
    with pytest.raises(InvalidInputError, match="nothing to anchor"):
        checkpoint.sign(0, GENESIS, key)

"""Signed checkpoints of the audit chain: an event's seq and hash, signed with a key that
is never stored in the database, so a chain rewritten or cut short by the database's
owner no longer matches. Pure functions over bytes; ``anchors`` reads key files and
writes checkpoints out of the database's reach.

A checkpoint is the canonical JSON of ``{hash, key_id, scheme, seq, signature, time}``;
the signature covers the canonical JSON of the five other fields. Schemes: Ed25519
(``cryptography``; anyone with the public key can check it, only the private key's
holder can sign) and HMAC-SHA256 with a shared secret (whoever checks can also sign).
``key_id`` names the key (a digest, never the key itself) so the wrong key is named as such.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from scoregate.errors import InvalidInputError
from scoregate.governance.audit_state import iso_time

#: Shortest HMAC secret accepted: a guessable secret would let anyone sign a checkpoint.
MIN_SECRET = 16
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FIELDS = frozenset({"hash", "key_id", "scheme", "seq", "signature", "time"})


class Scheme(StrEnum):
    ED25519 = "ed25519"
    HMAC_SHA256 = "hmac-sha256"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Event ``seq`` of the chain had hash ``hash`` at ``time``, says the holder of ``key_id``."""

    seq: int
    hash: str
    time: str
    scheme: Scheme
    key_id: str
    signature: str

    def signed_bytes(self) -> bytes:
        return _canonical(
            {"hash": self.hash, "key_id": self.key_id, "scheme": self.scheme.value, "seq": self.seq, "time": self.time}
        )

    def to_json(self) -> str:
        body = orjson.loads(self.signed_bytes())
        return _canonical({**body, "signature": self.signature}).decode()


@dataclass(frozen=True, slots=True)
class AnchorKey:
    """A key that signs checkpoints or checks their signature; ``source`` says where it came from."""

    scheme: Scheme
    key_id: str
    source: str
    private: Ed25519PrivateKey | None = None
    public: Ed25519PublicKey | None = None
    secret: bytes | None = None

    @property
    def can_sign(self) -> bool:
        return self.private is not None or self.secret is not None

    def sign(self, payload: bytes) -> str:
        if self.secret is not None:
            return hmac.new(self.secret, payload, hashlib.sha256).hexdigest()
        if self.private is None:
            raise InvalidInputError(f"{self.source} is a public key: signing needs the private key")
        return base64.b64encode(self.private.sign(payload)).decode()

    def verifies(self, payload: bytes, signature: str) -> bool:
        if self.secret is not None:
            return hmac.compare_digest(self.sign(payload), signature)
        assert self.public is not None
        try:
            self.public.verify(base64.b64decode(signature, validate=True), payload)
        except (InvalidSignature, ValueError):
            return False
        return True


# -- keys ----------------------------------------------------------------------------------------


def generate_keypair() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair: (private key PEM, PKCS #8 unencrypted; public key PEM)."""
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def private_key(pem: bytes, source: str) -> AnchorKey:
    """An Ed25519 private key from PEM (``audit keygen`` writes one); refuses anything else."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise InvalidInputError(f"{source} is an encrypted private key: give an unencrypted one") from None
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidInputError(_not_a_key(pem, source, "private")) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidInputError(f"{source} is a {_kind(key)} private key; checkpoints are signed with Ed25519")
    return AnchorKey(Scheme.ED25519, _ed25519_id(key.public_key()), source, private=key, public=key.public_key())


def public_key(pem: bytes, source: str) -> AnchorKey:
    """An Ed25519 public key from PEM (a private key is accepted too: it holds the public one)."""
    if b"PRIVATE KEY" in pem:
        found = private_key(pem, source)
        return AnchorKey(Scheme.ED25519, found.key_id, source, public=found.public)
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidInputError(_not_a_key(pem, source, "public")) from None
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidInputError(f"{source} is a {_kind(key)} public key; checkpoints are signed with Ed25519")
    return AnchorKey(Scheme.ED25519, _ed25519_id(key), source, public=key)


def hmac_key(secret: str, source: str) -> AnchorKey:
    if len(secret) < MIN_SECRET:
        raise InvalidInputError(
            f"{source} must hold a secret of at least {MIN_SECRET} characters (e.g. from `openssl rand -hex 32`)"
        )
    raw = secret.encode()
    key_id = "hmac:" + hmac.new(raw, b"scoregate audit checkpoint key id", hashlib.sha256).hexdigest()[:16]
    return AnchorKey(Scheme.HMAC_SHA256, key_id, source, secret=raw)


def _ed25519_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def _kind(key: Any) -> str:
    return type(key).__name__.removeprefix("_").replace("PrivateKey", "").replace("PublicKey", "") or "non-Ed25519"


def _not_a_key(pem: bytes, source: str, kind: str) -> str:
    if b"-----BEGIN" not in pem:
        return f"{source} is not a PEM {kind} key (expected a file from `scoregate audit keygen`)"
    return f"{source} is not a readable PEM {kind} key: it is damaged or of a kind scoregate does not use"


# -- checkpoints ---------------------------------------------------------------------------------


def sign(seq: int, hash_: str, key: AnchorKey, *, now: dt.datetime | None = None) -> Checkpoint:
    """A checkpoint of event ``seq`` with hash ``hash_``, signed with ``key``."""
    if seq < 1:
        raise InvalidInputError("the audit log is empty: there is nothing to anchor yet")
    unsigned = Checkpoint(seq, hash_, iso_time(now or dt.datetime.now(dt.UTC)), key.scheme, key.key_id, "")
    return Checkpoint(seq, hash_, unsigned.time, key.scheme, key.key_id, key.sign(unsigned.signed_bytes()))


def parse(data: bytes, source: str) -> Checkpoint:
    """A checkpoint from its JSON; one line naming the field and the rule when it is not one."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise InvalidInputError(f"{source} is not a checkpoint: not JSON") from None
    if not isinstance(body, dict):
        raise InvalidInputError(f"{source} is not a checkpoint: expected a JSON object")
    if set(body) != _FIELDS:
        missing, extra = sorted(_FIELDS - set(body)), sorted(set(body) - _FIELDS)
        detail = "; ".join(
            p for p in (f"missing {missing}" if missing else "", f"unknown {extra}" if extra else "") if p
        )
        raise InvalidInputError(f"{source} is not a checkpoint: {detail}")
    seq, digest, time, scheme = body["seq"], body["hash"], body["time"], body["scheme"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise InvalidInputError(f"{source}: seq must be a positive integer, not {seq!r}")
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise InvalidInputError(f"{source}: hash must be 64 lowercase hex digits")
    if scheme not in {s.value for s in Scheme}:
        raise InvalidInputError(f"{source}: scheme must be one of {', '.join(s.value for s in Scheme)}, not {scheme!r}")
    for name in ("time", "key_id", "signature"):
        if not isinstance(body[name], str) or not body[name] or len(body[name]) > 512:
            raise InvalidInputError(f"{source}: {name} must be non-empty text")
    try:
        dt.datetime.fromisoformat(time)
    except ValueError:
        raise InvalidInputError(f"{source}: time must be ISO 8601, not {time!r}") from None
    return Checkpoint(seq, digest, time, Scheme(scheme), body["key_id"], body["signature"])


def signature_problem(checkpoint: Checkpoint, key: AnchorKey) -> str | None:
    """Why ``key`` does not vouch for ``checkpoint`` (None: it does)."""
    if checkpoint.scheme != key.scheme:
        return f"it is signed with {checkpoint.scheme.value}, but the key given ({key.source}) is {key.scheme.value}"
    if checkpoint.key_id != key.key_id:
        return f"it was signed with key {checkpoint.key_id}, not with the key given ({key.source}, {key.key_id})"
    if not key.verifies(checkpoint.signed_bytes(), checkpoint.signature):
        return "its signature does not verify: the checkpoint was altered after it was signed"
    return None


def _canonical(value: dict[str, Any]) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)

"""A node's seal-key store under ``keys/<node>/``.

Layout (directory 0700, every file 0600, all ignored by git)::

    keys/<node>/keyring.json        key metadata: kid, alg, state, times (no secrets)
    keys/<node>/<kid>.pem           PKCS#8 private key, encrypted when a passphrase is set
                                    (Ed25519 and P-256 through pyca/cryptography, SM2 through
                                    Tongsuo: see :mod:`gateway.crypto.sm2`)
    keys/_federation/holder.secret  the HMAC key for holder-id digests, shared by every node
                                    and the IdP, so a holder's digest is the same everywhere

On first start the store generates one ``active`` key. Private keys are never logged,
never returned by any API and never leave this module except wrapped in a signer.
Writes are atomic (write to a temporary file, fsync, rename) so a crash never leaves a
half-written key.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway._internal.files import (
    PrivateKey,
    atomic_write,
    check_mode,
    ensure_private_dir,
    write_private,
)
from gateway._internal.secret import Secret
from gateway.clock import Clock
from gateway.crypto.jwks import (
    Alg,
    Ed25519Name,
    JwsAlg,
    KeyState,
    StaticKeyResolver,
    VerificationKey,
    alg_for,
    public_jwk,
    thumbprint,
)
from gateway.crypto.seals import PrivateKeySigner
from gateway.crypto.sm2 import Sm2PrivateKey
from gateway.errors import KeyStoreError, NotFoundError
from gateway.ids import KeyId, NodeId

_KEYRING = "keyring.json"
FEDERATION_DIR = "_federation"
_HOLDER_SECRET = "holder.secret"  # noqa: S105 - a file name, not a secret
_DAY = 86_400.0

SealPrivateKey = PrivateKey | Sm2PrivateKey


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What the store knows about one key, private material aside."""

    kid: KeyId
    alg: Alg
    state: KeyState
    created: float
    not_before: float
    not_after: float
    retired_at: float | None = None
    revoked_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kid": self.kid,
            "alg": self.alg,
            "state": self.state.value,
            "created": int(self.created),
            "not_before": int(self.not_before),
            "not_after": int(self.not_after),
        }
        if self.retired_at is not None:
            out["retired_at"] = int(self.retired_at)
        if self.revoked_at is not None:
            out["revoked_at"] = int(self.revoked_at)
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> KeyRecord:
        try:
            return cls(
                kid=KeyId(str(obj["kid"])),
                alg=_alg(obj["alg"]),
                state=KeyState(obj["state"]),
                created=float(obj["created"]),
                not_before=float(obj["not_before"]),
                not_after=float(obj["not_after"]),
                retired_at=float(obj["retired_at"]) if "retired_at" in obj else None,
                revoked_at=float(obj["revoked_at"]) if "revoked_at" in obj else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyStoreError(f"keyring entry is malformed: {exc!r}") from exc


def _alg(value: object) -> Alg:
    if value == "EdDSA":
        return "EdDSA"
    if value == "ES256":
        return "ES256"
    if value == "SM2":
        return "SM2"
    raise KeyStoreError(f"unsupported key algorithm {value!r}")


def generate_private_key(alg: Alg) -> PrivateKey:
    """A new Ed25519 or P-256 key (pyca/cryptography's types; SM2: :func:`generate_seal_key`)."""
    if alg == "EdDSA":
        return Ed25519PrivateKey.generate()
    if alg == "SM2":
        raise KeyStoreError("an SM2 key is not a pyca/cryptography key", code="keys.bad_alg")
    return ec.generate_private_key(ec.SECP256R1())


def generate_seal_key(alg: Alg) -> SealPrivateKey:
    """A new seal key of any supported algorithm."""
    return Sm2PrivateKey.generate() if alg == "SM2" else generate_private_key(alg)


class KeyStore:
    """The seal keys of one node. Construct with :meth:`open`."""

    def __init__(
        self,
        directory: Path,
        node: NodeId,
        *,
        clock: Clock,
        passphrase: Secret | None,
        records: list[KeyRecord],
        private: dict[KeyId, SealPrivateKey],
        holder_secret: bytes,
        default_alg: Alg,
        validity_days: int,
        ed25519_name: Ed25519Name = "EdDSA",
    ) -> None:
        self.directory = directory
        self.node = node
        self._clock = clock
        self._passphrase = passphrase
        self._records = records
        self._private = private
        self._signers: dict[KeyId, PrivateKeySigner] = {}
        """Signers made so far, by kid (a kid's private key never changes)."""
        self._holder_secret = holder_secret
        self._default_alg = default_alg
        self._ed25519_name: Ed25519Name = ed25519_name
        self._validity = validity_days * _DAY
        self._resolver: StaticKeyResolver | None = None

    def __repr__(self) -> str:
        return f"KeyStore(node={self.node!r}, keys={len(self._records)})"

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        root: Path,
        node: NodeId,
        *,
        clock: Clock,
        passphrase: Secret | None = None,
        default_alg: Alg = "EdDSA",
        validity_days: int = 365,
        ed25519_name: Ed25519Name = "EdDSA",
    ) -> KeyStore:
        """Load ``root/<node>/``, generating the first active key and secrets if absent.

        ``ed25519_name`` is the JWS name (``EdDSA`` or RFC 9864's ``Ed25519``) that the
        node's Ed25519 keys are published under and their signatures carry."""
        directory = root / node
        ensure_private_dir(directory)
        holder_secret = federation_holder_secret(root)
        keyring = directory / _KEYRING
        records: list[KeyRecord] = []
        if keyring.exists():
            try:
                raw = orjson.loads(keyring.read_bytes())
            except (OSError, orjson.JSONDecodeError) as exc:
                raise KeyStoreError(f"{keyring}: unreadable keyring") from exc
            if not isinstance(raw, dict) or not isinstance(raw.get("keys"), list):
                raise KeyStoreError(f"{keyring}: keyring must be an object with a 'keys' list")
            records = [KeyRecord.from_json(item) for item in raw["keys"]]
        private = {r.kid: _load_private(directory, r, passphrase) for r in records}
        store = cls(
            directory,
            node,
            clock=clock,
            passphrase=passphrase,
            records=records,
            private=private,
            holder_secret=holder_secret,
            default_alg=default_alg,
            validity_days=validity_days,
            ed25519_name=ed25519_name,
        )
        if not any(r.state is KeyState.ACTIVE for r in records):
            store.add_key(state=KeyState.ACTIVE)
        return store

    # -- reading ---------------------------------------------------------------------------

    @property
    def holder_secret(self) -> bytes:
        return self._holder_secret

    def records(self) -> list[KeyRecord]:
        return list(self._records)

    def record(self, kid: str) -> KeyRecord:
        for record in self._records:
            if record.kid == kid:
                return record
        raise NotFoundError(f"no key {kid!r} at node {self.node}", code="keys.not_found")

    def active(self) -> KeyRecord:
        candidates = [r for r in self._records if r.state is KeyState.ACTIVE]
        if not candidates:  # pragma: no cover - open() guarantees one
            raise KeyStoreError(f"node {self.node} has no active seal key")
        return max(candidates, key=lambda r: r.not_before)

    def signer(self) -> PrivateKeySigner:
        """A signer for the active key."""
        record = self.active()
        signer = self._signers.get(record.kid)
        if signer is None:
            signer = PrivateKeySigner(
                self._private[record.kid], kid=record.kid, ed25519_name=self._ed25519_name
            )
            self._signers[record.kid] = signer
        return signer

    def current_signer(self) -> ActiveKeySigner:
        """A signer that always signs with whatever key is active now (survives rotation)."""
        return ActiveKeySigner(self)

    def verification_key(self, record: KeyRecord) -> VerificationKey:
        return VerificationKey(
            node=self.node,
            kid=record.kid,
            alg=record.alg,
            public_key=self._private[record.kid].public_key(),
            state=record.state,
            not_before=record.not_before,
            not_after=record.not_after,
            revoked_at=record.revoked_at,
            verify_allowed=True,
            published_alg="Ed25519"
            if record.alg == "EdDSA" and self._ed25519_name == "Ed25519"
            else None,
        )

    def verification_keys(self) -> dict[KeyId, VerificationKey]:
        return {r.kid: self.verification_key(r) for r in self._records}

    def key_for(self, kid: KeyId) -> VerificationKey:
        """:class:`gateway.crypto.jwks.KeyResolver` over this node's own keys (cached until a
        change)."""
        if self._resolver is None:
            self._resolver = StaticKeyResolver(self.verification_keys())
        return self._resolver.key_for(kid)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(self.verification_key(r)) for r in self._records]}

    # -- key states ------------------------------------------------------------------------

    def add_key(self, *, state: KeyState, alg: Alg | None = None) -> KeyRecord:
        """Generate a key, write it (0600, encrypted if a passphrase is set), record it."""
        alg = alg or self._default_alg
        private = generate_seal_key(alg)
        if alg_for(private.public_key()) != alg:  # pragma: no cover - generator guarantees it
            raise KeyStoreError("generated key does not match its algorithm")
        kid = thumbprint(private.public_key())
        now = float(int(self._clock.now()))  # whole seconds, as published and as in sigT
        record = KeyRecord(
            kid=kid,
            alg=alg,
            state=state,
            created=now,
            not_before=now,
            not_after=now + self._validity,
        )
        if isinstance(private, Sm2PrivateKey):
            password = self._passphrase.reveal().encode("utf-8") if self._passphrase else None
            atomic_write(self.directory / f"{kid}.pem", private.to_pem(password))
        else:
            write_private(self.directory / f"{kid}.pem", private, self._passphrase)
        self._private[kid] = private
        self._records.append(record)
        self._save()
        return record

    def set_state(self, kid: str, state: KeyState, *, at: float | None = None) -> KeyRecord:
        """Move a key to a new state (used by rotation and revocation)."""
        record = self.record(kid)
        at = self._clock.now() if at is None else at
        changes: dict[str, Any] = {"state": state}
        if state is KeyState.RETIRED:
            changes["retired_at"] = at
        elif state is KeyState.REVOKED:
            changes["revoked_at"] = at
        elif state is KeyState.ACTIVE:
            changes["not_before"] = min(record.not_before, at)
        updated = replace(record, **changes)
        self._records = [updated if r.kid == kid else r for r in self._records]
        self._save()
        return updated

    def _save(self) -> None:
        self._resolver = None
        body = orjson.dumps(
            {"node": self.node, "keys": [r.to_json() for r in self._records]},
            option=orjson.OPT_INDENT_2,
        )
        atomic_write(self.directory / _KEYRING, body)


class ActiveKeySigner:
    """:class:`gateway.crypto.seals.Signer` over a key store's active key, looked up at each use."""

    def __init__(self, store: KeyStore) -> None:
        self._store = store

    @property
    def kid(self) -> KeyId:
        return self._store.active().kid

    @property
    def alg(self) -> Alg:
        return self._store.active().alg

    @property
    def jws_alg(self) -> JwsAlg:
        return self._store.signer().jws_alg

    def sign(self, data: bytes) -> bytes:
        return self._store.signer().sign(data)


# -- files -------------------------------------------------------------------------------------


def federation_holder_secret(root: Path) -> bytes:
    """The federation-wide holder-digest key under ``root/_federation/`` (created on first use).

    Node ids start with a letter, so ``_federation`` never collides with a node's directory.
    In a real deployment it is distributed to every node out of band, like the root key.
    """
    directory = root / FEDERATION_DIR
    ensure_private_dir(directory)
    return _read_or_create_secret(directory / _HOLDER_SECRET)


def _read_or_create_secret(path: Path) -> bytes:
    if not path.exists():
        data = secrets.token_bytes(32)
        try:
            atomic_write(path, data, replace=False)
        except FileExistsError:
            pass  # another process started at the same moment and made it first: use theirs
        else:
            return data
    check_mode(path)
    data = path.read_bytes()
    if len(data) != 32:
        raise KeyStoreError(f"{path}: holder secret must be 32 bytes")
    return data


def _load_private(directory: Path, record: KeyRecord, passphrase: Secret | None) -> SealPrivateKey:
    kid = record.kid
    path = directory / f"{kid}.pem"
    try:
        check_mode(path)
        pem = path.read_bytes()
    except FileNotFoundError as exc:
        raise KeyStoreError(f"{path}: private key listed in the keyring is missing") from exc
    password = passphrase.reveal().encode("utf-8") if passphrase is not None else None
    key: object
    try:
        if record.alg == "SM2":
            key = Sm2PrivateKey.from_pem(pem, password)
        else:
            key = serialization.load_pem_private_key(pem, password=password)
    except TypeError as exc:
        raise KeyStoreError(
            f"{path}: the key is encrypted and no passphrase is configured "
            "(set TONGBAN_KEY_PASSPHRASE)"
            if password is None
            else f"{path}: a passphrase is configured but the key is not encrypted"
        ) from exc
    except ValueError as exc:
        raise KeyStoreError(f"{path}: cannot load the key (wrong passphrase?)") from exc
    except UnsupportedAlgorithm as exc:  # an SM2 key recorded as another algorithm
        raise KeyStoreError(f"{path}: the key is not of its recorded algorithm") from exc
    if not isinstance(key, Ed25519PrivateKey | ec.EllipticCurvePrivateKey | Sm2PrivateKey):
        raise KeyStoreError(f"{path}: unsupported key type")
    if thumbprint(key.public_key()) != kid or alg_for(key.public_key()) != record.alg:
        raise KeyStoreError(f"{path}: key does not match its kid and algorithm")
    return key


def iter_key_files(directory: Path) -> Iterator[Path]:
    """Every file holding a node's private keys, for permission audits and tests."""
    yield from sorted(directory.glob("*.pem"))

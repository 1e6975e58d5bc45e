"""The trust-list authority: ``national`` records every node's seal keys and signs the list.

:class:`TrustAuthority` is a synchronous core. It keeps, for every node, each seal key it has
ever seen with that key's status history, and publishes signed trust lists
(:func:`gateway.trust.trust_list.build_trust_list` +
:func:`gateway.trust.trust_list.sign_trust_list`) with a sequence number that only grows.
Its state (``seq``, the current token, the keys and their histories) is a JSON document
saved after every change, so a restart neither forgets a key's history nor reuses a ``seq``:
a file written atomically (0600) when one process serves ``national``, or, when ``national``
runs as replicas, an :class:`~gateway.storage.authority_state.AuthorityStore` in its database
whose lease makes one replica at a time the author (:meth:`TrustAuthority.lead`); the others
follow the stored state (:meth:`TrustAuthority.reload`) and serve the author's list.

History rules (:meth:`TrustAuthority.observe`):

- a kid seen for the first time enters with its published status, since its ``nbf`` (or
  now); a key first seen ``revoked`` enters at its ``revoked_at``;
- a status change appends the new status, since now (``revoked_at`` for a revocation);
  entries never go back in time, and nothing follows a revocation;
- a key missing from a later JWKS is kept exactly as it was: once listed, never dropped.

Enrolment: in this simulation ``national`` enrols node keys by fetching each node's JWKS
over HTTP (:func:`collect`), trust on first use over loopback. A real deployment enrols keys
out of band, and key changes arrive as signed key-change requests (a later issue).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from gateway._internal.files import atomic_write
from gateway._internal.wire import is_int, loads
from gateway.clock import Clock
from gateway.config import Federation
from gateway.crypto.jwks import KeyState, VerificationKey, parse_jwk, parse_jwks, public_jwk
from gateway.errors import (
    ConfigError,
    ConflictError,
    Forbidden,
    GatewayError,
    InputError,
    NotFoundError,
    SealError,
    StorageError,
)
from gateway.ids import KeyId, NodeId
from gateway.storage.authority_state import AuthorityStore
from gateway.trust.rootkey import RootKey
from gateway.trust.trust_list import (
    DEFAULT_VALIDITY,
    MAX_HISTORY,
    REFRESH_MARGIN,
    KeyHistory,
    TrustedKey,
    TrustList,
    build_trust_list,
    sign_trust_list,
)

log = logging.getLogger("gateway.services.authority")

JWKS_PATH: Final = "/.well-known/jwks.json"
JWKS_MEDIA_TYPES: Final = frozenset({"application/json", "application/jwk-set+json"})
MAX_JWKS_BYTES: Final = 256_000
STATE_FORMAT: Final = 1


@dataclass(slots=True)
class _Key:
    jwk: dict[str, Any]
    history: list[KeyHistory]

    def to_json(self) -> dict[str, Any]:
        return {"jwk": self.jwk, "history": [h.to_json() for h in self.history]}

    def trusted(self) -> TrustedKey:
        return TrustedKey(jwk=self.jwk, history=tuple(self.history))


def _state_error(path: object, detail: str) -> ConfigError:
    return ConfigError(f"{path}: trust authority state is invalid: {detail}", code="trust.state")


class TrustAuthority:
    """The keys ``national`` vouches for, and the trust lists it signs. See the module doc."""

    def __init__(
        self,
        federation: Federation,
        *,
        clock: Clock,
        root: RootKey,
        state_path: Path,
        validity: int = DEFAULT_VALIDITY,
        store: AuthorityStore | None = None,
        holder: str = "",
        lease_seconds: float = 10.0,
    ) -> None:
        self._store = store
        self._holder = holder
        self._lease_seconds = lease_seconds
        self._leading = False
        self._document: bytes | None = None
        """The state document last saved or loaded (the store's, when there is one)."""
        self.federation = federation
        self.validity = validity
        self._clock = clock
        self._root = root
        self._path = state_path
        self._seq = 0
        self._token: str | None = None
        self._issued_at: int | None = None
        self._expires_at: int | None = None
        self._changed = False
        self._keys: dict[NodeId, dict[KeyId, _Key]] = {}

    @classmethod
    def open(
        cls,
        federation: Federation,
        *,
        clock: Clock,
        root: RootKey,
        state_path: Path,
        validity: int = DEFAULT_VALIDITY,
        store: AuthorityStore | None = None,
        holder: str = "",
        lease_seconds: float = 10.0,
    ) -> TrustAuthority:
        """Load the state at ``state_path`` (or, given a ``store``, the store's: ``national``
        as replicas, ``holder`` naming this one in the author's lease of ``lease_seconds``),
        or start empty (seq 0, no list) if there is none.

        Raises :class:`ConfigError` ``trust.state`` for an unreadable or malformed state.
        """
        if validity <= 0:
            raise ConfigError("a trust list's validity must be positive", code="trust.state")
        if store is not None and not (holder and lease_seconds > 0):
            raise ConfigError("a shared authority needs a holder and a lease", code="trust.state")
        authority = cls(
            federation,
            clock=clock,
            root=root,
            state_path=state_path,
            validity=validity,
            store=store,
            holder=holder,
            lease_seconds=lease_seconds,
        )
        if store is not None:
            authority.reload()
        elif state_path.exists():
            authority._load()
        return authority

    # -- replicas: one author at a time ----------------------------------------------------

    def lead(self, now: float) -> bool:
        """Whether this replica is the trust list's author now: takes or renews the lease
        (always True for a file-backed authority, which one process owns). On becoming the
        author it first reloads the stored state, so the sequence goes on from the last
        author's."""
        if self._store is None:
            return True
        leading = self._store.acquire(self._holder, now=now, ttl=self._lease_seconds)
        if leading and not self._leading:
            self.reload()
        self._leading = leading
        return leading

    def resign(self) -> None:
        """Give the author's lease up (a clean shutdown): another replica takes over at once."""
        if self._store is not None and self._leading:
            self._store.release(self._holder)
            self._leading = False

    def reload(self) -> bool:
        """Adopt the stored state if it is not the one this object holds (another replica
        authored since); True when it changed. A file-backed authority has nothing to do."""
        if self._store is None:
            return False
        stored = self._store.load()
        if stored is None or stored[1] == self._document:
            return False
        try:
            state = loads(stored[1])
            self._load_state(state)
        except (GatewayError, KeyError, TypeError, ValueError) as exc:
            detail = exc.detail if isinstance(exc, GatewayError) else f"{type(exc).__name__}"
            raise _state_error("the authority state in the database", detail) from exc
        self._document = stored[1]
        return True

    # -- reading ---------------------------------------------------------------------------

    @property
    def seq(self) -> int:
        """The sequence number of the last published list (0 before the first)."""
        return self._seq

    @property
    def token(self) -> str | None:
        """The last published signed list, or None before the first."""
        return self._token

    def keys(self, node: NodeId) -> tuple[TrustedKey, ...]:
        """Every key recorded for ``node``, with its history."""
        return tuple(key.trusted() for key in self._keys.get(node, {}).values())

    def needs_publish(self, now: float) -> bool:
        """True when keys changed since the last list, there is none, or it is due a refresh
        (:meth:`gateway.trust.trust_list.TrustList.refresh_at` of the last list)."""
        if self._changed or self._token is None or self._issued_at is None:
            return True
        if self._expires_at is None:
            return True
        refresh_at = self._expires_at - (self._expires_at - self._issued_at) * REFRESH_MARGIN
        return now >= refresh_at

    # -- recording keys --------------------------------------------------------------------

    def observe(self, node: NodeId, jwks: Mapping[str, Any]) -> bool:
        """Record ``node``'s published JWKS. True if any key or status changed.

        Parsed strictly (:func:`gateway.crypto.jwks.parse_jwks`): raises :class:`SealError`
        ``jwk.*`` for a bad set, :class:`NotFoundError` ``trust.unknown_node`` for a node not in the
        federation, :class:`StorageError` ``trust.storage`` if the state cannot be saved.
        """
        if node not in {n.id for n in self.federation.nodes}:
            raise NotFoundError("the federation has no such node", code="trust.unknown_node")
        parsed = parse_jwks(jwks, node=node)
        now = int(self._clock.now())
        known = self._keys.setdefault(node, {})
        if known and not self.unsafe_follow_jwks:
            # Enrolled: from now on this node's keys change only through key-change
            # requests signed by its current key (:meth:`apply_key_change`).
            return False
        changed = False
        for kid, key in parsed.items():
            changed |= self._observe_key(node, known, kid, key, now)
        if changed:
            self._changed = True
            self._save()
        return changed

    unsafe_follow_jwks: bool = False
    """Follow nodes' JWKS status changes after enrolment too. Off: once a node is enrolled,
    only its signed key-change requests change its keys (anyone able to answer for its URL
    could otherwise publish keys in its name)."""

    def apply_request(self, caller: NodeId, change: object) -> tuple[str, KeyId]:
        """A key-change request body, from ``caller`` (authenticated by its hop proof).

        ``{"node", "action", "kid", "jwk"?, "at"?}``; a node changes only its own keys.
        Returns the action and kid applied.
        """
        if not isinstance(change, dict) or change.get("node") != caller:
            raise Forbidden("a node changes only its own keys", code="keys.not_owner")
        action, kid, at = change.get("action"), change.get("kid"), change.get("at")
        jwk = change.get("jwk")
        if not isinstance(action, str) or not isinstance(kid, str):
            raise InputError("a key change names an action and a kid", code="keys.bad_change")
        if (jwk is not None and not isinstance(jwk, dict)) or (at is not None and (not is_int(at))):
            raise InputError("malformed key change", code="keys.bad_change")
        self.apply_key_change(caller, action, KeyId(kid), jwk=jwk, at=at)
        return action, KeyId(kid)

    def apply_key_change(
        self,
        node: NodeId,
        action: str,
        kid: KeyId,
        *,
        jwk: Mapping[str, Any] | None = None,
        at: float | None = None,
    ) -> None:
        """A node's signed key-change request (the caller authenticated it as ``node``).

        ``prepublish`` a new key as ``next``; ``activate`` a ``next`` key (the node's other
        active keys become ``retired``); ``retire``; ``revoke`` from a time (default now).
        Raises :class:`InputError` / :class:`ConflictError` for impossible changes.
        """
        now = int(self._clock.now())
        known = self._keys.setdefault(node, {})
        entry = known.get(kid)
        if action == "prepublish":
            if entry is not None:
                raise ConflictError("that key is already published", code="keys.exists")
            if jwk is None:
                raise InputError("prepublish needs the public JWK", code="keys.bad_change")
            key = parse_jwk(dict(jwk), node=node)
            if key.kid != kid:
                raise InputError("the JWK is not that kid's", code="keys.bad_change")
            known[kid] = _Key(jwk=public_jwk(key), history=[KeyHistory(KeyState.NEXT, now)])
        else:
            if entry is None:
                raise NotFoundError("no such key of that node", code="keys.not_found")
            state = entry.history[-1].state
            if state is KeyState.REVOKED:
                raise ConflictError("a revoked key cannot change", code="keys.revoked")
            if action == "activate":
                if state is not KeyState.NEXT:
                    raise ConflictError("only a next key can be activated", code="keys.state")
                for other in known.values():
                    if other is not entry and other.history[-1].state is KeyState.ACTIVE:
                        other.history.append(KeyHistory(KeyState.RETIRED, now))
                entry.history.append(KeyHistory(KeyState.ACTIVE, now))
            elif action == "retire":
                entry.history.append(KeyHistory(KeyState.RETIRED, now))
            elif action == "revoke":
                # From ``at``: a compromise found late. Later changes (a retirement) are
                # superseded, so the history stays in time order and says what is true.
                since = max(int(at) if at is not None else now, entry.history[0].since)
                while len(entry.history) > 1 and entry.history[-1].since > since:
                    entry.history.pop()
                entry.history.append(KeyHistory(KeyState.REVOKED, since))
            else:
                raise InputError(f"unknown key change {action[:32]!r}", code="keys.bad_change")
        log.info("key change", extra={"node": node, "kid": kid, "action": action})
        self._changed = True
        self._save()

    def _observe_key(
        self,
        node: NodeId,
        known: dict[KeyId, _Key],
        kid: KeyId,
        key: VerificationKey,
        now: int,
    ) -> bool:
        jwk = public_jwk(key)
        entry = known.get(kid)
        if entry is None:
            # 1. a new key enters with its status, since its nbf (a revocation: revoked_at)
            since = _since(key, fallback=now if key.not_before is None else int(key.not_before))
            known[kid] = _Key(jwk=jwk, history=[KeyHistory(key.state, since)])
            log.info("key enrolled", extra={"node": node, "kid": kid, "state": key.state.value})
            return True
        changed = False
        last = entry.history[-1]
        # 2. a status change appends, never back in time, nothing after a revocation
        if key.state is not last.state:
            if last.state is KeyState.REVOKED:
                log.warning(
                    "a revoked key is published with another status; ignored",
                    extra={"node": node, "kid": kid, "state": key.state.value},
                )
            elif len(entry.history) >= MAX_HISTORY:
                log.warning("key history is full; change ignored", extra={"kid": kid})
            else:
                since = max(_since(key, fallback=now), last.since)
                entry.history.append(KeyHistory(key.state, since))
                changed = True
                log.info(
                    "key status changed",
                    extra={"node": node, "kid": kid, "state": key.state.value},
                )
        # 3. other members (validity times) follow the latest JWKS; status comes from history
        if _comparable(jwk) != _comparable(entry.jwk):
            entry.jwk = jwk
            changed = True
        return changed

    # -- publishing ------------------------------------------------------------------------

    def publish(self) -> str:
        """Sign the next list (seq + 1) from every recorded key, save it, and return it."""
        now = self._clock.now()
        seq = self._seq + 1
        node_keys = {
            node: [k.trusted() for k in keys.values()] for node, keys in self._keys.items()
        }
        trust_list = build_trust_list(
            self.federation, node_keys, seq=seq, now=now, validity=self.validity
        )
        token = sign_trust_list(trust_list, self._root.signer(), now=now)
        previous = (self._seq, self._token, self._issued_at, self._expires_at, self._changed)
        self._accept(seq, token, trust_list)
        try:
            self._save()
        except (StorageError, ConflictError):
            # not published until a restart would find it: the old state stays current
            self._seq, self._token, self._issued_at, self._expires_at, self._changed = previous
            raise
        log.info("trust list published", extra={"seq": seq, "exp": trust_list.expires_at})
        return token

    def _accept(self, seq: int, token: str, trust_list: TrustList) -> None:
        self._seq, self._token = seq, token
        self._issued_at, self._expires_at = trust_list.issued_at, trust_list.expires_at
        self._changed = False

    # -- state file ------------------------------------------------------------------------

    def _save(self) -> None:
        state = {
            "format": STATE_FORMAT,
            "federation": self.federation.name,
            "seq": self._seq,
            "token": self._token,
            "iat": self._issued_at,
            "exp": self._expires_at,
            "changed": self._changed,
            "nodes": {
                node: [key.to_json() for key in keys.values()] for node, keys in self._keys.items()
            },
        }
        document = orjson.dumps(state, option=orjson.OPT_INDENT_2)
        if self._store is not None:  # fenced: only the lease's holder, never a lower seq
            try:
                self._store.save(
                    document, seq=self._seq, holder=self._holder, now=self._clock.now()
                )
            except BaseException:
                self._document = None  # what this object holds is not stored: reload it
                raise
            self._document = document
            return
        try:
            atomic_write(self._path, document)
        except OSError as exc:
            raise StorageError(
                "cannot save the trust authority state", code="trust.storage", log_detail=str(exc)
            ) from exc

    def _load(self) -> None:
        path = self._path
        try:
            state = loads(path.read_bytes())
        except OSError as exc:
            raise _state_error(path, exc.strerror or "unreadable") from exc
        except GatewayError as exc:
            raise _state_error(path, exc.detail) from exc
        try:
            self._load_state(state)
        except (KeyError, TypeError, ValueError, SealError) as exc:
            raise _state_error(path, f"{type(exc).__name__}: {exc}") from exc

    def _load_state(self, state: Any) -> None:
        path = self._path
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise _state_error(path, "not a state file of a known format")
        if state["federation"] != self.federation.name:
            raise _state_error(path, f"it belongs to federation {state['federation']!r}")
        seq, token, iat, exp = state["seq"], state["token"], state["iat"], state["exp"]
        if not is_int(seq) or seq < 0:
            raise _state_error(path, "'seq' must be a non-negative integer")
        if token is not None and not (isinstance(token, str) and is_int(iat) and is_int(exp)):
            raise _state_error(path, "'token', 'iat' and 'exp' must be given together")
        if not isinstance(state["changed"], bool) or not isinstance(state["nodes"], dict):
            raise _state_error(path, "'changed' must be a boolean and 'nodes' an object")
        node_ids = {n.id for n in self.federation.nodes}
        keys: dict[NodeId, dict[KeyId, _Key]] = {}
        for node_name, entries in state["nodes"].items():
            if node_name not in node_ids or not isinstance(entries, list):
                raise _state_error(path, f"unknown node {node_name!r}")
            node = NodeId(node_name)
            by_kid: dict[KeyId, _Key] = {}
            for entry in entries:
                jwk, history = entry["jwk"], entry["history"]
                parsed = parse_jwk(jwk, node=node)
                if not isinstance(history, list) or not history:
                    raise _state_error(path, f"key {parsed.kid!r} has no history")
                by_kid[parsed.kid] = _Key(
                    jwk=public_jwk(parsed),
                    history=[KeyHistory(KeyState(h["state"]), _int(h["since"])) for h in history],
                )
            keys[node] = by_kid
        self._seq, self._token, self._changed, self._keys = seq, token, state["changed"], keys
        self._issued_at = None if token is None else iat
        self._expires_at = None if token is None else exp


def _since(key: VerificationKey, *, fallback: int) -> int:
    if key.state is KeyState.REVOKED and key.revoked_at is not None:
        return int(key.revoked_at)
    return fallback


def _comparable(jwk: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in jwk.items() if name not in ("status", "revoked_at")}


def _int(value: object) -> int:
    if not is_int(value):
        raise TypeError("expected an integer")
    return value

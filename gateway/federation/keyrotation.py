"""Seal-key changes on a running federation: rotate, retire, revoke.

Rotation never causes a failed verification anywhere, because no node ever meets a seal
whose key it does not already trust:

1. the node creates a ``next`` key and sends a key-change request, signed by its current
   key, to ``national``, which pre-publishes the key in a new trust-list version;
2. once every regional node holds that version (or the propagation window has passed),
   the node asks ``national`` to activate the new key, which retires the old one — a
   retired key still verifies;
3. once every node holds *that* version too, the node starts sealing with the new key.

Until step 3 the node keeps sealing with the old key, which every version still trusts.
Retire and revoke are single key-change requests; a revocation takes effect from a time,
and every seal by that key signed at or after it fails.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson
from tqdm import tqdm

from gateway._internal.wire import b64url_decode
from gateway.audit.records import AuditKind
from gateway.clock import Clock, to_rfc3339
from gateway.crypto.jwks import Alg, KeyResolver, KeyState, public_jwk
from gateway.crypto.seals import MAX_SEAL_BYTES, seal
from gateway.errors import ConflictError, GatewayError, NetworkError, NotReady
from gateway.federation.peers import PeerClient, Sleep, UpstreamProblem
from gateway.ids import NATIONAL, KeyId, NodeId
from gateway.services.node import NodeService
from gateway.storage.groupcommit import GroupCommit
from gateway.trust.sync import TRUST_LIST_MEDIA_TYPES, TRUST_LIST_PATH

log = logging.getLogger("gateway.federation.keyrotation")

KEY_CHANGES_PATH = "/v1/admin/key-changes"
POLL_INTERVAL = 0.25


class KeyRotation:
    """Runs key changes for one node against national and the rest of the federation."""

    def __init__(
        self,
        node: NodeService,
        *,
        peers: PeerClient,
        journal: GroupCommit,
        trust: Callable[[float], KeyResolver],
        clock: Clock,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.node = node
        self._peers = peers
        self._trust = trust
        self._journal = journal
        self._clock = clock
        self._sleep = sleep
        self._window = node.federation.key_propagation_seconds
        self._lock = asyncio.Lock()

    def _require_enrolled(self) -> None:
        """A key change is signed with the node's current key: national must trust it."""
        try:
            self.node.readiness(self._trust)
        except GatewayError as exc:
            raise _not_enrolled(exc.code) from exc

    async def _record(self, kid: KeyId, details: dict[str, Any]) -> None:
        """The key event in the audit log, durable before the change is answered."""
        await self._journal.append([(AuditKind.KEY_EVENT, "ops", kid, details)])

    def listing(self) -> list[dict[str, Any]]:
        """The node's keys as ``tongban keys list`` shows them."""
        now = self._clock.now()
        return [
            {
                "state": r.state.value,
                "kid": r.kid,
                "alg": r.alg,
                "created": to_rfc3339(r.created),
                "activates": to_rfc3339(r.not_before),
                "expires": to_rfc3339(r.not_after),
                "expires_in_days": int((r.not_after - now) // 86_400),
                **({"revoked_at": to_rfc3339(r.revoked_at)} if r.revoked_at else {}),
            }
            for r in self.node.keys.records()
        ]

    async def rotate(self, *, alg: Alg | None = None) -> dict[str, Any]:
        """Rotate to a new key of ``alg`` (default: the federation file's ``seal_alg``); a
        rotation between algorithms (Ed25519 to SM2 and back) runs the same three steps."""
        self._require_enrolled()
        async with self._lock:  # one key change at a time per node
            keys = self.node.keys
            old = keys.active()
            new = keys.add_key(state=KeyState.NEXT, alg=alg)
            jwk = public_jwk(keys.verification_key(new))
            # 1. pre-publish the next key, signed by the current one
            seq = await self._change("prepublish", new.kid, jwk=jwk)
            await self._propagated(seq)
            # 2. activate it at national (the old key becomes retired: it still verifies)
            seq = await self._change("activate", new.kid)
            await self._propagated(seq)
            # 3. only now seal with it
            keys.set_state(new.kid, KeyState.ACTIVE)
            keys.set_state(old.kid, KeyState.RETIRED)
            self.node.refresh_key_metrics()
            await self._record(
                new.kid,
                {
                    "action": "rotate",
                    "previous": old.kid,
                    "alg": new.alg,
                    "trust_list_seq": seq,
                },
            )
            log.info("seal key rotated", extra={"old": old.kid, "new": new.kid, "alg": new.alg})
            return {
                "previous": old.kid,
                "active": new.kid,
                "alg": new.alg,
                "trust_list_seq": seq,
            }

    async def retire(self, kid: KeyId) -> dict[str, Any]:
        self._require_enrolled()
        async with self._lock:
            record = self.node.keys.record(kid)
            if record.state is KeyState.ACTIVE:
                raise ConflictError(
                    "the active key cannot be retired; rotate instead", code="keys.state"
                )
            seq = await self._change("retire", record.kid)
            self.node.keys.set_state(record.kid, KeyState.RETIRED)
            await self._record(record.kid, {"action": "retire", "trust_list_seq": seq})
            return {"retired": record.kid, "trust_list_seq": seq}

    async def revoke(self, kid: KeyId, *, at: float | None = None) -> dict[str, Any]:
        """Revoke ``kid`` from ``at`` (default now). Revoking the active key rotates first."""
        self._require_enrolled()
        record = self.node.keys.record(kid)
        if record.state is KeyState.REVOKED:
            raise ConflictError("that key is already revoked", code="keys.revoked")
        rotated = None
        if record.state is KeyState.ACTIVE:
            rotated = await self.rotate()  # never leave the node without a signing key
        async with self._lock:
            when = self._clock.now() if at is None else at
            seq = await self._change("revoke", record.kid, at=when)
            self.node.keys.set_state(record.kid, KeyState.REVOKED, at=when)
            self.node.refresh_key_metrics()
            await self._record(
                record.kid,
                {"action": "revoke", "from": int(when), "trust_list_seq": seq},
            )
            return {
                "revoked": record.kid,
                "from": to_rfc3339(when),
                "rotated": rotated,
                "trust_list_seq": seq,
            }

    async def _change(
        self,
        action: str,
        kid: KeyId,
        *,
        jwk: dict[str, Any] | None = None,
        at: float | None = None,
    ) -> int:
        body: dict[str, Any] = {"node": self.node.node.id, "action": action, "kid": kid}
        if jwk is not None:
            body["jwk"] = jwk
        if at is not None:
            body["at"] = int(at)
        try:
            answer = await self._peers.post(NATIONAL, KEY_CHANGES_PATH, orjson.dumps(body))
        except UpstreamProblem as exc:
            if exc.status == 401 and exc.code.startswith("hop."):
                raise _not_enrolled(exc.code) from exc  # national cannot check our signature
            raise
        seq = answer.get("trust_list_seq")
        if not isinstance(seq, int):
            raise NetworkError("national answered a key change badly", code="keys.bad_answer")
        return seq

    async def _propagated(self, seq: int) -> None:
        """Until every regional node holds trust list ``seq``, or the window has passed."""
        regions = [n.id for n in self.node.federation.nodes if n.kind == "region"]
        deadline = self._clock.now() + self._window
        pending = set(regions)
        while pending and self._clock.now() < deadline:
            for node in sorted(pending):
                if await self._seq_at(node) >= seq:
                    pending.discard(node)
            if pending:
                await self._sleep(POLL_INTERVAL)
        if pending:
            log.warning(
                "propagation window passed before every node had the new trust list",
                extra={"seq": seq, "pending": sorted(pending)},
            )

    async def _seq_at(self, node: NodeId) -> int:
        """The trust-list version a node serves (read unverified: only to watch propagation)."""
        try:
            token = await self._peers.get(
                node,
                TRUST_LIST_PATH,
                content_types=TRUST_LIST_MEDIA_TYPES,
                accept="application/jwt, text/plain",
                max_bytes=MAX_SEAL_BYTES + 2,
                code_prefix="keys",
            )
            unverified_claims = orjson.loads(b64url_decode(token.split(b".")[1].decode("ascii")))
        except (ValueError, IndexError, GatewayError):
            return -1
        seq = unverified_claims.get("seq") if isinstance(unverified_claims, dict) else None
        return seq if isinstance(seq, int) else -1


RESEAL_BATCH = 500


def reseal(node: NodeService, kid: KeyId, *, progress: bool = False) -> int:
    """Re-seal the node's live certificates still sealed with ``kid`` with its active key.

    Each batch is committed before the next is read, and only certificates still carrying
    ``kid`` are picked up, so a reseal interrupted by a crash resumes where it stopped when
    run again. Returns how many certificates were re-sealed by this run.
    """
    total = node.registry.count_sealed_with(kid)
    bar = tqdm(total=total, unit="cert", desc=f"reseal {node.node.id}", disable=not progress)
    done = 0
    with bar:
        while batch := node.registry.sealed_with(kid, limit=RESEAL_BATCH):
            now = node.clock.now()
            signer = node.keys.signer()
            if signer.kid == kid:
                raise ConflictError(
                    "the key to reseal away from is still active", code="keys.state"
                )
            resealed = []
            for cert_id, old_seal in batch:
                document = orjson.loads(b64url_decode(old_seal.split(".")[1]))
                document["iat"] = int(now)
                resealed.append(
                    (cert_id, signer.kid, seal(signer, orjson.dumps(document), signed_at=now))
                )
            node.registry.reseal(resealed, at=now)
            node.record(
                AuditKind.KEY_EVENT,
                "ops",
                kid,
                {"action": "reseal", "certificates": len(resealed), "new_kid": signer.kid},
            )
            done += len(resealed)
            bar.update(len(resealed))
    return done


def _not_enrolled(cause: str) -> NotReady:
    return NotReady(
        "national does not trust this node's seal key yet (a node's key is enrolled in the"
        " trust list a few seconds after it starts): try again once GET /readyz answers ready",
        code="keys.not_enrolled",
        log_detail=cause,
    )

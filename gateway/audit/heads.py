"""Signed tree heads: a node's signature over the size and root of its audit log.

A head is a compact JWS (typ :data:`STH_TYP`) by the node's seal key. Partners verify it with
:func:`verify_tree_head` against the trust list; :class:`gateway.audit.watch.HeadWatcher`
then proves that each new head extends the last one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import orjson

from gateway._internal.wire import b64url_decode, b64url_encode, is_int
from gateway.crypto.jwks import KeyResolver
from gateway.crypto.merkle import (
    HASH_BYTES,
)
from gateway.crypto.seals import Signer, sign_compact, verify_compact
from gateway.errors import (
    InputError,
    VerificationError,
)
from gateway.ids import NodeId

STH_TYP: Final = "audit-sth+jws"
_CLAIMS_SKEW: Final = 1


@dataclass(frozen=True, slots=True)
class SignedTreeHead:
    node: NodeId
    tree_size: int
    root_hash: bytes
    issued_at: float
    token: str
    """The compact JWS (typ :data:`STH_TYP`) a partner verifies with :func:`verify_tree_head`."""


# --- signed tree heads ----------------------------------------------------------------------


def bad_head(detail: str) -> VerificationError:
    return VerificationError(detail, code="audit.bad_head")


def sign_tree_head(
    signer: Signer, *, node: NodeId, tree_size: int, root_hash: bytes, issued_at: float
) -> SignedTreeHead:
    iat = int(issued_at)
    claims = {
        "iss": node,
        "tree_size": tree_size,
        "root_hash": b64url_encode(root_hash),
        "iat": iat,
    }
    token = sign_compact(
        signer, orjson.dumps(claims, option=orjson.OPT_SORT_KEYS), typ=STH_TYP, signed_at=iat
    )
    return SignedTreeHead(node, tree_size, root_hash, float(iat), token)


def verify_tree_head(token: str, keys: KeyResolver, *, node: NodeId, now: float) -> SignedTreeHead:
    """Verify a signed tree head of ``node``. Raises a :class:`VerificationError`.

    Seal failures keep their ``seal.*`` codes; a head that is well signed but claims the
    wrong node or malformed values is ``audit.bad_head``.
    """
    # 1. a compact JWS of the pinned type, signed by a key we trust
    verified = verify_compact(token, keys, typ=STH_TYP, now=now)
    claims = verified.payload
    # 2. the key belongs to the node we asked about, and the head says it is that node's
    if verified.node != node or claims.get("iss") != node:
        raise bad_head("the tree head is not signed by the node it claims to be from")
    # 3. the size is a non-negative integer, the root a 32-byte hash
    tree_size = claims.get("tree_size")
    if not is_int(tree_size) or tree_size < 0:
        raise bad_head("the tree head's size is not a non-negative integer")
    root_b64 = claims.get("root_hash")
    try:
        root_hash = b64url_decode(root_b64, max_length=64) if isinstance(root_b64, str) else b""
    except InputError as exc:
        raise bad_head("the tree head's root is not base64url") from exc
    if len(root_hash) != HASH_BYTES:
        raise bad_head("the tree head's root is not a SHA-256 hash")
    # 4. iat is an integer matching the signing time
    iat = claims.get("iat")
    if not is_int(iat) or abs(iat - int(verified.signed_at)) > _CLAIMS_SKEW:
        raise bad_head("the tree head's iat does not match its signing time")
    return SignedTreeHead(node, tree_size, root_hash, float(iat), token)

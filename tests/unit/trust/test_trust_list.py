"""The federation trust list: building, signing, strict verification, the resolver, the cache."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway._internal.wire import b64url_decode, b64url_encode
from gateway.config import Federation, load_federation
from gateway.crypto.jwks import KeyState, StaticKeyResolver, VerificationKey, public_jwk
from gateway.crypto.seals import SEAL_TYP, PrivateKeySigner, Signer, seal, sign_compact, verify_seal
from gateway.errors import (
    ConfigError,
    Indication,
    InputError,
    NotFoundError,
    SealError,
    SealIndeterminate,
    StorageError,
)
from gateway.ids import KeyId, NodeId
from gateway.trust.rootkey import ROOT_NODE
from gateway.trust.trust_list import (
    DEFAULT_VALIDITY,
    REFRESH_MARGIN,
    TRUST_LIST_TYP,
    KeyHistory,
    TrustedKey,
    TrustList,
    TrustListCache,
    TrustListResolver,
    build_trust_list,
    read_trust_list_file,
    require_active_key,
    sign_trust_list,
    verify_trust_list,
)

NOW = 1_795_507_200.0  # 2026-11-24T08:00:00Z
DAY = 86_400
ZHUJI, SHANGHAI = NodeId("zhuji"), NodeId("shanghai")
FED: Federation = load_federation(env={})


def ed25519(seed: int) -> PrivateKeySigner:
    """A fixed test key (deterministic, never a secret of anything)."""
    return PrivateKeySigner(Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32))


ROOT_SIGNER = ed25519(1)
OTHER_ROOT_SIGNER = ed25519(2)
ROOT = VerificationKey(
    node=ROOT_NODE,
    kid=ROOT_SIGNER.kid,
    alg=ROOT_SIGNER.alg,
    public_key=ROOT_SIGNER.public_key,
    state=KeyState.ACTIVE,
    not_before=None,
    not_after=None,
    revoked_at=None,
    verify_allowed=True,
)

ZHUJI_ACTIVE = ed25519(10)
ZHUJI_RETIRED = ed25519(11)
ZHUJI_REVOKED = ed25519(12)
ZHUJI_NEXT = ed25519(13)
SHANGHAI_ACTIVE = PrivateKeySigner(ec.derive_private_key(0x5EA1_C0DE, ec.SECP256R1()))

REVOKED_AT = int(NOW) - 3600


def trusted(signer: PrivateKeySigner, node: NodeId, *history: tuple[KeyState, int]) -> TrustedKey:
    """A key as its node publishes it (status ``active`` whatever the history says)."""
    jwk = public_jwk(
        VerificationKey(
            node=node,
            kid=signer.kid,
            alg=signer.alg,
            public_key=signer.public_key,
            state=KeyState.ACTIVE,
            not_before=NOW - 90 * DAY,
            not_after=NOW + 365 * DAY,
            revoked_at=None,
            verify_allowed=True,
        )
    )
    return TrustedKey(jwk=jwk, history=tuple(KeyHistory(s, t) for s, t in history))


KEYS: dict[NodeId, list[TrustedKey]] = {
    ZHUJI: [
        trusted(
            ZHUJI_RETIRED,
            ZHUJI,
            (KeyState.ACTIVE, int(NOW) - 90 * DAY),
            (KeyState.RETIRED, int(NOW) - 30 * DAY),
        ),
        trusted(
            ZHUJI_ACTIVE,
            ZHUJI,
            (KeyState.NEXT, int(NOW) - 31 * DAY),
            (KeyState.ACTIVE, int(NOW) - 30 * DAY),
        ),
        trusted(
            ZHUJI_REVOKED,
            ZHUJI,
            (KeyState.ACTIVE, int(NOW) - 90 * DAY),
            (KeyState.REVOKED, REVOKED_AT),
        ),
        trusted(ZHUJI_NEXT, ZHUJI, (KeyState.NEXT, int(NOW) - 60)),
    ],
    SHANGHAI: [trusted(SHANGHAI_ACTIVE, SHANGHAI, (KeyState.ACTIVE, int(NOW) - 90 * DAY))],
}


def build(*, seq: int = 1, now: float = NOW, validity: int = DEFAULT_VALIDITY) -> TrustList:
    return build_trust_list(FED, KEYS, seq=seq, now=now, validity=validity)


def token_for(
    claims: dict[str, Any] | bytes,
    *,
    signer: Signer = ROOT_SIGNER,
    typ: str = TRUST_LIST_TYP,
    signed_at: float = NOW,
) -> str:
    payload = claims if isinstance(claims, bytes) else orjson.dumps(claims)
    return sign_compact(signer, payload, typ=typ, signed_at=signed_at)


def signed(*, seq: int = 1, now: float = NOW) -> str:
    return sign_trust_list(build(seq=seq, now=now), ROOT_SIGNER, now=now)


def rejects(
    token: Any,
    code: str,
    step: str,
    indication: Indication = Indication.FAILED,
    *,
    now: float = NOW,
    min_seq: int | None = None,
) -> SealError:
    with pytest.raises(SealError) as info:
        verify_trust_list(token, ROOT, now=now, min_seq=min_seq)
    error = info.value
    assert (error.code, error.step, error.indication) == (code, step, indication)
    assert isinstance(error, SealIndeterminate) == (indication is Indication.INDETERMINATE)
    return error


def node_of(claims: dict[str, Any], node_id: str) -> dict[str, Any]:
    [node] = [n for n in claims["nodes"] if n["id"] == node_id]
    return node  # type: ignore[no-any-return]


def key_of(claims: dict[str, Any], signer: PrivateKeySigner) -> dict[str, Any]:
    [key] = [k for n in claims["nodes"] for k in n["keys"] if k["jwk"]["kid"] == signer.kid]
    return key  # type: ignore[no-any-return]


# --- building and round trips -----------------------------------------------------------------


def test_round_trip() -> None:
    trust_list = build(seq=7)
    token = sign_trust_list(trust_list, ROOT_SIGNER, now=NOW)
    assert verify_trust_list(token, ROOT, now=NOW) == trust_list


def test_round_trip_es256_root() -> None:
    signer = PrivateKeySigner(ec.derive_private_key(0xC0FFEE, ec.SECP256R1()))
    root = replace(ROOT, kid=signer.kid, alg="ES256", public_key=signer.public_key)
    token = sign_trust_list(build(), signer, now=NOW)
    assert verify_trust_list(token, root, now=NOW) == build()


def test_the_signed_token_has_the_trust_list_type_and_sorted_claims() -> None:
    trust_list = build(seq=3)
    header_b64, payload_b64, _ = sign_trust_list(trust_list, ROOT_SIGNER, now=NOW).split(".")
    header = orjson.loads(b64url_decode(header_b64))
    assert (header["typ"], header["kid"], header["alg"]) == (
        TRUST_LIST_TYP,
        ROOT_SIGNER.kid,
        "EdDSA",
    )
    payload = b64url_decode(payload_b64)
    assert payload == orjson.dumps(trust_list.to_json(), option=orjson.OPT_SORT_KEYS)
    claims = orjson.loads(payload)
    assert (claims["iss"], claims["federation"], claims["seq"]) == (ROOT_NODE, FED.name, 3)
    assert (claims["iat"], claims["exp"]) == (int(NOW), int(NOW) + DEFAULT_VALIDITY)


def test_build_lists_every_node_of_the_federation() -> None:
    trust_list = build(validity=600)
    assert [n.id for n in trust_list.nodes] == [n.id for n in FED.nodes]
    assert trust_list.federation == FED.name
    assert trust_list.expires_at - trust_list.issued_at == 600
    assert trust_list.agreements == ((ZHUJI, NodeId("linquan")),)
    zhuji = next(n for n in trust_list.nodes if n.id == ZHUJI)
    config = FED.node(ZHUJI)
    assert (zhuji.name, zhuji.kind, zhuji.region, zhuji.parent, zhuji.url) == (
        config.name,
        "region",
        "330681",
        "shaoxing",
        FED.url(ZHUJI),
    )
    assert [d.id for d in zhuji.departments] == [d.id for d in config.departments]
    assert zhuji.departments[0].credit_code == config.departments[0].credit_code
    assert zhuji.departments[0].issues == config.departments[0].issues
    idp = next(n for n in trust_list.nodes if n.id == "idp")
    assert (idp.kind, idp.region, idp.parent, idp.keys) == ("idp", None, None, ())


def test_build_writes_each_keys_status_from_its_history() -> None:
    trust_list = build()
    keys = {k.kid: k for n in trust_list.nodes for k in n.keys}
    revoked = keys[ZHUJI_REVOKED.kid]
    assert (revoked.state, revoked.revoked_at) == (KeyState.REVOKED, REVOKED_AT)
    assert (revoked.jwk["status"], revoked.jwk["revoked_at"]) == ("revoked", REVOKED_AT)
    assert keys[ZHUJI_RETIRED.kid].jwk["status"] == "retired"
    assert keys[ZHUJI_NEXT.kid].jwk["status"] == "next"
    assert keys[ZHUJI_ACTIVE.kid].jwk["status"] == "active"
    assert "revoked_at" not in keys[ZHUJI_ACTIVE.kid].jwk
    assert "d" not in keys[ZHUJI_ACTIVE.kid].jwk


def test_a_built_list_is_read_only() -> None:
    key = build().nodes[4].keys[0]
    assert build().nodes[4].id == ZHUJI
    with pytest.raises(TypeError):
        key.jwk["kid"] = "x"  # type: ignore[index]
    with pytest.raises(AttributeError):
        key.jwk["key_ops"].append("sign")


def test_build_refuses_keys_of_an_unknown_node() -> None:
    with pytest.raises(InputError) as info:
        build_trust_list(FED, {NodeId("atlantis"): []}, seq=1, now=NOW)
    assert info.value.code == "trust.bad_input"


def test_build_refuses_a_non_positive_validity() -> None:
    with pytest.raises(InputError) as info:
        build(validity=0)
    assert info.value.code == "trust.bad_input"


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(
            TrustedKey(
                jwk={**trusted(ZHUJI_ACTIVE, ZHUJI).jwk, "d": "AAAA"},
                history=(KeyHistory(KeyState.ACTIVE, int(NOW)),),
            ),
            id="private-member",
        ),
        pytest.param(trusted(ZHUJI_ACTIVE, ZHUJI), id="empty-history"),
        pytest.param(trusted(ZHUJI_ACTIVE, SHANGHAI, (KeyState.ACTIVE, 0)), id="other-node-key"),
    ],
)
def test_build_refuses_a_key_verifiers_would_refuse(key: TrustedKey) -> None:
    with pytest.raises(InputError) as info:
        build_trust_list(FED, {ZHUJI: [key]}, seq=1, now=NOW)
    assert info.value.code == "trust.bad_input"
    assert isinstance(info.value.__cause__, SealError)


def test_sign_refuses_a_list_too_large_to_verify() -> None:
    huge = replace(build(), federation="x" * 70_000)
    with pytest.raises(SealError) as info:
        sign_trust_list(huge, ROOT_SIGNER, now=NOW)
    assert info.value.code == "trust.too_large"


# --- the JWS: every rejection of verify_compact comes back as trust.* --------------------------


def test_a_tampered_list_fails() -> None:
    header, _, signature = signed().split(".")
    other = b64url_encode(orjson.dumps(build(seq=99).to_json(), option=orjson.OPT_SORT_KEYS))
    rejects(f"{header}.{other}.{signature}", "trust.bad_signature", "signature")


@pytest.mark.parametrize("signer", [OTHER_ROOT_SIGNER, ZHUJI_ACTIVE], ids=["other-root", "node"])
def test_a_list_signed_by_another_key_is_not_trusted(signer: PrivateKeySigner) -> None:
    token = sign_trust_list(build(), signer, now=NOW)
    error = rejects(token, "trust.unknown_kid", "key", Indication.INDETERMINATE)
    assert isinstance(error.__cause__, SealIndeterminate)
    assert error.__cause__.code == "seal.unknown_kid"


def test_a_seal_is_not_a_trust_list() -> None:
    token = token_for(build().to_json(), typ=SEAL_TYP)
    rejects(token, "trust.wrong_typ", "header")


def test_a_list_signed_in_the_future_fails() -> None:
    rejects(signed(now=NOW + 3600), "trust.signed_in_future", "time", now=NOW)


def test_a_token_that_is_not_a_string_fails() -> None:
    rejects(b"not.a.string", "trust.malformed", "format")


def test_a_payload_with_a_duplicate_member_fails() -> None:
    rejects(token_for(b'{"seq":1,"seq":2}'), "trust.duplicate_member", "payload")


def test_a_payload_that_is_not_an_object_fails() -> None:
    rejects(token_for(b"[]"), "trust.bad_payload", "payload")


# --- times and sequence -----------------------------------------------------------------------


def test_an_expired_list_is_indeterminate() -> None:
    token = signed()
    assert verify_trust_list(token, ROOT, now=NOW + DEFAULT_VALIDITY - 1).seq == 1
    rejects(token, "trust.expired", "time", Indication.INDETERMINATE, now=NOW + DEFAULT_VALIDITY)


def test_a_list_issued_in_the_future_fails() -> None:
    future = build(now=NOW + 3600)
    token = sign_trust_list(future, ROOT_SIGNER, now=NOW)
    rejects(token, "trust.not_yet_valid", "time", now=NOW)
    assert verify_trust_list(token, ROOT, now=NOW + 3600 - 60) == future


def test_an_older_list_than_one_seen_is_a_rollback() -> None:
    token = signed(seq=4)
    assert verify_trust_list(token, ROOT, now=NOW, min_seq=4).seq == 4
    rejects(token, "trust.rollback", "sequence", min_seq=5)


# --- the payload, strictly --------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], object]


def _drop(name: str) -> Mutation:
    return lambda claims: claims.pop(name)


def _set(name: str, value: Any) -> Mutation:
    return lambda claims: claims.__setitem__(name, value)


def _node(node_id: str, name: str, value: Any) -> Mutation:
    return lambda claims: node_of(claims, node_id).__setitem__(name, value)


def _jwk(signer: PrivateKeySigner, name: str, value: Any) -> Mutation:
    return lambda claims: key_of(claims, signer)["jwk"].__setitem__(name, value)


def _history(signer: PrivateKeySigner, value: Any) -> Mutation:
    return lambda claims: key_of(claims, signer).__setitem__("history", value)


def _department(name: str, value: Any) -> Mutation:
    return lambda claims: node_of(claims, "zhuji")["departments"][0].__setitem__(name, value)


def _duplicate_kid_across_nodes(claims: dict[str, Any]) -> None:
    copy = dict(key_of(claims, ZHUJI_ACTIVE), jwk=dict(key_of(claims, ZHUJI_ACTIVE)["jwk"]))
    del copy["jwk"]["node"]  # so only the duplicate kid is wrong with it
    node_of(claims, "shanghai")["keys"].append(copy)


def _kid_of_another_key(claims: dict[str, Any]) -> None:
    node_of(claims, "zhuji")["keys"].remove(key_of(claims, ZHUJI_NEXT))
    key_of(claims, ZHUJI_ACTIVE)["jwk"]["kid"] = ZHUJI_NEXT.kid


ACTIVE_SINCE = int(NOW) - 30 * DAY

MALFORMED: dict[str, Mutation] = {
    **{
        f"missing-{name}": _drop(name)
        for name in ("iss", "federation", "seq", "iat", "exp", "nodes", "agreements")
    },
    "unknown-claim": _set("jku", "https://evil.example/keys"),
    "iss-not-root": _set("iss", "national"),
    "iss-not-string": _set("iss", 1),
    "federation-empty": _set("federation", ""),
    "federation-number": _set("federation", 1),
    "seq-string": _set("seq", "1"),
    "seq-bool": _set("seq", True),
    "seq-negative": _set("seq", -1),
    "seq-float": _set("seq", 1.0),
    "iat-string": _set("iat", str(int(NOW))),
    "iat-float": _set("iat", NOW + 0.5),
    "exp-string": _set("exp", str(int(NOW) + 3600)),
    "exp-before-iat": _set("exp", int(NOW)),
    "exp-beyond-9999": _set("exp", 253_402_300_800),
    "nodes-object": _set("nodes", {}),
    "agreements-string": _set("agreements", "zhuji-linquan"),
    "node-not-object": lambda c: c["nodes"].append(["zhuji"]),
    "node-missing-url": lambda c: node_of(c, "zhuji").pop("url"),
    "node-unknown-member": _node("zhuji", "jwks_uri", "http://evil.example/"),
    "node-id-uppercase": _node("idp", "id", "IDP"),
    "node-id-number": _node("idp", "id", 7),
    "node-kind-unknown": _node("zhuji", "kind", "hub"),
    "node-kind-list": _node("zhuji", "kind", ["region"]),
    "node-region-short": _node("zhuji", "region", "33068"),
    "node-region-number": _node("zhuji", "region", 330681),
    "region-node-without-region": _node("zhuji", "region", None),
    "node-url-scheme": _node("zhuji", "url", "ftp://127.0.0.1:8404"),
    "node-url-path": _node("zhuji", "url", "http://127.0.0.1:8404/evil"),
    "node-name-empty": _node("zhuji", "name", ""),
    "node-parent-unlisted": _node("zhuji", "parent", "nowhere"),
    "node-parent-cycle": _node("national", "parent", "zhuji"),
    "node-twice": lambda c: c["nodes"].append(dict(node_of(c, "idp"))),
    "departments-object": _node("zhuji", "departments", {}),
    "keys-object": _node("zhuji", "keys", {}),
    "department-unknown-member": _department("secret", "x"),
    "department-bad-credit-code": _department("credit_code", "11330681002521002X"),
    "department-issues-number": _department("issues", [1]),
    "department-issues-twice": _department("issues", ["marriage", "marriage"]),
    "department-id-path": _department("id", "../zhuji"),
    "department-twice": lambda c: node_of(c, "shanghai")["departments"].append(
        dict(node_of(c, "zhuji")["departments"][0])
    ),
    "credit-code-twice": lambda c: node_of(c, "shanghai")["departments"][0].__setitem__(
        "credit_code", node_of(c, "zhuji")["departments"][0]["credit_code"]
    ),
    "key-unknown-member": lambda c: key_of(c, ZHUJI_ACTIVE).__setitem__("x5u", "http://e/"),
    "key-jwk-not-object": lambda c: key_of(c, ZHUJI_ACTIVE).__setitem__("jwk", "jwk"),
    "jwk-private-d": _jwk(ZHUJI_ACTIVE, "d", b64url_encode(bytes(32))),
    "jwk-private-k": _jwk(ZHUJI_ACTIVE, "k", b64url_encode(bytes(32))),
    "jwk-kid-mismatch": _kid_of_another_key,
    "jwk-of-another-node": _jwk(ZHUJI_ACTIVE, "node", "shanghai"),
    "jwk-alg-mismatch": _jwk(ZHUJI_ACTIVE, "alg", "ES256"),
    "jwk-unsupported-kty": _jwk(ZHUJI_ACTIVE, "kty", "RSA"),
    "jwk-status-contradicts-history": _jwk(ZHUJI_ACTIVE, "status", "retired"),
    "jwk-revoked-at-contradicts-history": _jwk(ZHUJI_REVOKED, "revoked_at", REVOKED_AT + 1),
    "kid-twice-in-a-node": lambda c: node_of(c, "zhuji")["keys"].append(key_of(c, ZHUJI_ACTIVE)),
    "kid-twice-across-nodes": _duplicate_kid_across_nodes,
    "history-empty": _history(ZHUJI_ACTIVE, []),
    "history-object": _history(ZHUJI_ACTIVE, {"state": "active", "since": ACTIVE_SINCE}),
    "history-unknown-state": _history(ZHUJI_ACTIVE, [{"state": "compromised", "since": 0}]),
    "history-state-list": _history(ZHUJI_ACTIVE, [{"state": ["active"], "since": 0}]),
    "history-since-string": _history(ZHUJI_ACTIVE, [{"state": "active", "since": "0"}]),
    "history-missing-since": _history(ZHUJI_ACTIVE, [{"state": "active"}]),
    "history-out-of-order": _history(
        ZHUJI_ACTIVE,
        [{"state": "next", "since": ACTIVE_SINCE + 1}, {"state": "active", "since": ACTIVE_SINCE}],
    ),
    "history-repeats-a-state": _history(
        ZHUJI_ACTIVE,
        [{"state": "active", "since": 0}, {"state": "active", "since": ACTIVE_SINCE}],
    ),
    "history-after-revocation": _history(
        ZHUJI_REVOKED,
        [{"state": "revoked", "since": REVOKED_AT}, {"state": "active", "since": REVOKED_AT}],
    ),
    "history-too-long": _history(
        ZHUJI_ACTIVE,
        [{"state": ("next", "active")[i % 2], "since": i} for i in range(33)],
    ),
    "agreement-one-node": _set("agreements", [["zhuji"]]),
    "agreement-same-node": _set("agreements", [["zhuji", "zhuji"]]),
    "agreement-unlisted-node": _set("agreements", [["zhuji", "nowhere"]]),
    "agreement-numbers": _set("agreements", [[1, 2]]),
    "agreement-twice": _set("agreements", [["zhuji", "linquan"], ["linquan", "zhuji"]]),
}


REASONS: dict[str, str] = {
    **{
        f"missing-{name}": f"lacks [{name!r}]"
        for name in ("federation", "seq", "iat", "exp", "nodes", "agreements")
    },
    "missing-iss": "issuer (iss)",
    "unknown-claim": "the payload has unknown members",
    "iss-not-root": "issuer (iss)",
    "iss-not-string": "issuer (iss)",
    "federation-empty": "'federation' must be",
    "federation-number": "'federation' must be",
    "seq-string": "'seq' must be",
    "seq-bool": "'seq' must be",
    "seq-negative": "'seq' must be",
    "seq-float": "'seq' must be",
    "iat-string": "'iat' must be",
    "iat-float": "'iat' must be",
    "exp-string": "'exp' must be an integer",
    "exp-before-iat": "'exp' must be after 'iat'",
    "exp-beyond-9999": "'exp' must be an integer",
    "nodes-object": "'nodes' must be an array",
    "agreements-string": "'agreements' must be an array",
    "node-not-object": "nodes[8] must be an object",
    "node-missing-url": "lacks ['url']",
    "node-unknown-member": "nodes[4] has unknown members",
    "node-id-uppercase": "'id' is not well formed",
    "node-id-number": "'id' must be",
    "node-kind-unknown": "unknown kind",
    "node-kind-list": "unknown kind",
    "node-region-short": "'region' is not well formed",
    "node-region-number": "'region' must be",
    "region-node-without-region": "without a region code",
    "node-url-scheme": "'url' is not well formed",
    "node-url-path": "'url' is not well formed",
    "node-name-empty": "'name' must be",
    "node-parent-unlisted": "unlisted parent",
    "node-parent-cycle": "parent cycle",
    "node-twice": "node 'idp' is listed twice",
    "departments-object": "'departments' must be an array",
    "keys-object": "'keys' must be an array",
    "department-unknown-member": "departments[0] has unknown members",
    "department-bad-credit-code": "invalid credit code",
    "department-issues-number": "must list certificate type names",
    "department-issues-twice": "lists a type twice",
    "department-id-path": "'id' is not well formed",
    "department-twice": "listed twice",
    "credit-code-twice": "listed twice",
    "key-unknown-member": "keys[1] has unknown members",
    "key-jwk-not-object": "'jwk' must be an object",
    "jwk-private-d": "private key material",
    "jwk-private-k": "private key material",
    "jwk-kid-mismatch": "thumbprint",
    "jwk-of-another-node": "different node",
    "jwk-alg-mismatch": "declares alg",
    "jwk-unsupported-kty": "only OKP/Ed25519, EC/P-256 and EC/SM2",
    "jwk-status-contradicts-history": "status contradicts its history",
    "jwk-revoked-at-contradicts-history": "revocation time contradicts its history",
    "kid-twice-in-a-node": f"key {ZHUJI_ACTIVE.kid!r} is listed twice",
    "kid-twice-across-nodes": f"key {ZHUJI_ACTIVE.kid!r} is listed twice",
    "history-empty": "empty history",
    "history-object": "'history' must be an array",
    "history-unknown-state": "'state' is not a key state",
    "history-state-list": "'state' is not a key state",
    "history-since-string": "'since' must be",
    "history-missing-since": "lacks ['since']",
    "history-out-of-order": "not in time order",
    "history-repeats-a-state": "repeats a state",
    "history-after-revocation": "continues after a revocation",
    "history-too-long": "more than 32 entries",
    "agreement-one-node": "two different nodes",
    "agreement-same-node": "two different nodes",
    "agreement-unlisted-node": "names an unlisted node",
    "agreement-numbers": "two different nodes",
    "agreement-twice": "agreements[1] is listed twice",
}


def test_the_unaltered_payload_verifies() -> None:
    """The harness itself: re-signing the claims untouched verifies, so each case below fails
    only because of its mutation."""
    claims = build().to_json()
    assert verify_trust_list(token_for(claims), ROOT, now=NOW) == build()


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_payload_is_refused(case: str) -> None:
    claims = build().to_json()
    MALFORMED[case](claims)
    error = rejects(token_for(claims), "trust.invalid", "claims")
    assert error.detail.startswith("the trust list is malformed: ")
    assert REASONS[case] in error.detail


def test_a_refused_jwk_names_its_reason_in_the_log() -> None:
    claims = build().to_json()
    _jwk(ZHUJI_ACTIVE, "alg", "ES256")(claims)
    error = rejects(token_for(claims), "trust.invalid", "claims")
    assert error.log_detail == "jwk.alg_mismatch"


# --- the resolver -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resolver() -> TrustListResolver:
    return TrustListResolver(verify_trust_list(signed(), ROOT, now=NOW))


@pytest.mark.parametrize(
    ("signer", "node", "state", "revoked_at"),
    [
        (ZHUJI_ACTIVE, ZHUJI, KeyState.ACTIVE, None),
        (ZHUJI_RETIRED, ZHUJI, KeyState.RETIRED, None),
        (ZHUJI_REVOKED, ZHUJI, KeyState.REVOKED, float(REVOKED_AT)),
        (ZHUJI_NEXT, ZHUJI, KeyState.NEXT, None),
        (SHANGHAI_ACTIVE, SHANGHAI, KeyState.ACTIVE, None),
    ],
)
def test_resolver_gives_each_key_its_node_and_state(
    resolver: TrustListResolver,
    signer: PrivateKeySigner,
    node: NodeId,
    state: KeyState,
    revoked_at: float | None,
) -> None:
    key = resolver.key_for(signer.kid)
    assert (key.node, key.kid, key.alg, key.state, key.revoked_at) == (
        node,
        signer.kid,
        signer.alg,
        state,
        revoked_at,
    )
    assert key.public_key == signer.public_key
    assert (key.not_before, key.not_after) == (NOW - 90 * DAY, NOW + 365 * DAY)
    assert key.verify_allowed


def test_resolver_does_not_know_the_root_or_other_keys(resolver: TrustListResolver) -> None:
    for kid in (ROOT.kid, OTHER_ROOT_SIGNER.kid, KeyId("unknown")):
        with pytest.raises(SealIndeterminate) as info:
            resolver.key_for(kid)
        assert info.value.code == "seal.unknown_kid"


def certificate(signer: PrivateKeySigner, *, iss: str = "zhuji", at: float = NOW) -> str:
    return seal(signer, orjson.dumps({"iss": iss, "iat": int(at)}), signed_at=at)


def test_a_seal_by_an_active_key_verifies(resolver: TrustListResolver) -> None:
    verified = verify_seal(certificate(ZHUJI_ACTIVE), resolver, now=NOW)
    assert (verified.node, verified.kid) == (ZHUJI, ZHUJI_ACTIVE.kid)
    shanghai = verify_seal(certificate(SHANGHAI_ACTIVE, iss="shanghai"), resolver, now=NOW)
    assert shanghai.node == SHANGHAI


def test_a_seal_by_a_retired_key_still_verifies(resolver: TrustListResolver) -> None:
    token = certificate(ZHUJI_RETIRED, at=NOW - 45 * DAY)
    assert verify_seal(token, resolver, now=NOW).kid == ZHUJI_RETIRED.kid


def test_a_seal_by_a_revoked_key_fails(resolver: TrustListResolver) -> None:
    with pytest.raises(SealError) as info:
        verify_seal(certificate(ZHUJI_REVOKED), resolver, now=NOW)
    assert info.value.code == "seal.key_revoked"
    assert info.value.indication is Indication.FAILED


def test_a_seal_claiming_to_predate_a_revocation_is_unproven(resolver: TrustListResolver) -> None:
    with pytest.raises(SealIndeterminate) as info:
        verify_seal(certificate(ZHUJI_REVOKED, at=REVOKED_AT - 60), resolver, now=NOW)
    assert info.value.code == "seal.revocation_unproven"


def test_a_seal_by_a_next_key_fails(resolver: TrustListResolver) -> None:
    with pytest.raises(SealError) as info:
        verify_seal(certificate(ZHUJI_NEXT), resolver, now=NOW)
    assert info.value.code == "seal.key_not_active"


def test_a_nodes_key_cannot_seal_for_another_node(resolver: TrustListResolver) -> None:
    with pytest.raises(SealError) as info:
        verify_seal(certificate(ZHUJI_ACTIVE, iss="shanghai"), resolver, now=NOW)
    assert info.value.code == "seal.bad_claims"


def test_resolver_finds_nodes_and_departments(resolver: TrustListResolver) -> None:
    assert resolver.node("zhuji").region == "330681"
    assert [n.id for n in resolver.nodes()] == [n.id for n in FED.nodes]
    config_node, config_dept = FED.department("zhuji-civil-affairs")
    found = resolver.department_by_credit_code(config_dept.credit_code)
    assert found is not None
    assert (found[0].id, found[1].id) == (config_node.id, config_dept.id)
    assert resolver.department_by_credit_code("91330681MA2BXXXXXX") is None


def test_resolver_refuses_an_unknown_node(resolver: TrustListResolver) -> None:
    with pytest.raises(NotFoundError) as info:
        resolver.node("atlantis")
    assert info.value.code == "trust.unknown_node"


# --- the cache --------------------------------------------------------------------------------


def test_cache_accepts_a_list_and_persists_it(tmp_path: Path) -> None:
    path = tmp_path / "trust-list.jws"
    cache = TrustListCache(ROOT, path=path, now=NOW)
    assert (cache.token, cache.seq) == (None, None)
    token = signed(seq=1)
    assert cache.offer(token, now=NOW).seq == 1
    assert cache.current(NOW) == build(seq=1)
    assert cache.token == token
    assert path.read_text() == token
    reloaded = TrustListCache(ROOT, path=path, now=NOW)
    assert (reloaded.token, reloaded.current(NOW)) == (token, build(seq=1))
    assert reloaded.resolver(NOW).key_for(ZHUJI_ACTIVE.kid).node == ZHUJI


def test_cache_takes_newer_lists_and_refuses_older_ones(tmp_path: Path) -> None:
    cache = TrustListCache(ROOT, path=tmp_path / "trust-list.jws", now=NOW)
    cache.offer(signed(seq=2), now=NOW)
    newer = signed(seq=3, now=NOW + 60)
    assert cache.offer(newer, now=NOW + 60).seq == 3
    with pytest.raises(SealError) as info:
        cache.offer(signed(seq=2, now=NOW + 120), now=NOW + 120)
    assert info.value.code == "trust.rollback"
    assert (cache.seq, cache.token) == (3, newer)
    assert (tmp_path / "trust-list.jws").read_text() == newer


def test_cache_accepts_the_same_list_again(tmp_path: Path) -> None:
    cache = TrustListCache(ROOT, now=NOW)
    token = signed(seq=5)
    first = cache.offer(token, now=NOW)
    assert cache.offer(token, now=NOW + 10) is first


def test_cache_refuses_a_different_list_with_the_same_seq(tmp_path: Path) -> None:
    path = tmp_path / "trust-list.jws"
    cache = TrustListCache(ROOT, path=path, now=NOW)
    token = signed(seq=5)
    cache.offer(token, now=NOW)
    with pytest.raises(SealError) as info:
        cache.offer(signed(seq=5, now=NOW + 10), now=NOW + 10)
    assert (info.value.code, info.value.step) == ("trust.fork", "sequence")
    assert not isinstance(info.value, SealIndeterminate)
    assert (cache.token, path.read_text()) == (token, token)


def test_cache_keeps_its_list_when_offered_a_bad_one(tmp_path: Path) -> None:
    path = tmp_path / "trust-list.jws"
    cache = TrustListCache(ROOT, path=path, now=NOW)
    token = signed(seq=1)
    cache.offer(token, now=NOW)
    with pytest.raises(SealError) as info:
        cache.offer(sign_trust_list(build(seq=2), OTHER_ROOT_SIGNER, now=NOW), now=NOW)
    assert info.value.code == "trust.unknown_kid"
    assert (cache.seq, path.read_text()) == (1, token)


def test_cache_accepts_nothing_it_cannot_save(tmp_path: Path) -> None:
    cache = TrustListCache(ROOT, path=tmp_path / "missing-dir" / "trust-list.jws", now=NOW)
    with pytest.raises(StorageError) as info:
        cache.offer(signed(), now=NOW)
    assert info.value.code == "trust.storage"
    assert (cache.seq, cache.token) == (None, None)


def test_cache_without_a_list_is_unavailable() -> None:
    cache = TrustListCache(ROOT, now=NOW)
    for call in (cache.current, cache.resolver):
        with pytest.raises(SealIndeterminate) as info:
            call(NOW)
        assert info.value.code == "trust.unavailable"
    assert cache.needs_refresh(NOW)


def test_cache_refuses_to_trust_an_expired_list() -> None:
    cache = TrustListCache(ROOT, now=NOW)
    cache.offer(signed(), now=NOW)
    end = NOW + DEFAULT_VALIDITY
    assert cache.current(end - 1).seq == 1
    for call in (cache.current, cache.resolver):
        with pytest.raises(SealIndeterminate) as info:
            call(end)
        assert info.value.code == "trust.expired"


def test_cache_needs_refresh_when_a_quarter_of_the_validity_is_left() -> None:
    cache = TrustListCache(ROOT, now=NOW)
    cache.offer(signed(), now=NOW)
    refresh_at = NOW + DEFAULT_VALIDITY * (1 - REFRESH_MARGIN)
    assert not cache.needs_refresh(NOW)
    assert not cache.needs_refresh(refresh_at - 1)
    assert cache.needs_refresh(refresh_at)
    assert cache.needs_refresh(NOW + DEFAULT_VALIDITY)


def test_a_restart_after_expiry_keeps_the_rollback_floor(tmp_path: Path) -> None:
    path = tmp_path / "trust-list.jws"
    TrustListCache(ROOT, path=path, now=NOW).offer(signed(seq=4), now=NOW)
    later = NOW + 2 * DEFAULT_VALIDITY
    cache = TrustListCache(ROOT, path=path, now=later)
    assert cache.seq == 4
    assert cache.needs_refresh(later)
    with pytest.raises(SealIndeterminate) as expired:
        cache.current(later)
    assert expired.value.code == "trust.expired"
    with pytest.raises(SealError) as rollback:
        cache.offer(signed(seq=3, now=later), now=later)
    assert rollback.value.code == "trust.rollback"
    assert cache.offer(signed(seq=5, now=later), now=later).seq == 5


def test_cache_reloads_a_file_with_a_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "trust-list.jws"
    path.write_text(signed(seq=2) + "\n")
    assert read_trust_list_file(path) == signed(seq=2)
    assert TrustListCache(ROOT, path=path, now=NOW).seq == 2


def test_cache_refuses_a_tampered_file(tmp_path: Path) -> None:
    path = tmp_path / "trust-list.jws"
    header, _, signature = signed().split(".")
    other = b64url_encode(orjson.dumps(build(seq=99).to_json(), option=orjson.OPT_SORT_KEYS))
    path.write_text(f"{header}.{other}.{signature}")
    with pytest.raises(SealError) as info:
        TrustListCache(ROOT, path=path, now=NOW)
    assert info.value.code == "trust.bad_signature"


def test_cache_refuses_a_file_that_is_not_ascii(tmp_path: Path) -> None:
    path = tmp_path / "trust-list.jws"
    path.write_bytes("信任列表".encode())
    with pytest.raises(SealError) as info:
        TrustListCache(ROOT, path=path, now=NOW)
    assert (info.value.code, info.value.step) == ("trust.malformed", "format")


def test_cache_reports_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        TrustListCache(ROOT, path=tmp_path, now=NOW)  # a directory
    assert info.value.code == "trust.unreadable"


def test_require_active_key_names_why_a_node_is_not_yet_trusted() -> None:
    signer = PrivateKeySigner(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))

    def keys(state: KeyState, node: str = "zhuji") -> StaticKeyResolver:
        key = VerificationKey(
            node=NodeId(node),
            kid=KeyId(signer.kid),
            alg=signer.alg,
            public_key=signer.public_key,
            state=state,
            not_before=0.0,
            not_after=4e9,
            revoked_at=None,
            verify_allowed=True,
        )
        return StaticKeyResolver({key.kid: key})

    zhuji, kid = NodeId("zhuji"), KeyId(signer.kid)
    require_active_key(keys(KeyState.ACTIVE), zhuji, kid)
    for resolver in (keys(KeyState.NEXT), keys(KeyState.RETIRED), keys(KeyState.ACTIVE, "linquan")):
        with pytest.raises(SealIndeterminate) as caught:
            require_active_key(resolver, zhuji, kid)
        assert caught.value.code == "trust.key_not_active"
    with pytest.raises(SealIndeterminate) as unknown:
        require_active_key(StaticKeyResolver({}), zhuji, kid)
    assert unknown.value.code == "seal.unknown_kid"

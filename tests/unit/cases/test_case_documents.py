"""The sealed documents of a case: the window's receipt and each transition's event.

(Named ``test_case_documents`` beside ``tests/unit/certificates/test_documents.py``: the
suite imports test modules by their base name.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jws as jwcrypto_jws

from gateway._internal.wire import b64url_decode, b64url_encode
from gateway.cases.documents import (
    EVENT_TYP,
    RECEIPT_TYP,
    CaseEvent,
    seal_event,
    seal_receipt,
    verify_event,
    verify_receipt,
)
from gateway.cases.lifecycle import Action, CaseState, Role
from gateway.clock import FixedClock
from gateway.crypto.jwks import StaticKeyResolver
from gateway.crypto.keystore import KeyStore
from gateway.crypto.seals import SEAL_TYP, sign_compact, verify_compact
from gateway.errors import SealError
from gateway.ids import NodeId

NOW = 1_795_507_200.0


@pytest.fixture
def zhuji(tmp_path: Path) -> KeyStore:
    return KeyStore.open(tmp_path, NodeId("zhuji"), clock=FixedClock(NOW))


@pytest.fixture
def shanghai(tmp_path: Path) -> KeyStore:
    return KeyStore.open(tmp_path, NodeId("shanghai"), clock=FixedClock(NOW))


@pytest.fixture
def keys(zhuji: KeyStore, shanghai: KeyStore) -> StaticKeyResolver:
    return StaticKeyResolver({**zhuji.verification_keys(), **shanghai.verification_keys()})


def receipt_claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "case": "330681-20261124-000001",
        "matter": {"id": "maternity-benefit", "name": "生育保险待遇核定与支付"},
        "channel": "window",
        "window": {"node": "zhuji", "department": "zhuji-service-center"},
        "owner": {"node": "shanghai", "department": "shanghai-healthcare-security"},
        "applicant": "ab" * 32,
        "materials": [{"id": "resident-id", "name": "居民身份证", "form": "scan", "level": "B"}],
        "received_at": "2026-11-24T08:00:00Z",
        "identity_checked_by": "zj-window-0421",
    }
    claims.update(changes)
    return claims


def event(**changes: Any) -> CaseEvent:
    fields: dict[str, Any] = {
        "id": "0123456789abcdef0123456789abcdef",
        "case": "330681-20261124-000001",
        "seq": 3,
        "action": Action.REQUEST_CORRECTION,
        "source": CaseState.PENDING_ACCEPTANCE,
        "target": CaseState.AWAITING_CORRECTION,
        "node": "shanghai",
        "department": "shanghai-healthcare-security",
        "actor": "shanghai-healthcare-security",
        "role": Role.OWNER,
        "at": NOW,
        "reason": None,
        "details": {"items": [{"material": "medical-invoices", "reason": "不清晰"}]},
    }
    fields.update(changes)
    return CaseEvent(**fields)


def resealed(store: KeyStore, token: str, change: Any, typ: str = EVENT_TYP) -> str:
    """The token's claims changed by ``change(claims)``, sealed again by ``store``."""
    claims = orjson.loads(b64url_decode(token.split(".")[1]))
    change(claims)
    return sign_compact(store.signer(), orjson.dumps(claims), typ=typ, signed_at=NOW)


def test_a_receipt_verifies_and_carries_its_claims(
    zhuji: KeyStore, keys: StaticKeyResolver
) -> None:
    token = seal_receipt(zhuji.signer(), receipt_claims(), at=NOW)
    verified = verify_receipt(token, keys, now=NOW)
    assert verified.node == "zhuji"
    assert verified.payload == {**receipt_claims(), "iss": "zhuji", "iat": int(NOW)}
    assert verified.header["typ"] == RECEIPT_TYP


def test_a_receipt_verifies_with_an_independent_jose_library(zhuji: KeyStore) -> None:
    token = seal_receipt(zhuji.signer(), receipt_claims(), at=NOW)
    published = orjson.dumps(zhuji.jwks()).decode()  # /.well-known/jwks.json
    key = jwcrypto_jwk.JWKSet.from_json(published).get_key(zhuji.signer().kid)
    assert key is not None
    verifier = jwcrypto_jws.JWS()
    verifier.deserialize(token)
    verifier.verify(key, alg=zhuji.signer().alg)
    assert orjson.loads(verifier.payload)["case"] == "330681-20261124-000001"
    assert verifier.jose_header["typ"] == "case-receipt+jws"
    # and a changed receipt does not
    head, payload, sig = token.split(".")
    claims = orjson.loads(b64url_decode(payload))
    claims["materials"][0]["level"] = "A"
    forged = jwcrypto_jws.JWS()
    forged.deserialize(f"{head}.{b64url_encode(orjson.dumps(claims))}.{sig}")
    with pytest.raises(jwcrypto_jws.InvalidJWSSignature):
        forged.verify(key, alg=zhuji.signer().alg)


def test_a_receipt_sealed_by_another_node_than_its_window(
    shanghai: KeyStore, keys: StaticKeyResolver
) -> None:
    token = seal_receipt(shanghai.signer(), receipt_claims(), at=NOW)  # iss: zhuji
    with pytest.raises(SealError) as caught:
        verify_receipt(token, keys, now=NOW)
    assert caught.value.code == "case.bad_seal"
    # iss set to the sealing node, but the window is still zhuji's
    token = resealed(shanghai, token, lambda c: c.update(iss="shanghai"), typ=RECEIPT_TYP)
    with pytest.raises(SealError) as caught:
        verify_receipt(token, keys, now=NOW)
    assert caught.value.code == "case.bad_seal"


def test_a_tampered_receipt_is_refused(zhuji: KeyStore, keys: StaticKeyResolver) -> None:
    head, payload, sig = seal_receipt(zhuji.signer(), receipt_claims(), at=NOW).split(".")
    claims = orjson.loads(b64url_decode(payload))
    claims["owner"]["node"] = "linquan"
    with pytest.raises(SealError) as caught:
        verify_receipt(f"{head}.{b64url_encode(orjson.dumps(claims))}.{sig}", keys, now=NOW)
    assert caught.value.code.startswith("seal.")


def test_receipts_events_and_certificates_do_not_pass_for_each_other(
    zhuji: KeyStore, shanghai: KeyStore, keys: StaticKeyResolver
) -> None:
    receipt = seal_receipt(zhuji.signer(), receipt_claims(), at=NOW)
    sealed = seal_event(shanghai.signer(), event()).token
    certificate = sign_compact(zhuji.signer(), b'{"iss": "zhuji"}', typ=SEAL_TYP, signed_at=NOW)
    for token in (receipt, certificate):
        with pytest.raises(SealError) as caught:
            verify_event(token, keys, now=NOW)
        assert caught.value.code == "seal.wrong_typ"
    for token in (sealed, certificate):
        with pytest.raises(SealError) as caught:
            verify_receipt(token, keys, now=NOW)
        assert caught.value.code == "seal.wrong_typ"
    with pytest.raises(SealError):
        verify_compact(receipt, keys, typ=SEAL_TYP, now=NOW)


def test_an_event_round_trips(shanghai: KeyStore, keys: StaticKeyResolver) -> None:
    original = seal_event(shanghai.signer(), event(reason="材料不全"))
    assert original.token.count(".") == 2
    verified = verify_event(original.token, keys, now=NOW)
    assert verified == original
    assert verified.to_json()["event"] == original.token
    claims = verified.claims()
    assert (claims["from"], claims["to"], claims["seq"]) == (
        "pending_acceptance",
        "awaiting_correction",
        3,
    )
    assert claims["at"] == "2026-11-24T08:00:00Z"


def test_an_event_sealed_by_another_node_than_it_names(
    zhuji: KeyStore, keys: StaticKeyResolver
) -> None:
    # zhuji seals an event claiming to be shanghai's
    token = seal_event(zhuji.signer(), event()).token
    with pytest.raises(SealError) as caught:
        verify_event(token, keys, now=NOW)
    assert (caught.value.status, caught.value.code) == (400, "case.bad_event")


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c.update(jti="not-hex"),
        lambda c: c.update(jti="0" * 31),
        lambda c: c.pop("case"),
        lambda c: c.update(case=""),
        lambda c: c.update(case="x" * 300),
        lambda c: c.update(seq=0),
        lambda c: c.update(seq="3"),
        lambda c: c.update(seq=True),
        lambda c: c.update(seq=10_001),
        lambda c: c.update(action="teleport"),
        lambda c: c.update(**{"from": "limbo"}),
        lambda c: c.update(to=None),
        lambda c: c.update(role="king"),
        lambda c: c.update(at="yesterday"),
        lambda c: c.update(actor=5),
        lambda c: c.update(department=5),
        lambda c: c.update(reason=["a"]),
        lambda c: c.update(details=None),
        lambda c: c.pop("details"),
    ],
)
def test_a_malformed_event_is_refused(
    shanghai: KeyStore, keys: StaticKeyResolver, change: Any
) -> None:
    token = resealed(shanghai, seal_event(shanghai.signer(), event()).token, change)
    with pytest.raises(SealError) as caught:
        verify_event(token, keys, now=NOW)
    assert caught.value.code == "case.bad_event"


def test_an_event_from_an_unknown_key_is_not_verified(tmp_path: Path) -> None:
    stranger = KeyStore.open(tmp_path / "other", NodeId("shanghai"), clock=FixedClock(NOW))
    token = seal_event(stranger.signer(), event()).token
    own = KeyStore.open(tmp_path, NodeId("shanghai"), clock=FixedClock(NOW))
    with pytest.raises(SealError) as caught:
        verify_event(token, StaticKeyResolver(own.verification_keys()), now=NOW)
    assert caught.value.code == "seal.unknown_kid"

"""Consent grants (用证授权): issuing, and every refusal with its own code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway._internal.wire import b64url_decode, b64url_encode
from gateway.clock import FixedClock
from gateway.crypto.jwks import KeyState, StaticKeyResolver, VerificationKey
from gateway.crypto.keystore import KeyStore
from gateway.crypto.seals import PrivateKeySigner, sign_compact
from gateway.errors import Forbidden, InputError
from gateway.ids import DepartmentId, NodeId
from gateway.sso.consent import (
    CLOCK_SKEW,
    CONSENT_TYP,
    ConsentGrant,
    ConsentVerifier,
    issue_consent,
)
from gateway.sso.tokens import issue_access_token

NOW = 1_795_507_200.0  # 2026-11-24T08:00:00Z
UNTIL = NOW + 86_400
ISSUER = "http://idp.test"
HOLDER = "hd-5f1c0a"
DEPT = DepartmentId("zhuji-civil-affairs")
MATTER = "marriage-registration"
TYPES = ("resident_id", "household_register")

IDP_KEY = PrivateKeySigner(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
FOREIGN = PrivateKeySigner(Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33))))

KEYS = StaticKeyResolver(
    {
        IDP_KEY.kid: VerificationKey(
            node=NodeId("idp"),
            kid=IDP_KEY.kid,
            alg=IDP_KEY.alg,
            public_key=IDP_KEY.public_key,
            state=KeyState.ACTIVE,
            not_before=NOW - 86_400,
            not_after=NOW + 86_400,
            revoked_at=None,
            verify_allowed=True,
        )
    }
)
VERIFIER = ConsentVerifier(KEYS, issuer=ISSUER)


def grant(signer: PrivateKeySigner = IDP_KEY, **changes: Any) -> str:
    args: dict[str, Any] = {
        "issuer": ISSUER,
        "holder_digest": HOLDER,
        "department": DEPT,
        "matter": MATTER,
        "types": TYPES,
        "now": NOW,
        "until": UNTIL,
        "jti": "c-1",
    }
    args.update(changes)
    return issue_consent(signer, **args)


def verify(token: str, **changes: Any) -> ConsentGrant:
    args: dict[str, Any] = {
        "holder_digest": HOLDER,
        "department": DEPT,
        "matter": MATTER,
        "cert_type": "household_register",
        "now": NOW + 60,
    }
    args.update(changes)
    return VERIFIER.verify(token, **args)


def refused(token: str, code: str, **changes: Any) -> Forbidden:
    with pytest.raises(Forbidden) as info:
        verify(token, **changes)
    assert (info.value.code, info.value.status) == (code, 403)
    return info.value


def raw_claims(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "iss": ISSUER,
        "sub": HOLDER,
        "aud": DEPT,
        "matter": MATTER,
        "types": list(TYPES),
        "iat": int(NOW),
        "exp": int(UNTIL),
        "jti": "c-1",
    }
    body.update(changes)
    return body


def signed(body: dict[str, Any], typ: str = CONSENT_TYP) -> str:
    return sign_compact(IDP_KEY, orjson.dumps(body), typ=typ, signed_at=NOW)


def test_round_trip() -> None:
    assert verify(grant()) == ConsentGrant(
        issuer=ISSUER,
        holder_digest=HOLDER,
        department=DEPT,
        matter=MATTER,
        types=TYPES,
        issued_at=int(NOW),
        expires_at=int(UNTIL),
        jti="c-1",
    )


def test_key_store_round_trip(tmp_path: Path) -> None:
    store = KeyStore.open(tmp_path, NodeId("idp"), clock=FixedClock(NOW), default_alg="ES256")
    token = grant(store.signer())
    result = ConsentVerifier(store, issuer=ISSUER).verify(
        token,
        holder_digest=HOLDER,
        department=DEPT,
        matter=MATTER,
        cert_type="resident_id",
        now=NOW,
    )
    assert result.types == TYPES


def test_grant_never_carries_more_than_the_digest() -> None:
    payload = orjson.loads(b64url_decode(grant().split(".")[1]))
    assert set(payload) == {"iss", "sub", "aud", "matter", "types", "iat", "exp", "jti"}
    assert payload["sub"] == HOLDER


@pytest.mark.parametrize(
    "changes",
    [{"types": ()}, {"types": ("a", "a")}, {"until": NOW}, {"until": NOW - 1}],
)
def test_issue_refuses_bad_requests(changes: dict[str, Any]) -> None:
    with pytest.raises(InputError) as info:
        grant(**changes)
    assert info.value.code == "consent.bad_request"


# --- tampered, foreign, malformed ---------------------------------------------------------


def test_tampered() -> None:
    header, _, signature = grant().split(".")
    forged = b64url_encode(orjson.dumps(raw_claims(types=[*TYPES, "marriage"])))
    error = refused(f"{header}.{forged}.{signature}", "consent.invalid")
    assert error.log_detail == "seal.bad_signature"
    assert getattr(error.__cause__, "code", None) == "seal.bad_signature"


def test_foreign_idp_key() -> None:
    error = refused(grant(FOREIGN), "consent.invalid")
    assert error.log_detail == "seal.unknown_kid"


def test_access_token_is_not_a_grant() -> None:
    token = issue_access_token(
        IDP_KEY,
        issuer=ISSUER,
        audience=DEPT,
        subject=HOLDER,
        client_id="idp",
        scopes=(),
        department=None,
        region=None,
        now=NOW,
        jti="t-1",
    )
    error = refused(token, "consent.invalid")
    assert error.log_detail == "seal.wrong_typ"


def test_oversized() -> None:
    error = refused(signed(raw_claims(pad="x" * 9000)), "consent.invalid")
    assert error.log_detail == "token.too_large"


def test_garbage() -> None:
    error = refused("not.a.jws", "consent.invalid")
    assert error.log_detail is not None
    assert error.log_detail.startswith("seal.")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("iss", 7),
        ("sub", ""),
        ("aud", [DEPT]),
        ("matter", None),
        ("jti", 1),
        ("types", "household_register"),
        ("types", []),
        ("types", ["household_register", 7]),
        ("iat", "1795507200"),
        ("exp", True),
        ("exp", 1.5),
    ],
)
def test_malformed_claims(name: str, value: Any) -> None:
    refused(signed(raw_claims(**{name: value})), "consent.invalid")


def test_missing_exp() -> None:
    body = raw_claims()
    del body["exp"]
    refused(signed(body), "consent.invalid")


# --- in force ---------------------------------------------------------------------------------


def test_wrong_issuer() -> None:
    refused(signed(raw_claims(iss="http://other-idp.test")), "consent.wrong_issuer")


def test_expired() -> None:
    token = grant()
    assert verify(token, now=UNTIL + CLOCK_SKEW).jti == "c-1"
    refused(token, "consent.expired", now=UNTIL + CLOCK_SKEW + 1)


def test_not_yet_valid() -> None:
    token = signed(raw_claims(iat=int(NOW) + CLOCK_SKEW + 61))
    refused(token, "consent.not_yet_valid", now=NOW)


# --- bound to the request ---------------------------------------------------------------------


def test_wrong_holder() -> None:
    refused(grant(), "consent.wrong_holder", holder_digest="hd-someone-else")


def test_wrong_department() -> None:
    refused(grant(), "consent.wrong_department", department=DepartmentId("linquan-public-security"))


def test_wrong_matter() -> None:
    refused(grant(), "consent.wrong_matter", matter="household-transfer")


def test_type_not_granted() -> None:
    refused(grant(), "consent.type_not_granted", cert_type="marriage")

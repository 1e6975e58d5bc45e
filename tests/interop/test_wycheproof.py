"""Every Wycheproof EdDSA and ECDSA-P256 (P1363) vector through ``seals.verify_signature``."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.crypto.jwks import Alg, PublicKey
from gateway.crypto.seals import verify_signature
from gateway.errors import SealError

VECTORS = Path(__file__).parents[1] / "vectors" / "wycheproof"


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return data


def _ed25519_key(group: dict[str, Any]) -> PublicKey:
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(group["publicKey"]["pk"]))


def _p256_key(group: dict[str, Any]) -> PublicKey:
    point = bytes.fromhex(group["publicKey"]["uncompressed"])
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)


def _run(alg: Alg, data: dict[str, Any], load_key: Any) -> Counter[str]:
    """Run every case; return counts by outcome. Mismatches are collected, then asserted."""
    counts: Counter[str] = Counter()
    mismatches: list[str] = []
    for group in data["testGroups"]:
        try:
            key = load_key(group)
        except ValueError:
            key = None
        for case in group["tests"]:
            where = f"tcId {case['tcId']} ({case['comment'] or ', '.join(case['flags'])})"
            if key is None:
                # Only an invalid case may come with a key the library refuses to load.
                if case["result"] == "valid":
                    mismatches.append(f"{where}: valid case, key failed to load")
                counts[f"{case['result']}/key-rejected"] += 1
                continue
            try:
                verify_signature(alg, key, bytes.fromhex(case["msg"]), bytes.fromhex(case["sig"]))
            except SealError as exc:
                if exc.code != "seal.bad_signature":
                    mismatches.append(f"{where}: raised code {exc.code}")
                outcome = "rejected"
            else:
                outcome = "accepted"
            counts[f"{case['result']}/{outcome}"] += 1
            if (case["result"], outcome) in {("valid", "rejected"), ("invalid", "accepted")}:
                mismatches.append(f"{where}: expected {case['result']}, {outcome}")
    assert mismatches == []
    return counts


@pytest.mark.parametrize(
    ("alg", "filename", "load_key", "expected"),
    [
        ("EdDSA", "ed25519_test.json", _ed25519_key, {"valid": 88, "invalid": 63}),
        (
            "ES256",
            "ecdsa_secp256r1_sha256_p1363_test.json",
            _p256_key,
            {"valid": 173, "invalid": 89},
        ),
    ],
)
def test_wycheproof(
    alg: Alg, filename: str, load_key: Any, expected: dict[str, int], capsys: Any
) -> None:
    data = _load(filename)
    counts = _run(alg, data, load_key)
    with capsys.disabled():
        print(f"\nwycheproof {filename}: {dict(sorted(counts.items()))}")
    # Every case ran: the file's own total, and each expected result was met.
    assert sum(counts.values()) == data["numberOfTests"]
    assert counts["valid/accepted"] == expected["valid"]
    assert counts["invalid/rejected"] + counts["invalid/key-rejected"] == expected["invalid"]

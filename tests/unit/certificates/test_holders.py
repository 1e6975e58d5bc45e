from __future__ import annotations

import hashlib
import hmac

import pytest

from gateway.certificates.holders import MIN_SECRET_BYTES, HolderSecret, holder_digest
from gateway.errors import ConfigError, InputError

SECRET = b"tongban-test-holder-secret-0001"
ID_NUMBER = "11010519491231002X"


def test_digest_is_hmac_sha256_of_type_colon_id() -> None:
    expected = hmac.new(SECRET, b"111:" + ID_NUMBER.encode(), hashlib.sha256).hexdigest()
    assert holder_digest(SECRET, "111", ID_NUMBER) == expected


def test_digest_is_stable_across_releases() -> None:
    # Every node and the national catalog must compute the same digest: pin the value.
    assert holder_digest(SECRET, "111", ID_NUMBER) == (
        "cf81aeaf6e91d752073de5a706b03550afd82b8fa85f63734b59d18c45acb477"
    )


def test_digest_is_lower_case_hex_and_hides_the_id() -> None:
    digest = holder_digest(SECRET, "111", ID_NUMBER)
    assert len(digest) == 64
    assert digest == digest.lower()
    int(digest, 16)
    assert ID_NUMBER not in digest


def test_digest_depends_on_type_id_and_secret() -> None:
    base = holder_digest(SECRET, "111", ID_NUMBER)
    assert holder_digest(SECRET, "001", ID_NUMBER) != base
    assert holder_digest(SECRET, "111", "110105194912310029") != base
    assert holder_digest(SECRET + b"!", "111", ID_NUMBER) != base


@pytest.mark.parametrize(("id_type", "holder_id"), [("", ID_NUMBER), ("1:1", "x"), ("111", "")])
def test_ambiguous_or_empty_input_is_refused(id_type: str, holder_id: str) -> None:
    with pytest.raises(InputError) as info:
        holder_digest(SECRET, id_type, holder_id)
    assert info.value.code == "input.invalid"


def test_short_secret_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        holder_digest(b"x" * (MIN_SECRET_BYTES - 1), "111", ID_NUMBER)
    assert info.value.code == "config.holder_secret"


def test_secret_wrapper_hides_its_bytes() -> None:
    secret = HolderSecret(SECRET)
    for shown in (repr(secret), str(secret), f"{secret}", f"{secret!r}", repr([secret])):
        assert SECRET.decode() not in shown
        assert "*" in shown
    assert secret.reveal() == SECRET


def test_secret_wrapper_digests_like_the_function() -> None:
    assert HolderSecret(SECRET).digest("111", ID_NUMBER) == holder_digest(SECRET, "111", ID_NUMBER)


def test_secret_wrapper_compares_by_value() -> None:
    assert HolderSecret(SECRET) == HolderSecret(SECRET)
    assert HolderSecret(SECRET) != HolderSecret(SECRET + b"!")
    assert len({HolderSecret(SECRET), HolderSecret(SECRET)}) == 1
    assert HolderSecret(SECRET) != SECRET


def test_secret_wrapper_refuses_a_short_key() -> None:
    with pytest.raises(ConfigError) as info:
        HolderSecret(b"short")
    assert info.value.code == "config.holder_secret"

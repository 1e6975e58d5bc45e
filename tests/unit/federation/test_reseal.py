"""Re-sealing a node's live certificates away from a revoked key, resumably."""

from __future__ import annotations

import pytest
from conftest import household_request

from gateway.certificates.status import StatusAction
from gateway.crypto.jwks import KeyState
from gateway.errors import ConflictError, StorageError
from gateway.federation.keyrotation import RESEAL_BATCH, reseal
from gateway.ids import CertificateId, DepartmentId, KeyId, NodeId
from gateway.services.node import NodeService
from gateway.sso.auth import Principal

CLERK = Principal(
    subject="zhuji-public-security",
    client_id="zhuji-public-security",
    scopes=frozenset({"cert:issue", "cert:read", "cert:status"}),
    department=DepartmentId("zhuji-public-security"),
    node=NodeId("zhuji"),
)


def issue_many(service: NodeService, n: int) -> list[CertificateId]:
    return [service.issue(CLERK, household_request()).certificate.id for _ in range(n)]


def rotate_locally(service: NodeService) -> KeyId:
    old = service.keys.active()
    new = service.keys.add_key(state=KeyState.NEXT)
    service.keys.set_state(new.kid, KeyState.ACTIVE)
    service.keys.set_state(old.kid, KeyState.RETIRED)
    return old.kid


def test_reseal_moves_live_certificates_to_the_active_key(service: NodeService) -> None:
    ids = issue_many(service, 5)
    service.registry.apply(ids[0], StatusAction.REVOKE, reason="test", at=service.clock.now())
    old = rotate_locally(service)
    assert reseal(service, old) == 4  # the revoked certificate is left alone
    for cert_id in ids[1:]:
        stored = service.registry.get(cert_id)
        assert stored.kid == service.keys.active().kid
        report, _ = service.verifier.report(stored.seal)
        assert report.indication.value == "PASSED"
    assert service.registry.count_sealed_with(old) == 0
    assert reseal(service, old) == 0  # nothing left: idempotent


def test_an_interrupted_reseal_resumes_where_it_stopped(
    service: NodeService, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = issue_many(service, RESEAL_BATCH + 7)
    old = rotate_locally(service)
    original = service.registry.reseal
    calls = 0

    def crash_on_second_batch(*args: object, **kwargs: object) -> int:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise StorageError("disk gone", code="registry.storage")
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(service.registry, "reseal", crash_on_second_batch)
    with pytest.raises(StorageError):
        reseal(service, old)
    assert service.registry.count_sealed_with(old) == 7  # the first batch was committed
    monkeypatch.setattr(service.registry, "reseal", original)
    assert reseal(service, old) == 7
    assert {service.registry.get(i).kid for i in ids} == {service.keys.active().kid}


def test_resealing_away_from_the_active_key_is_refused(service: NodeService) -> None:
    issue_many(service, 1)
    with pytest.raises(ConflictError) as info:
        reseal(service, service.keys.active().kid)
    assert info.value.code == "keys.state"

"""The case store: numbering and idempotency, compare-and-set updates, listings, the outbox
in order per peer, owed audit records, webhook subscriptions and deliveries; on both
backends (SQLite, and a real PostgreSQL), and two replicas over one PostgreSQL database.

(Named ``test_case_store``: ``test_cases`` is the integration test's base name.)"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from postgres import PostgresServer

from gateway.cases.case import Applicant, Case, Channel, Party
from gateway.cases.lifecycle import CaseState
from gateway.certificates.matters import Delivery
from gateway.errors import ConflictError, NotFoundError
from gateway.storage.cases import (
    CaseWrite,
    PostgresCaseStore,
    SqlCaseStore,
    SqliteCaseStore,
    StoredEvent,
    Subscription,
)

NOW = 1_795_507_200.0
DIGEST = "ab" * 32


def a_case(
    case_id: str = "330681-20261124-000001",
    *,
    state: CaseState = CaseState.RECEIVED,
    owner: str = "shanghai-healthcare-security",
    window: str = "zhuji-service-center",
    digest: str = DIGEST,
    seq: int = 0,
    updated_at: float = NOW,
) -> Case:
    return Case(
        id=case_id,
        matter="maternity-benefit",
        channel=Channel.WINDOW,
        state=state,
        window=Party("zhuji", window),
        owner=Party("shanghai", owner),
        applicant=Applicant("111", "31010419950312123X", "陈思远", digest),
        delivery=Delivery.ONLINE,
        received_at=NOW,
        due_at=NOW + 86_400,
        receipt="a.b.c",
        materials=(),
        seq=seq,
        updated_at=updated_at,
    )


def event(n: int, case_id: str = "330681-20261124-000001") -> StoredEvent:
    return StoredEvent(f"{case_id[-6:]}{n:026x}", n, f"token-{n}")


Opener = Callable[[], SqlCaseStore]
"""Opens another store object on the same database (another process, or replica)."""


@pytest.fixture(params=["sqlite", "postgresql"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """The contract tests run on both backends (SQLite, and a real PostgreSQL)."""
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("pg_server")
        with server.database() as dsn:
            yield lambda: PostgresCaseStore(dsn)
        return
    yield lambda: SqliteCaseStore(tmp_path / "cases.sqlite3")


@pytest.fixture
def store(opener: Opener) -> Iterator[SqlCaseStore]:
    with opener() as opened:
        yield opened


def create(store: SqlCaseStore, day: str = "20261124") -> Case:
    def build(seq: int) -> CaseWrite:
        return CaseWrite(a_case(f"330681-{day}-{seq:06d}"))

    case, created = store.create(day, build, idempotency=None)
    assert created
    return case


# --- numbering and idempotency -------------------------------------------------------------


def test_each_day_numbers_its_cases_from_one(store: SqlCaseStore) -> None:
    assert create(store).id == "330681-20261124-000001"
    assert create(store).id == "330681-20261124-000002"
    assert create(store, "20261125").id == "330681-20261125-000001"
    assert create(store).id == "330681-20261124-000003"
    assert store.get("330681-20261124-000002").state is CaseState.RECEIVED


def test_a_failed_build_writes_nothing_and_uses_no_number(store: SqlCaseStore) -> None:
    def broken(seq: int) -> CaseWrite:
        raise ConflictError("no")

    with pytest.raises(ConflictError):
        store.create("20261124", broken, idempotency=None)
    assert create(store).id == "330681-20261124-000001"


def test_the_same_idempotency_key_answers_the_same_case(store: SqlCaseStore) -> None:
    built: list[int] = []

    def build(seq: int) -> CaseWrite:
        built.append(seq)
        write = CaseWrite(a_case(f"330681-20261124-{seq:06d}"))
        write.messages.append(("shanghai", "package", b"p"))
        return write

    first, created = store.create("20261124", build, idempotency=("k", "f1"))
    again, created_again = store.create("20261124", build, idempotency=("k", "f1"))
    assert (created, created_again) == (True, False)
    assert again == first
    assert built == [1]  # nothing built nor written twice
    assert store.outbox_count() == 1
    assert store.lookup_idempotency("k") == ("f1", first.id)
    assert store.lookup_idempotency("other") is None
    # the same key for another request
    with pytest.raises(ConflictError) as caught:
        store.create("20261124", build, idempotency=("k", "f2"))
    assert (caught.value.status, caught.value.code) == (409, "case.idempotency_conflict")
    # another key: a new case
    other, created = store.create("20261124", build, idempotency=("k2", "f1"))
    assert created
    assert other.id == "330681-20261124-000002"


def test_a_missing_case(store: SqlCaseStore) -> None:
    with pytest.raises(NotFoundError) as caught:
        store.get("330681-20261124-000009")
    assert (caught.value.status, caught.value.code) == (404, "case.not_found")


# --- arrival and updates -------------------------------------------------------------------


def test_an_arrival_is_written_once(store: SqlCaseStore) -> None:
    write = CaseWrite(
        a_case(state=CaseState.PENDING_ACCEPTANCE, seq=3),
        events=[event(1), event(2), event(3)],
        blobs={"cd" * 32: b"bytes"},
        messages=[("zhuji", "event", b"arrived")],
        audit=[b"record"],
    )
    assert store.arrive(write) is True
    assert store.arrive(write) is False
    assert [e.seq for e in store.events(write.case.id)] == [1, 2, 3]
    assert store.outbox_count() == 1
    assert len(store.pending_audit()) == 1
    assert store.blobs(["cd" * 32, "ef" * 32]) == {"cd" * 32: b"bytes"}


def test_updates_are_compare_and_set_on_the_event_count(store: SqlCaseStore) -> None:
    case = a_case(state=CaseState.PENDING_ACCEPTANCE, seq=1)
    store.arrive(CaseWrite(case, events=[event(1)]))
    accepted = case.evolve(state=CaseState.ACCEPTED, seq=2, updated_at=NOW + 10)
    store.update(CaseWrite(accepted, events=[event(2)]), expected_seq=1)
    assert store.get(case.id) == accepted
    # a second writer that read the case at seq 1 loses, and writes nothing
    refused = case.evolve(state=CaseState.CLOSED, seq=2)
    with pytest.raises(ConflictError) as caught:
        store.update(
            CaseWrite(refused, events=[event(9)], messages=[("zhuji", "event", b"x")]),
            expected_seq=1,
        )
    assert (caught.value.status, caught.value.code) == (409, "case.conflict")
    assert store.get(case.id).state is CaseState.ACCEPTED
    assert [e.seq for e in store.events(case.id)] == [1, 2]
    assert store.outbox_count() == 0
    assert store.has_event(event(2).id)
    assert not store.has_event(event(9).id)


def test_update_with_reads_and_writes_in_one_transaction(store: SqlCaseStore) -> None:
    case = a_case(state=CaseState.PENDING_ACCEPTANCE, seq=1)
    store.arrive(CaseWrite(case, events=[event(1)]))
    assert store.update_with(case.id, lambda c: None) == case
    moved = store.update_with(
        case.id,
        lambda c: CaseWrite(c.evolve(state=CaseState.ACCEPTED, seq=c.seq + 1), events=[event(2)]),
    )
    assert (moved.state, moved.seq) == (CaseState.ACCEPTED, 2)
    assert store.get(case.id) == moved
    with pytest.raises(NotFoundError):
        store.update_with("330681-20261124-000404", lambda c: None)


def test_blobs_are_stored_once_by_digest(store: SqlCaseStore) -> None:
    store.arrive(CaseWrite(a_case("330681-20261124-000001"), blobs={"aa": b"same"}))
    store.arrive(CaseWrite(a_case("330681-20261124-000002"), blobs={"aa": b"same"}))
    assert store.blobs(["aa", "aa"]) == {"aa": b"same"}
    assert store.blobs([]) == {}


# --- listings ------------------------------------------------------------------------------


def test_listings_by_department_state_and_cursor(store: SqlCaseStore) -> None:
    for n in range(1, 6):
        state = CaseState.ACCEPTED if n % 2 else CaseState.PENDING_ACCEPTANCE
        store.arrive(CaseWrite(a_case(f"330681-20261124-{n:06d}", state=state)))
    store.arrive(
        CaseWrite(a_case("330681-20261124-000006", owner="x", window="y", digest="cd" * 32))
    )

    def ids(cases: list[Case]) -> list[int]:
        return [int(c.id[-6:]) for c in cases]

    def inbox(after: str | None) -> list[int]:
        return ids(
            store.listing(
                department="shanghai-healthcare-security",
                role="owner",
                state=None,
                after=after,
                limit=2,
            )
        )

    assert inbox(None) == [1, 2]
    assert inbox("330681-20261124-000002") == [3, 4]
    assert inbox("330681-20261124-000004") == [5]
    assert ids(
        store.listing(
            department="shanghai-healthcare-security",
            role="owner",
            state="accepted",
            after=None,
            limit=10,
        )
    ) == [1, 3, 5]
    assert ids(
        store.listing(
            department="zhuji-service-center", role="window", state=None, after=None, limit=10
        )
    ) == [1, 2, 3, 4, 5]
    # a department's name in the other column lists nothing
    assert (
        store.listing(
            department="zhuji-service-center", role="owner", state=None, after=None, limit=10
        )
        == []
    )
    assert ids(store.by_applicant(DIGEST, after=None, limit=3)) == [1, 2, 3]
    assert ids(store.by_applicant(DIGEST, after="330681-20261124-000003", limit=3)) == [4, 5]
    assert ids(store.by_applicant("cd" * 32, after=None, limit=3)) == [6]
    assert ids(store.by_applicant(DIGEST, state="accepted", after=None, limit=9)) == [1, 3, 5]
    assert ids(store.all_cases(after="330681-20261124-000004", limit=10)) == [5, 6]


def test_pending_cases_oldest_first(store: SqlCaseStore) -> None:
    pending = CaseState.PENDING_ACCEPTANCE
    store.arrive(CaseWrite(a_case("330681-20261124-000001", state=pending, updated_at=NOW + 5)))
    store.arrive(CaseWrite(a_case("330681-20261124-000002", state=pending, updated_at=NOW)))
    store.arrive(CaseWrite(a_case("330681-20261124-000003", state=CaseState.ACCEPTED)))
    found = store.pending_since("shanghai", "pending_acceptance")
    assert [c.id[-1] for c in found] == ["2", "1"]
    assert store.pending_since("zhuji", "pending_acceptance") == []


# --- the outbox ----------------------------------------------------------------------------


def owe(store: SqlCaseStore, n: int, *messages: tuple[str, str, bytes]) -> None:
    store.arrive(CaseWrite(a_case(f"330681-20261124-{n:06d}"), messages=list(messages)))


def test_the_outbox_in_order(store: SqlCaseStore) -> None:
    owe(store, 1, ("shanghai", "package", b"s1"), ("linquan", "event", b"l1"))
    owe(store, 2, ("shanghai", "event", b"s2"))
    due = store.due_messages(NOW)
    assert [m.body for m in due] == [b"s1", b"l1", b"s2"]
    assert [(m.target, m.kind, m.attempts) for m in due] == [
        ("shanghai", "package", 0),
        ("linquan", "event", 0),
        ("shanghai", "event", 0),
    ]
    assert due[0].case_id == "330681-20261124-000001"
    store.sent(due[0].seq)
    assert [m.body for m in store.due_messages(NOW)] == [b"l1", b"s2"]
    assert store.outbox_count() == 2


def test_a_peer_s_later_messages_wait_behind_one_not_yet_due(store: SqlCaseStore) -> None:
    owe(store, 1, ("shanghai", "package", b"s1"), ("linquan", "event", b"l1"))
    owe(store, 2, ("shanghai", "event", b"s2"), ("linquan", "event", b"l2"))
    first = store.due_messages(NOW)[0]
    store.retry_message(first.seq, next_at=NOW + 30)
    # shanghai's second message waits behind its first; linquan's go on
    assert [m.body for m in store.due_messages(NOW)] == [b"l1", b"l2"]
    later = store.due_messages(NOW + 30)
    assert [m.body for m in later] == [b"s1", b"l1", b"s2", b"l2"]
    assert later[0].attempts == 1
    store.retry_message(first.seq, next_at=NOW + 90)
    assert store.due_messages(NOW + 90)[0].attempts == 2


def test_the_outbox_limit(store: SqlCaseStore) -> None:
    owe(store, 1, *[("shanghai", "event", bytes([n])) for n in range(5)])
    assert [m.body for m in store.due_messages(NOW, limit=2)] == [b"\x00", b"\x01"]


# --- owed audit records --------------------------------------------------------------------


def test_owed_audit_records_per_process_and_after_a_crash(opener: Opener) -> None:
    with opener() as one, opener() as two:
        one.arrive(CaseWrite(a_case("330681-20261124-000001"), audit=[b"a1", b"a2"]))
        two.arrive(CaseWrite(a_case("330681-20261124-000002"), audit=[b"b1"]))
        assert [r for _, r in one.pending_audit()] == [b"a1", b"a2"]
        assert [r for _, r in two.pending_audit()] == [b"b1"]
        assert [r for _, r in one.pending_audit(every_owner=True)] == [b"a1", b"a2", b"b1"]
        one.audit_moved([seq for seq, _ in one.pending_audit()])
        assert one.pending_audit() == []
    # "one" crashed before it moved b1's owner's records: a new process sees them
    with opener() as restarted:
        assert restarted.pending_audit() == []
        assert [r for _, r in restarted.pending_audit(every_owner=True)] == [b"b1"]


# --- webhooks ------------------------------------------------------------------------------


def subscription(sid: str, department: str = "shanghai-healthcare-security") -> Subscription:
    return Subscription(sid, department, f"https://hooks.example/{sid}", NOW)


def test_subscriptions(store: SqlCaseStore) -> None:
    first = store.subscribe(subscription("s1"), max_per_department=2)
    # the same url again: the same subscription
    same_url = Subscription("s9", first.department, first.url, NOW + 1)
    assert store.subscribe(same_url, max_per_department=2) == first
    store.subscribe(subscription("s2"), max_per_department=2)
    with pytest.raises(ConflictError) as caught:
        store.subscribe(subscription("s3"), max_per_department=2)
    assert (caught.value.status, caught.value.code) == (409, "webhook.too_many")
    # another department has its own allowance
    store.subscribe(subscription("z1", "zhuji-service-center"), max_per_department=2)
    assert [s.id for s in store.subscriptions(["shanghai-healthcare-security"])] == ["s1", "s2"]
    assert [s.id for s in store.subscriptions(["zhuji-service-center", "x"])] == ["z1"]
    assert first.to_json() == {
        "id": "s1",
        "department": "shanghai-healthcare-security",
        "url": "https://hooks.example/s1",
    }


def test_unsubscribe_only_ones_own(store: SqlCaseStore) -> None:
    store.subscribe(subscription("s1"), max_per_department=2)
    with pytest.raises(NotFoundError) as caught:
        store.unsubscribe("zhuji-service-center", "s1")
    assert (caught.value.status, caught.value.code) == (404, "webhook.not_found")
    store.unsubscribe("shanghai-healthcare-security", "s1")
    with pytest.raises(NotFoundError):
        store.unsubscribe("shanghai-healthcare-security", "s1")


def test_deliveries_once_per_subscription_and_event(store: SqlCaseStore) -> None:
    store.subscribe(subscription("s1"), max_per_department=8)
    store.subscribe(subscription("s2"), max_per_department=8)
    notices = [("s1", "e1", b"one"), ("s2", "e1", b"one"), ("s1", "e2", b"two")]
    store.arrive(CaseWrite(a_case("330681-20261124-000001"), notices=list(notices)))
    store.update(
        CaseWrite(a_case("330681-20261124-000001"), notices=[("s1", "e1", b"again")]),
        expected_seq=0,
    )
    due = store.due_deliveries(NOW)
    assert [(d.subscription, d.event_id, d.body) for d in due] == notices
    assert due[0].url == "https://hooks.example/s1"
    store.delivered(due[0].seq)
    assert store.delivery_count() == 2
    # a subscription withdrawn takes its deliveries with it
    store.unsubscribe("shanghai-healthcare-security", "s2")
    assert [(d.subscription, d.event_id) for d in store.due_deliveries(NOW)] == [("s1", "e2")]


def test_a_delivery_is_retried_then_given_up(store: SqlCaseStore) -> None:
    store.subscribe(subscription("s1"), max_per_department=8)
    store.arrive(CaseWrite(a_case(), notices=[("s1", "e1", b"one")]))
    (delivery,) = store.due_deliveries(NOW)
    assert store.retry_delivery(delivery.seq, next_at=NOW + 10, give_up_after=3) is True
    assert store.due_deliveries(NOW) == []  # not yet
    (again,) = store.due_deliveries(NOW + 10)
    assert (again.seq, again.attempts) == (delivery.seq, 1)
    assert store.retry_delivery(delivery.seq, next_at=NOW + 20, give_up_after=3) is True
    # the third failed attempt is the last
    assert store.retry_delivery(delivery.seq, next_at=NOW + 40, give_up_after=3) is False
    assert store.delivery_count() == 0
    assert store.retry_delivery(delivery.seq, next_at=NOW + 80, give_up_after=3) is False


def test_the_store_reopens_with_its_cases(opener: Opener) -> None:
    with opener() as store:
        case = create(store)
        store.checkpoint()
    with opener() as store:
        assert store.get(case.id) == case
        assert create(store).id == "330681-20261124-000002"


# --- replicas over one PostgreSQL database -------------------------------------------------


def test_two_replicas_never_hand_out_the_same_number_and_keep_compare_and_set(
    pg_server: PostgresServer,
) -> None:
    creators, each = 4, 10
    with ExitStack() as stack:
        dsn = stack.enter_context(pg_server.database())
        replicas = [stack.enter_context(PostgresCaseStore(dsn)) for _ in range(2)]
        start = threading.Barrier(creators)
        made: list[str] = []
        failures: list[BaseException] = []

        def intake(store: SqlCaseStore) -> None:
            try:
                start.wait()
                for _ in range(each):
                    made.append(create(store).id)
            except BaseException as exc:  # reported below, in the test's thread
                failures.append(exc)

        threads = [
            threading.Thread(target=intake, args=(replicas[n % 2],)) for n in range(creators)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        expected = [f"330681-20261124-{n:06d}" for n in range(1, creators * each + 1)]
        assert sorted(made) == expected  # every number once, none skipped
        one, two = replicas
        assert [c.id for c in two.all_cases(after=None, limit=500)] == expected

        # compare-and-set across replicas: both read the case at seq 0; one wins
        case = one.get(expected[0])
        accepted = case.evolve(state=CaseState.ACCEPTED, seq=1, updated_at=NOW + 1)
        one.update(CaseWrite(accepted, events=[event(1, case.id)]), expected_seq=0)
        refused = case.evolve(state=CaseState.CLOSED, seq=1, updated_at=NOW + 2)
        with pytest.raises(ConflictError) as caught:
            two.update(CaseWrite(refused, events=[event(9, case.id)]), expected_seq=0)
        assert caught.value.code == "case.conflict"
        assert two.get(case.id) == accepted
        assert [e.seq for e in two.events(case.id)] == [1]
        # the replica that lost reads the case again and goes on from there
        closed = accepted.evolve(state=CaseState.CLOSED, seq=2, updated_at=NOW + 3)
        two.update(CaseWrite(closed, events=[event(2, case.id)]), expected_seq=1)
        assert one.get(case.id) == closed

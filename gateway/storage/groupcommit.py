"""Group commit of audit records from the event loop: one transaction, one fsync, many requests.

Every exchange is audited before it is answered, and the audit log is written with
``synchronous = FULL`` (a power cut loses no acknowledged record). Committing each request's
records on its own costs every request a transaction and a disk flush. :class:`GroupCommit`
instead lets the requests in flight queue their records and commits them together: the first
request to queue schedules a commit for the end of the event loop's current round, and every
request that queues before it runs rides along. Under load a commit carries many requests'
records; a lone request still gets its own commit at once (no timer, no added wait). Each
caller resumes only once its own records are durable: the same guarantee as committing alone.

The transaction is written on the event loop thread (a few fast statements). The commit is
the disk flush, which takes a fraction of a millisecond on an idle disk and several when every
node of a machine flushes at once: it always runs on a commit thread of its own, so the event
loop never waits on an fsync. On that thread it releases the GIL once and takes it back once;
meanwhile the loop serves other requests, and the records they queue wait for the next group
(SQLite has one writer, so one commit is in flight at a time). Writing the statements on that
thread too would cost the GIL back and forth at every SQLite call, which on a busy loop made
commits wait for the interpreter rather than the disk.

On PostgreSQL the statements, and the commit, are round trips to the server: the event loop
sends each and awaits its answer on the socket (:meth:`AuditLog.append_on_loop`: the
transaction, the log's lock and size in one round trip, the entries and the ``COMMIT`` in a
second), so no thread is involved at all. A commit thread there cost more than the round
trips: each of its statements took the GIL back from the busy loop, and a group waited on
the interpreter several times over.

Records are validated in the caller's task (:func:`~gateway.audit.records.check_items`), so a
bad record
fails its own request only; a failed commit fails every request whose records it carried.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from gateway._internal.sql import POSTGRESQL
from gateway.audit.records import AuditItem, AuditRecord, CheckedItem, check_items
from gateway.errors import StorageError
from gateway.storage.audit_log import AuditLog

MAX_BATCH: Final = 1024
"""Records committed in one transaction at most; more wait for the next."""

_Waiting = tuple[list[CheckedItem], "asyncio.Future[list[AuditRecord]]"]


class GroupCommit:
    """Commits a node's audit records in groups; see the module's description."""

    def __init__(self, log: AuditLog, *, max_batch: int = MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError("a group commit carries at least one record")
        self._log = log
        self._on_loop = log.dialect == POSTGRESQL
        self._max_batch = max_batch
        self._waiting: list[_Waiting] = []
        self._scheduled = False
        self._committing: asyncio.Future[list[AuditRecord]] | None = None
        self._closed = False
        # the commit thread: SQLite's (PostgreSQL's groups are written from the loop)
        self._thread = (
            None
            if self._on_loop
            else ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-commit")
        )
        self.commits = 0
        """Transactions committed so far (each carried one or more requests' records)."""

    async def append(self, items: Iterable[AuditItem]) -> list[AuditRecord]:
        """Append ``items`` in order, contiguously; returns them once durably committed.

        A caller that goes away meanwhile (its client hung up) does not take its records
        back: they are committed with the rest of the group.
        """
        checked = check_items(items)
        if not checked:
            return []
        if self._closed:
            raise StorageError("the audit log is closed", code="audit.closed")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[AuditRecord]] = loop.create_future()
        self._waiting.append((checked, done))
        if not self._scheduled and self._committing is None:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await done

    def _flush(self) -> None:
        """Stage the oldest waiting group and hand its commit to the commit thread; a group
        that cannot be staged fails its requests, and the next group is tried."""
        self._scheduled = False
        while self._waiting and self._committing is None:
            group = self._take()
            items = [item for checked, _ in group for item in checked]
            committing: asyncio.Future[list[AuditRecord]]
            if self._on_loop:  # PostgreSQL: round trips the loop awaits, never waits on
                committing = asyncio.ensure_future(self._log.append_on_loop(items))
            else:
                try:
                    work = self._log.stage(items).commit
                except Exception as exc:  # every request of the group gets the failure
                    _fail(group, exc)
                    continue
                loop = asyncio.get_running_loop()
                committing = loop.run_in_executor(self._thread, work)
            self._committing = committing
            committing.add_done_callback(functools.partial(self._committed, group))

    def _committed(
        self, group: list[_Waiting], committing: asyncio.Future[list[AuditRecord]]
    ) -> None:
        self._committing = None
        exc = (
            StorageError("the audit commit was cancelled", code="audit.storage")
            if committing.cancelled()
            else committing.exception()
        )
        if exc is not None:
            _fail(group, exc)
        else:
            self.commits += 1
            records, offset = committing.result(), 0
            for checked, done in group:
                if not done.done():
                    done.set_result(records[offset : offset + len(checked)])
                offset += len(checked)
        self._flush()

    def _take(self) -> list[_Waiting]:
        """The oldest waiting requests, whole, up to ``max_batch`` records (at least one)."""
        taken, count = 0, 0
        for checked, _ in self._waiting:
            if taken and count + len(checked) > self._max_batch:
                break
            taken += 1
            count += len(checked)
        group, self._waiting = self._waiting[:taken], self._waiting[taken:]
        return group

    async def aclose(self) -> None:
        """Commit what is waiting; later appends are refused."""
        self._closed = True
        while self._committing is not None or self._waiting:
            if self._committing is None:
                self._flush()
            if self._committing is not None:
                # the group's callers get the outcome; here it only marks the group's end
                await asyncio.wait([self._committing])
        if self._thread is not None:
            self._thread.shutdown(wait=True)


def _fail(group: list[_Waiting], exc: BaseException) -> None:
    for _, done in group:
        if not done.done():
            done.set_exception(exc)

"""Coordination recipes on the KV API: a distributed lock and leader election, blocking
(``Lock``, ``Election`` on a ``Client``) and asyncio (``AsyncLock``, ``AsyncElection`` on an
``AsyncClient``).

The lock is etcd's: each contender grants a lease of ``ttl`` seconds, keeps it alive in the
background (every ttl/3), and writes the key ``{prefix}{name}/{lease id}`` attached to it. The
key with the lowest create revision under ``{prefix}{name}/`` holds the lock; every other
contender watches only the key just before its own (no herd on release) and looks again when
that one is deleted. Releasing deletes the key and revokes the lease; a holder that dies stops
its keepalives, so its lease expires after the TTL and its key goes with it.

An election is the same queue: the holder is the leader, its key's value is the leader's
proclamation; observers follow the lowest key under the election's prefix.

What a holder must know: the lock is only as good as its lease. If keepalives fail for a whole
TTL (a partition), the lease expires and another contender gets the lock. ``lost`` says so by
the holder's own clock, even when it cannot reach any node: it turns true once a TTL has passed
since the SEND time of the last keepalive that succeeded (or of the grant). The leader restarts
the countdown when the keepalive ARRIVES, later, so the lease cannot have ended before that
(clock rates assumed equal). A holder that cannot tolerate overlap must check ``lost`` (or
fence its writes with a txn comparing its key's create revision).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from types import TracebackType

from raftly.kv.client import AsyncClient, Client, ClientError
from raftly.kv.client_coord import Entry, LeaseNotFoundError, Page, WatchEvent

__all__ = ["AsyncElection", "AsyncLock", "Election", "Lock", "LockLostError"]

log = logging.getLogger(__name__)

DEFAULT_TTL = 10


class LockLostError(ClientError):
    """The contender's key vanished while it waited or held: its lease expired or was revoked."""


def _queue_prefix(prefix: str, name: str) -> str:
    if not name or "/" in name:
        raise ValueError(f"a lock or election name is non-empty text without '/': {name!r}")
    return f"{prefix}{name}/"


def _mine(kvs: Sequence[Entry], key: str) -> Entry:
    """``key``'s entry in the queue; LockLostError if it is not there any more."""
    mine = next((entry for entry in kvs if entry.key == key), None)
    if mine is None:
        raise LockLostError(f"{key} is gone: its lease expired or was revoked")
    return mine


def _predecessor(kvs: Sequence[Entry], key: str) -> str | None:
    """The key just before ``key`` in the queue (None: ``key`` is first, it holds).
    LockLostError if ``key`` is not in the queue any more."""
    mine = _mine(kvs, key)
    earlier = [entry for entry in kvs if entry.create_revision < mine.create_revision]
    return max(earlier, key=lambda e: e.create_revision).key if earlier else None


def _holder(kvs: Sequence[Entry]) -> Entry | None:
    return min(kvs, key=lambda e: e.create_revision) if kvs else None


QUEUE_PAGE = 1000
"""Keys per read of a queue: a queue longer than that is read page after page (its keys are
ordered by lease id, not by creation, so the holder may be on any page)."""


class _Pages:
    """A whole queue read page by page: ``kvs``, and ``revision``, the LOWEST revision of the
    pages, so that a watch from ``revision + 1`` misses no change made between them."""

    def __init__(self) -> None:
        self.kvs: list[Entry] = []
        self.revision: int | None = None
        self.after: str | None = None

    def add(self, page: Page) -> bool:
        """Take one page in; whether another follows (then read from ``after``)."""
        self.kvs += page.kvs
        self.revision = page.revision if self.revision is None else min(self.revision,
                                                                        page.revision)
        if not page.more or not page.kvs:
            return False
        self.after = page.kvs[-1].key
        return True

    def done(self) -> tuple[list[Entry], int]:
        assert self.revision is not None
        return self.kvs, self.revision


def _read_queue(client: Client, prefix: str) -> tuple[list[Entry], int]:
    pages = _Pages()
    while pages.add(client.range(prefix, limit=QUEUE_PAGE, start_after=pages.after)):
        pass
    return pages.done()


async def _aread_queue(client: AsyncClient, prefix: str) -> tuple[list[Entry], int]:
    pages = _Pages()
    while pages.add(await client.range(prefix, limit=QUEUE_PAGE, start_after=pages.after)):
        pass
    return pages.done()


class _Queue:
    """What a lock and an election contender share: names, the lease, the keepalive verdict."""

    def __init__(self, name: str, ttl: int, prefix: str, value: bytes) -> None:
        self.prefix = _queue_prefix(prefix, name)
        self.ttl = ttl
        self.value = value
        self.lease_id: int | None = None
        self.key: str | None = None
        self._lost = False
        self._renewed_at: float | None = None
        """``time.monotonic()`` when the last successful keepalive (or the grant) was sent."""
        self._lease_ttl = ttl
        self.revision: int | None = None
        """Once held: the create revision of ``key``. Fence a write on it with a txn whose
        compare is ``Compare(key, "create_revision", "=", revision)``: it fails once the lock
        is lost, even if this holder has not noticed yet."""

    @property
    def lost(self) -> bool:
        """Whether the lease has ended or must have by this process's clock (a keepalive found
        it gone, or a TTL passed since the send time of the last successful keepalive): the
        lock may be someone else's now. Once true it stays true until the next acquire."""
        if (not self._lost and self._renewed_at is not None
                and time.monotonic() >= self._renewed_at + self._lease_ttl):
            self._lease_gone("no keepalive succeeded for a whole TTL")
        return self._lost

    def _enter(self, lease_id: int, ttl: int, sent: float) -> str:
        self.lease_id = lease_id
        self.key = f"{self.prefix}{lease_id:x}"
        self._lost = False
        self._lease_ttl = ttl
        self._renewed_at = sent
        self.revision = None
        return self.key

    def _renewed(self, sent: float) -> None:
        """A keepalive sent at ``sent`` succeeded: the lease lasts at least until sent + TTL."""
        if not self.lost and self._renewed_at is not None:
            self._renewed_at = max(self._renewed_at, sent)

    def _revoke_errors(self) -> tuple[type[Exception], ...]:
        """What a release may ignore: a lease already gone; and once lost, any client error
        (a holder cut off from the cluster cannot revoke, and need not: the lease ends by
        itself)."""
        return (ClientError,) if self.lost else (LeaseNotFoundError,)

    def _left(self) -> None:
        self.lease_id = self.key = self.revision = self._renewed_at = None

    def _period(self) -> float:
        return max(self.ttl / 3, 0.2)

    def _lease_gone(self, why: str = "a keepalive found it gone") -> None:
        if not self._lost:
            log.warning("lease %s of %s ended (%s): the lock is lost", self.lease_id, self.key,
                        why)
        self._lost = True


# -- blocking --------------------------------------------------------------------------------


class Lock(_Queue):
    """A distributed lock: ``with Lock(client, "jobs"): ...`` (blocking, one thread).

    ``acquire(timeout=None)`` returns True once held (False after ``timeout`` seconds; the wait
    is checked at least every 2 s); ``release()`` gives it up. The keepalives run in a thread
    with a ``fork()`` of the client.
    """

    def __init__(self, client: Client, name: str, *, ttl: int = DEFAULT_TTL,
                 prefix: str = "locks/", value: bytes = b"") -> None:
        super().__init__(name, ttl, prefix, value)
        self.client = client
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None

    def acquire(self, timeout: float | None = None) -> bool:
        if self.key is not None:
            raise RuntimeError(f"{self.key} is already acquired or being acquired")
        deadline = None if timeout is None else time.monotonic() + timeout
        sent = time.monotonic()
        lease = self.client.lease_grant(self.ttl)
        key = self._enter(lease.id, lease.ttl, sent)
        self._stop.clear()
        self._keeper = threading.Thread(target=self._keep_alive, args=(self.client.fork(),),
                                        name=f"keepalive {key}", daemon=True)
        self._keeper.start()
        try:
            self.client.put(key, self.value, lease=lease.id)
            while True:
                kvs, revision = _read_queue(self.client, self.prefix)
                before = _predecessor(kvs, key)
                if before is None:
                    self.revision = _mine(kvs, key).create_revision
                    return True
                if not self._wait_deleted(before, revision + 1, deadline):
                    self.release()
                    return False
        except BaseException:
            self.release()
            raise

    def _wait_deleted(self, key: str, from_revision: int, deadline: float | None) -> bool:
        """Wait until ``key`` is deleted (True) or the deadline passes (False)."""
        with contextlib.closing(self.client.watch(key, from_revision=from_revision,
                                                  progress=True)) as events:
            for event in events:
                if event.type == "delete" and event.key == key:
                    return True
                if self.lost:
                    raise LockLostError(f"{self.key}: lease {self.lease_id} ended while waiting")
                if deadline is not None and time.monotonic() >= deadline:
                    return False
        return False  # not reached: a watch never ends by itself

    def _keep_alive(self, client: Client) -> None:
        with client:
            # Once lost, stop: renewing a lease this holder has given up would keep the
            # others waiting for nothing.
            while not self._stop.wait(self._period()) and not self.lost:
                sent = time.monotonic()
                try:
                    assert self.lease_id is not None
                    client.lease_keepalive(self.lease_id)
                except LeaseNotFoundError:
                    self._lease_gone()
                    return
                except Exception as exc:
                    # The next round tries again, within the TTL: a keepalive thread that
                    # died on an unexpected error would lose the lock silently.
                    log.warning("keepalive of lease %s failed: %s", self.lease_id, exc)
                else:
                    self._renewed(sent)

    def release(self) -> None:
        """Give the lock up (or stop waiting): delete the key, revoke the lease."""
        self._stop.set()
        if self._keeper is not None:
            self._keeper.join()
            self._keeper = None
        if self.lease_id is not None:
            with contextlib.suppress(*self._revoke_errors()):
                self.client.lease_revoke(self.lease_id)  # deletes the key with it
        self._left()

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


class _Observer:
    """The queue of an election as its watch events change it, and its holder."""

    def __init__(self, kvs: Sequence[Entry]) -> None:
        self.queue = {entry.key: entry for entry in kvs}
        self.seen = self._holder()

    def _holder(self) -> tuple[str, bytes] | None:
        holder = _holder(list(self.queue.values()))
        return None if holder is None else (holder.key, holder.value)

    def value(self) -> bytes | None:
        return None if self.seen is None else self.seen[1]

    def changed(self, event: WatchEvent) -> bool:
        """Apply ``event``; whether the leader (its key or its value) changed with it."""
        if event.type == "delete":
            self.queue.pop(event.key, None)
        else:
            self.queue[event.key] = Entry(event.key, event.value, event.create_revision,
                                          event.mod_revision, event.version, event.lease)
        holder = self._holder()
        if holder == self.seen:
            return False
        self.seen = holder
        return True


class _Candidacy:
    """What both elections keep: the name, the TTL, the queue's prefix, the lock that leads."""

    _lock: _Queue | None

    def __init__(self, name: str, ttl: int, prefix: str) -> None:
        self.name = name
        self.ttl = ttl
        self.prefix = _queue_prefix(prefix, name)
        self._base = prefix

    @property
    def lost(self) -> bool:
        """Whether this leader's lease ended (someone else may lead now)."""
        return self._lock is not None and self._lock.lost


class Election(_Candidacy):
    """Leader election among workers: ``campaign(value)`` blocks until this one leads,
    ``resign()`` steps down, ``leader()`` is the current leader's key and value, and
    ``observe()`` yields the leader's value (None: no leader) each time it changes."""

    def __init__(self, client: Client, name: str, *, ttl: int = DEFAULT_TTL,
                 prefix: str = "elections/") -> None:
        super().__init__(name, ttl, prefix)
        self.client = client
        self._lock: Lock | None = None

    def campaign(self, value: bytes, timeout: float | None = None) -> bool:
        lock = Lock(self.client, self.name, ttl=self.ttl, prefix=self._base, value=value)
        if not lock.acquire(timeout):
            return False
        self._lock = lock
        return True

    def resign(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def leader(self) -> Entry | None:
        return _holder(_read_queue(self.client, self.prefix)[0])

    def observe(self) -> Iterator[bytes | None]:
        kvs, revision = _read_queue(self.client, self.prefix)
        observer = _Observer(kvs)
        yield observer.value()
        with contextlib.closing(self.client.watch(self.prefix,
                                                  from_revision=revision + 1)) as events:
            for event in events:
                if observer.changed(event):
                    yield observer.value()


# -- asyncio ---------------------------------------------------------------------------------


class AsyncLock(_Queue):
    """``Lock`` for asyncio: ``async with AsyncLock(client, "jobs"): ...``; the keepalives run
    in a task on the same ``AsyncClient``."""

    def __init__(self, client: AsyncClient, name: str, *, ttl: int = DEFAULT_TTL,
                 prefix: str = "locks/", value: bytes = b"") -> None:
        super().__init__(name, ttl, prefix, value)
        self.client = client
        self._keeper: asyncio.Task[None] | None = None

    async def acquire(self, timeout: float | None = None) -> bool:
        if self.key is not None:
            raise RuntimeError(f"{self.key} is already acquired or being acquired")
        sent = time.monotonic()
        lease = await self.client.lease_grant(self.ttl)
        key = self._enter(lease.id, lease.ttl, sent)
        self._keeper = asyncio.create_task(self._keep_alive())
        try:
            async with asyncio.timeout(timeout):
                await self.client.put(key, self.value, lease=lease.id)
                while True:
                    kvs, revision = await _aread_queue(self.client, self.prefix)
                    before = _predecessor(kvs, key)
                    if before is None:
                        self.revision = _mine(kvs, key).create_revision
                        return True
                    await self._wait_deleted(before, revision + 1)
        except TimeoutError:
            await self.release()
            return False
        except BaseException:
            await self.release()
            raise

    async def _wait_deleted(self, key: str, from_revision: int) -> None:
        events = self.client.watch(key, from_revision=from_revision, progress=True)
        try:
            async for event in events:
                if event.type == "delete" and event.key == key:
                    return
                if self.lost:
                    raise LockLostError(f"{self.key}: lease {self.lease_id} ended while waiting")
        finally:
            await events.aclose()

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self._period())
            if self.lost:
                return  # as in Lock._keep_alive
            sent = time.monotonic()
            try:
                assert self.lease_id is not None
                await self.client.lease_keepalive(self.lease_id)
            except LeaseNotFoundError:
                self._lease_gone()
                return
            except Exception as exc:  # as in Lock._keep_alive: the next round tries again
                log.warning("keepalive of lease %s failed: %s", self.lease_id, exc)
            else:
                self._renewed(sent)

    async def release(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
        if self.lease_id is not None:
            with contextlib.suppress(*self._revoke_errors()):
                await self.client.lease_revoke(self.lease_id)
        self._left()

    async def __aenter__(self) -> AsyncLock:
        await self.acquire()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.release()


class AsyncElection(_Candidacy):
    """``Election`` for asyncio; ``observe()`` is an async iterator."""

    def __init__(self, client: AsyncClient, name: str, *, ttl: int = DEFAULT_TTL,
                 prefix: str = "elections/") -> None:
        super().__init__(name, ttl, prefix)
        self.client = client
        self._lock: AsyncLock | None = None

    async def campaign(self, value: bytes, timeout: float | None = None) -> bool:
        lock = AsyncLock(self.client, self.name, ttl=self.ttl, prefix=self._base, value=value)
        if not await lock.acquire(timeout):
            return False
        self._lock = lock
        return True

    async def resign(self) -> None:
        if self._lock is not None:
            await self._lock.release()
            self._lock = None

    async def leader(self) -> Entry | None:
        return _holder((await _aread_queue(self.client, self.prefix))[0])

    async def observe(self) -> AsyncIterator[bytes | None]:
        kvs, revision = await _aread_queue(self.client, self.prefix)
        observer = _Observer(kvs)
        yield observer.value()
        events = self.client.watch(self.prefix, from_revision=revision + 1)
        try:
            async for event in events:
                if observer.changed(event):
                    yield observer.value()
        finally:
            await events.aclose()

"""Snapshots in a running server: taking them, installing a leader's, sending them to followers.

The core decides *what* a snapshot covers and *when* one must be installed or sent; this module
does the work around those decisions, keeping the event loop free: a state machine's capture is
taken between two applies (it is quick), then written to a ``SnapshotStore`` file from a worker
thread while applies and heartbeats go on. Only once that file is durable does the log lose the
entries it covers (keeping ``retain`` of them for followers that are only a little behind).

The ready loop calls ``finish_taken`` and ``install`` between two Readies, so the core and the
storage only ever change from that one place, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

from raftly.core.messages import InstallSnapshot
from raftly.core.node import RaftNode
from raftly.core.state_machine import SnapshotCapture, SnapshottingStateMachine, SupportsRead
from raftly.core.types import InitialState, NodeId, SnapshotMeta
from raftly.logevents import event
from raftly.server.observer import Observers
from raftly.storage.base import Storage, StorageError
from raftly.storage.snapshots import IncomingSnapshot, SnapshotStore, verify
from raftly.transport.base import Transport

logger = logging.getLogger("raftly.server.snapshots")

DEFAULT_SNAPSHOT_ENTRIES = 10_000


@dataclass(slots=True, frozen=True)
class SnapshotSettings:
    """When to snapshot: once ``entries`` applied entries follow the last snapshot; then keep
    ``retain`` entries behind it (default: ``entries``) so a slightly slow follower still
    catches up from the log rather than by InstallSnapshot."""

    entries: int = DEFAULT_SNAPSHOT_ENTRIES
    retain: int | None = None

    def __post_init__(self) -> None:
        if self.entries < 1:
            raise ValueError(f"snapshot entries must be at least 1, not {self.entries}")
        if self.retain is not None and self.retain < 0:
            raise ValueError(f"snapshot retain must not be negative, not {self.retain}")

    @property
    def kept(self) -> int:
        return self.entries if self.retain is None else self.retain


class SnapshotManager:
    """Takes, installs and sends the snapshots of one server (see the module docstring)."""

    def __init__(self, node_id: NodeId, *, store: SnapshotStore,
                 state_machine: SnapshottingStateMachine, storage: Storage,
                 disk: Executor, transport: Transport, settings: SnapshotSettings,
                 wake: Callable[[], None], observers: Observers | None = None) -> None:
        self.store = store
        self._observers = observers or Observers()
        self._id = node_id
        self._sm = state_machine
        self._storage = storage
        self._disk = disk
        self._transport = transport
        self._settings = settings
        self._wake = wake
        # Two threads: an install (and its restore) must never wait behind the persist of a
        # snapshot of our own that the install is about to make obsolete.
        self._worker = ThreadPoolExecutor(max_workers=1,
                                          thread_name_prefix=f"raftly-snapshot-{node_id}")
        self._installer = ThreadPoolExecutor(max_workers=1,
                                             thread_name_prefix=f"raftly-install-{node_id}")
        self.last_index = 0
        """The index of the newest snapshot this node holds (0: none)."""
        self._next_try = settings.entries
        self._taking: asyncio.Task[None] | None = None
        self._taken: SnapshotMeta | None = None
        self._arriving: dict[NodeId, IncomingSnapshot] = {}
        """Per leader, the snapshot file being received from it."""
        self._received: dict[SnapshotMeta, IncomingSnapshot] = {}
        """Files received whole and verified, until the core installs one. ``settle`` keeps
        only the one the core is about to install, so ignored ones cannot pile up on disk."""
        self._sending: dict[NodeId, tuple[InstallSnapshot, asyncio.Task[None]]] = {}
        self._checked: set[SnapshotMeta] = set()
        self._closing = False
        self.stats = {"taken": 0, "installed": 0, "sent": 0, "send_failures": 0}

    # -- start ------------------------------------------------------------------------------------

    async def recover(self, state: InitialState) -> tuple[InitialState, SnapshotMeta | None]:
        """Restore the state machine from the newest usable snapshot; return the state to
        build the node from (reloaded if the log had to be cut to that snapshot) and it."""
        loop = asyncio.get_running_loop()
        start = state.snapshot

        def log_term(index: int) -> int | None:
            if index == start.index:
                return start.term
            offset = index - start.index - 1
            return state.entries[offset].term if 0 <= offset < len(state.entries) else None

        def covered(meta: SnapshotMeta) -> bool:
            return meta.index >= start.index and log_term(meta.index) == meta.term

        meta = await loop.run_in_executor(self._installer, self.store.newest, covered)
        if meta is None or meta.index < start.index:
            if start.index > 0:
                raise StorageError(f"the log starts after index {start.index}, but no snapshot "
                                   f"in {self.store.directory} covers it")
            return state, None
        if log_term(meta.index) != meta.term:
            # A leader's snapshot became durable, then the node stopped before the log was cut
            # to it: finish that now (the log does not hold the snapshot's last entry).
            logger.info("node %s: cutting the log to snapshot %d/%d received before a restart",
                        self._id, meta.term, meta.index,
                        extra=event("log_cut_to_snapshot", index=meta.index,
                                    snapshot_term=meta.term))
            await loop.run_in_executor(self._disk, self._storage.compact, meta)
            state = await loop.run_in_executor(self._disk, self._storage.load)
        await self._restore(meta)
        self.last_index = meta.index
        self._next_try = meta.index + self._settings.entries
        logger.info("node %s restored its state machine from snapshot %d/%d", self._id,
                    meta.term, meta.index, extra=event("snapshot_restored", index=meta.index,
                                                        snapshot_term=meta.term))
        return state, meta

    async def _restore(self, meta: SnapshotMeta) -> None:
        # A machine that can restore in two steps (``prepare_restore``: read aside, then an
        # instant swap) gets its swap run here on the event loop, where it applies and serves
        # reads: nothing there sees the state change in the middle of a step.
        prepare: Callable[[SupportsRead], Callable[[], None]] | None = getattr(
            self._sm, "prepare_restore", None)

        def restore() -> Callable[[], None] | None:
            with self.store.open(meta) as source:
                if prepare is not None:
                    return prepare(source)
                self._sm.restore(source)
                return None

        swap = await asyncio.get_running_loop().run_in_executor(self._installer, restore)
        if swap is not None:
            swap()

    # -- taking -----------------------------------------------------------------------------------

    def maybe_take(self, node: RaftNode, applied: int) -> None:
        """Start a snapshot at ``applied`` if enough entries were applied since the last one.

        Called right after applying, on the event loop: the capture is consistent with exactly
        the entries applied so far."""
        if self._taking is not None or applied < self._next_try:
            return
        if applied < node.log.snapshot_index:
            return  # a leader's snapshot overtook what was just applied: it installs next
        meta = node.snapshot_meta(applied)
        capture = self._sm.capture()
        self._taking = asyncio.create_task(self._take(meta, capture),
                                           name=f"raftly node {self._id}: snapshot")

    async def _take(self, meta: SnapshotMeta, capture: SnapshotCapture) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()

        def write() -> int:
            writer = self.store.create(meta)
            try:
                capture.persist(writer)
                writer.commit()
            except BaseException:
                writer.abort()
                raise
            return writer.size

        try:
            size = await loop.run_in_executor(self._worker, write)
        except Exception as exc:
            # The log keeps everything: nothing is lost, the disk just keeps growing. Try again
            # after another round of entries rather than at once.
            logger.error("node %s could not write snapshot %d: %s", self._id, meta.index, exc,
                         extra=event("snapshot_failed", index=meta.index, reason=str(exc)))
            self._next_try = meta.index + self._settings.entries
            self._taking = None
            return
        took = loop.time() - began
        logger.info("node %s took snapshot %d/%d in %.3fs", self._id, meta.term, meta.index,
                    took, extra=event("snapshot_taken", index=meta.index, snapshot_term=meta.term,
                                      seconds=round(took, 6), size=size))
        self._observers.snapshot_taken(took, size, meta.index)
        self._taken = meta
        self._wake()

    async def finish_taken(self, node: RaftNode, applied: int) -> None:
        """Once a snapshot is durable: offer it to followers, cut the log behind it, and start
        the next one if ``applied`` (what the state machine holds now) is far enough ahead."""
        meta, self._taken = self._taken, None
        if meta is None:
            return
        self._taking = None
        self.stats["taken"] += 1
        if meta.index <= self.last_index:
            return  # a leader's newer snapshot was installed meanwhile
        self.last_index = meta.index
        self._next_try = meta.index + self._settings.entries
        node.snapshot_saved(meta)
        await self.compact(node, meta.index)
        self.maybe_take(node, applied)

    async def compact(self, node: RaftNode, snapshot_index: int) -> None:
        """Cut the log to ``retain`` entries behind the durable snapshot at ``snapshot_index``:
        the core first, then the storage, so the core never reads an entry storage dropped.

        Also called at start: a node stopped between a snapshot and its compaction would
        otherwise hold (and scan) the whole log until its next snapshot."""
        start = node.compact(max(0, snapshot_index - self._settings.kept))
        if start is not None:
            # Shielded: a close meanwhile must not cancel the queued job and leave the storage
            # holding the whole log that the core already let go of.
            await asyncio.shield(asyncio.get_running_loop().run_in_executor(
                self._disk, self._storage.compact, start))

    # -- receiving --------------------------------------------------------------------------------

    def sink(self, msg: InstallSnapshot) -> IncomingSnapshot:
        """Where the transport writes the snapshot file announced by ``msg`` (one transfer per
        leader at a time: a newer one replaces an older, as the transport does)."""
        incoming = self.store.receive()
        self._arriving[msg.src] = incoming
        return incoming

    def arrived(self, msg: InstallSnapshot) -> bool:
        """Whether the file of ``msg`` arrived whole and verified, so the core may be told
        (call ``settle`` once it was).

        The transport delivers the message only after that, but an InstallSnapshot that came
        some other way (a confused or hostile peer) has no file behind it: it is dropped.
        """
        incoming = self._arriving.get(msg.src)
        meta = msg.snapshot.meta
        if incoming is None or incoming.meta != meta:
            return False
        del self._arriving[msg.src]
        old = self._received.pop(meta, None)
        if old is not None:
            self.store.discard(old)
        self._received[meta] = incoming
        return True

    def settle(self, node: RaftNode) -> None:
        """After the core was told of a snapshot: keep only the file it will install (it may
        have taken this one, kept an earlier one, or ignored both)."""
        keep = node.snapshot_to_install
        for meta in [m for m in self._received if m != keep]:
            self.store.discard(self._received.pop(meta))

    def _discard_received(self) -> None:
        for incoming in self._received.values():
            self.store.discard(incoming)
        self._received.clear()

    async def install(self, meta: SnapshotMeta) -> None:
        """The core accepted the received snapshot ``meta``: make it this node's state."""
        incoming = self._received.pop(meta, None)
        if incoming is None:
            raise StorageError(f"the core installs snapshot {meta.term}/{meta.index}, "
                               "which was never received")
        self._discard_received()
        loop = asyncio.get_running_loop()
        # Durable first, then the log cut to it: a restart in between finds the snapshot
        # newer than the log and finishes the cut (see recover), so neither step is shielded.
        await loop.run_in_executor(self._installer, self.store.install, incoming)
        await loop.run_in_executor(self._disk, self._storage.compact, meta)
        await self._restore(meta)
        self.last_index = meta.index
        self._next_try = meta.index + self._settings.entries
        self.stats["installed"] += 1
        logger.info("node %s installed snapshot %d/%d from the leader", self._id, meta.term,
                    meta.index, extra=event("snapshot_installed", index=meta.index,
                                            snapshot_term=meta.term))

    # -- sending ----------------------------------------------------------------------------------

    def send(self, msg: InstallSnapshot, node: RaftNode) -> None:
        """Stream the snapshot ``msg`` names to its follower, then tell the core how it went.

        One transfer per follower: the same snapshot asked for again while on its way is not
        sent twice; a different one (a newer snapshot, a new term) replaces it, and only the
        newest transfer's outcome is reported.
        """
        peer = msg.dst
        running = self._sending.get(peer)
        if running is not None and not running[1].done():
            if running[0] == msg:
                return
            running[1].cancel()
        meta = msg.snapshot.meta
        held = contextlib.ExitStack()
        path = held.enter_context(self.store.hold(meta))  # now: a commit may prune meanwhile

        async def transfer() -> None:
            ok = False
            try:
                ok = await self._transport.send_snapshot(msg, path)
                held.close()
                if not ok:
                    await self._check_own_file(meta)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug, or a transport without snapshots: never silent
                logger.error("node %s could not send snapshot %d/%d to %s: %s", self._id,
                             meta.term, meta.index, peer, exc, extra=event(
                                 "snapshot_send_failed", peer=peer, reason=str(exc)))
            current = self._sending.get(peer)
            if current is not None and current[0] is msg:
                del self._sending[peer]
                self.stats["sent" if ok else "send_failures"] += 1
                node.report_snapshot(peer, ok)
                self._wake()

        name = f"raftly node {self._id}: snapshot to {peer}"
        task = asyncio.create_task(transfer(), name=name)
        task.add_done_callback(lambda _: held.close())  # even if cancelled before it ran
        self._sending[peer] = (msg, task)

    async def _check_own_file(self, meta: SnapshotMeta) -> None:
        """After a failed transfer: if our own file is damaged, every retry would fail the
        same way, so say so and take a fresh snapshot at the next apply. Each file is read
        through once at most, and not while closing."""
        if self._closing or meta in self._checked:
            return
        self._checked.add(meta)
        try:
            await asyncio.get_running_loop().run_in_executor(self._worker, verify,
                                                             self.store.path(meta))
        except (StorageError, OSError) as exc:
            logger.error("node %s: its snapshot %d is damaged or gone (%s); taking a new one",
                         self._id, meta.index, exc,
                         extra=event("snapshot_damaged", index=meta.index, reason=str(exc)))
            self._next_try = 0

    # -- stop -------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop transfers and snapshots. Call after the transport is closed (a file it still
        writes from a thread is aborted safely: ``IncomingSnapshot`` locks its descriptor)."""
        self._closing = True
        tasks = [t for t in (self._taking, *(task for _, task in self._sending.values()))
                 if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._discard_received()
        for arriving in self._arriving.values():
            self.store.discard(arriving)
        self._arriving.clear()
        # A persist under way finishes (threads cannot be interrupted) without blocking the
        # event loop, which other in-process nodes may share.
        for executor in (self._worker, self._installer):
            await asyncio.to_thread(executor.shutdown, True)

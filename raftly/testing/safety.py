"""``SafetyChecker``: the safety properties of Raft (paper, Figure 3), checked as a run goes.

The simulator reports every durable append, every application and every node's state after each
step; the checker keeps just enough global history to check each property in (amortized) constant
time per event, and raises ``SafetyViolation`` the moment one breaks.

Across membership changes: election safety stays global per term; a leader is a voter elected
by a majority of the voters of its configuration (learners' votes never count); a leader starts
a change only with an entry of its term committed and no other change uncommitted; and a new
leader uses a configuration at least as new as the newest committed one.
"""

from __future__ import annotations

from collections.abc import Sequence

from raftly.core.node import RaftNode, Role
from raftly.core.types import ConfState, Entry, EntryType, NodeId

# Enum members as module constants: on Python 3.11 ``Role.LEADER`` costs a metaclass
# __getattr__ hook (~70 ns), and these are read after every step of every node.
_LEADER = Role.LEADER
_CONFIG = EntryType.CONFIG


class SafetyViolation(AssertionError):
    """A Raft safety property broke."""


class SafetyChecker:
    """Checks election safety, leader append-only, log matching, leader completeness and state
    machine safety, plus: no node applies an index twice or out of order, a node jumps only
    forward by installing a snapshot, and a snapshot holds what was applied where it covers."""

    def __init__(self) -> None:
        self._leader_of_term: dict[int, NodeId] = {}
        self._entries: dict[tuple[int, int], tuple[int | None, Entry]] = {}
        """(index, term) -> (term of the previous entry, the entry), as first persisted."""
        self._applied: dict[int, Entry] = {}
        """index -> the entry applied there by whichever node applied it first."""
        self._last_applied: dict[NodeId, int] = {}
        self._leading: dict[NodeId, tuple[int, int, int]] = {}
        """node -> (term, last index, last term) while it leads."""
        self._max_applied = 0
        self._read_floors: dict[tuple[NodeId, bytes], int] = {}
        """(node, read context) -> the highest index any node had applied when it was asked."""
        self._ballots: dict[int, dict[NodeId, NodeId]] = {}
        """term -> node -> the candidate it voted for in that term, as seen."""
        self._committed_conf = 0
        """The index of the newest CONFIG entry applied anywhere."""

    def on_persist(self, node_id: NodeId, entries: list[Entry], prev_term: int | None) -> None:
        """Log matching: two entries with the same index and term hold the same command and
        follow entries of the same term, hence (by induction) identical prefixes.

        ``prev_term`` is the term the node's log held before ``entries[0]`` when they were
        handed out (None if compacted away).
        """
        known = self._entries
        for entry in entries:
            key = (entry.index, entry.term)
            first = known.get(key)
            if first is None:
                known[key] = (prev_term, entry)
            else:
                first_prev, first_entry = first
                # The simulator hands the leader's Entry objects to its followers: the same
                # object is the same command, the common case, decided without comparing data.
                if ((first_entry is not entry and (first_entry.data != entry.data
                                                   or first_entry.type != entry.type))
                        or (None not in (first_prev, prev_term) and first_prev != prev_term)):
                    raise SafetyViolation(
                        f"log matching: node {node_id} holds entry {key} as "
                        f"{_persisted(prev_term, entry)}, another node as "
                        f"{_persisted(first_prev, first_entry)}"
                    )
            prev_term = entry.term

    def on_restart(self, node_id: NodeId, applied_from: int) -> None:
        """A new instance of a node re-applies from its snapshot."""
        self._last_applied[node_id] = applied_from

    def on_snapshot_installed(self, node_id: NodeId, index: int,
                              commands: list[tuple[int, bytes]] | None) -> None:
        """A node jumped to ``index`` by restoring a leader's snapshot: it must be ahead of what
        the node applied, and hold what was applied at each index it covers."""
        last = self._last_applied.get(node_id, 0)
        if index <= last:
            raise SafetyViolation(
                f"node {node_id} applied index {index} right after {last} (by installing a "
                "snapshot: indexes applied twice)"
            )
        self.on_snapshot_taken(node_id, index, commands)
        self._last_applied[node_id] = index
        self._max_applied = max(self._max_applied, index)

    def on_snapshot_taken(self, node_id: NodeId, index: int,
                          commands: list[tuple[int, bytes]] | None) -> None:
        """State machine safety for snapshots: the commands a snapshot at ``index`` holds (when
        the simulator can read them) are exactly those applied at the indexes it covers."""
        if commands is None:
            return
        held = dict(commands)
        for at, command in commands:
            first = self._applied.get(at)
            if at > index or (first is not None and (first.type is not EntryType.COMMAND
                                                     or first.data != command)):
                raise SafetyViolation(
                    f"state machine safety: node {node_id}'s snapshot at {index} holds "
                    f"{command!r} at index {at}, but {first} was applied there"
                )
        for at, entry in self._applied.items():
            if at <= index and entry.type is EntryType.COMMAND and held.get(at) != entry.data:
                raise SafetyViolation(
                    f"state machine safety: node {node_id}'s snapshot at {index} lacks {entry} "
                    f"applied at index {at}"
                )

    def on_apply(self, node_id: NodeId, entry: Entry) -> None:
        self.on_apply_all(node_id, (entry,))

    def on_apply_all(self, node_id: NodeId, entries: Sequence[Entry]) -> None:
        """Entries a node applied, in order: each index once, in order, and the same entry
        at an index on every node (state machine safety)."""
        last = self._last_applied.get(node_id, 0)
        applied = self._applied
        try:
            for entry in entries:
                index = entry.index
                if index != last + 1:
                    raise SafetyViolation(
                        f"node {node_id} applied index {index} right after {last} "
                        "(an index applied twice, or one skipped)"
                    )
                last = index
                if entry.type is _CONFIG:
                    self._committed_conf = max(self._committed_conf, index)
                first = applied.setdefault(index, entry)
                # The same object, as the simulator shares entries: equal without comparing.
                if first is not entry and first != entry:
                    raise SafetyViolation(
                        f"state machine safety: node {node_id} applied {entry} at index "
                        f"{index}, another node applied {first}"
                    )
        finally:
            # Indexes only grow within a batch, so its last is the newest applied.
            self._last_applied[node_id] = last
            self._max_applied = max(self._max_applied, last)

    def on_read_issued(self, node_id: NodeId, context: bytes) -> None:
        self._read_floors[(node_id, context)] = self._max_applied

    def on_read_state(self, node_id: NodeId, index: int, context: bytes) -> None:
        """Linearizable reads: a read index covers every entry applied anywhere before the read
        was asked for (an acknowledged write was applied on its leader before the reply)."""
        floor = self._read_floors.pop((node_id, context), None)
        if floor is not None and index < floor:
            raise SafetyViolation(
                f"stale read: node {node_id} got read index {index} for {context!r}, but index "
                f"{floor} was already applied when the read was asked for"
            )

    def on_state(self, node: RaftNode) -> None:
        """Election safety, leader append-only and leader completeness."""
        # Called after every input to every node: the common cases (a follower; a leader whose
        # log did not change) return early.
        vote = node.vote
        if vote is not None:
            ballots = self._ballots.get(node.term)
            if ballots is None:
                ballots = self._ballots[node.term] = {}
            ballots[node.id] = vote
        if node.role is not _LEADER:
            self._leading.pop(node.id, None)
            return
        term, log = node.term, node.log
        last_index = log.last_index
        previous = self._leading.get(node.id)
        if previous is not None and previous[0] == term:
            # Still leading the term it was checked into: only its log can have gone wrong.
            _, prev_index, prev_term = previous
            if last_index < prev_index or log.term_at(prev_index) != prev_term:
                raise SafetyViolation(
                    f"leader append-only: leader {node.id} of term {term} lost or rewrote "
                    f"entry {prev_index}"
                )
            if last_index == prev_index:
                return
            self._check_changes(node, prev_index)
        else:
            holder = self._leader_of_term.setdefault(term, node.id)
            if holder != node.id:
                raise SafetyViolation(
                    f"election safety: nodes {holder} and {node.id} both lead term {term}"
                )
            self._check_elected(node)
            self._check_completeness(node)
            self._check_conf_is_current(node)
        self._leading[node.id] = (term, last_index, log.last_term)

    def _check_elected(self, node: RaftNode) -> None:
        """A leader is a voter of its configuration, elected by a majority of that
        configuration's voters: a learner's vote (or a stranger's) never counts."""
        voters = node.conf.voters
        ballots = self._ballots.get(node.term, {})
        granted = sorted(v for v in voters if ballots.get(v) == node.id)
        if node.id not in voters or 2 * len(granted) <= len(voters):
            raise SafetyViolation(
                f"election safety: node {node.id} leads term {node.term} with votes from "
                f"{granted} only ({_conf(node.conf)})")

    def _check_changes(self, node: RaftNode, checked: int) -> None:
        """A leader appended after ``checked``: each CONFIG entry it appended must follow a
        committed entry of its term, with no other configuration uncommitted before it."""
        log = node.log
        for index in range(checked + 1, log.last_index + 1):
            if log.entry(index).type is not EntryType.CONFIG:
                continue
            if log.term_at(log.commit) != node.term:
                raise SafetyViolation(
                    f"membership: leader {node.id} of term {node.term} started a change at "
                    f"{index} before committing an entry of its term")
            for earlier in range(index - 1, log.commit, -1):
                if log.entry(earlier).type is EntryType.CONFIG:
                    raise SafetyViolation(
                        f"membership: leader {node.id} of term {node.term} started a change at "
                        f"{index} while the one at {earlier} is not committed")

    def _check_conf_is_current(self, node: RaftNode) -> None:
        """A committed configuration is never lost: a new leader uses the newest configuration
        in its log, which is at or after the newest committed one."""
        log = node.log
        newest = None
        for index in range(log.last_index, max(self._committed_conf - 1, log.snapshot_index), -1):
            entry = log.entry(index)
            if entry.type is EntryType.CONFIG:
                newest = ConfState.decode(entry.data)
                break
        if newest is None and self._committed_conf > log.snapshot_index:
            raise SafetyViolation(
                f"membership: leader {node.id} of term {node.term} lacks the committed "
                f"configuration at {self._committed_conf}")
        if newest is not None and newest != node.conf:
            raise SafetyViolation(
                f"membership: leader {node.id} of term {node.term} uses {_conf(node.conf)}, but "
                f"the newest configuration in its log is {_conf(newest)}")

    def _check_completeness(self, node: RaftNode) -> None:
        log = node.log
        for index, entry in self._applied.items():
            if index > log.snapshot_index and log.term_at(index) != entry.term:
                raise SafetyViolation(
                    f"leader completeness: node {node.id} leads term {node.term} without "
                    f"committed entry {index} of term {entry.term}"
                )


def _persisted(prev_term: int | None, entry: Entry) -> tuple[int | None, bytes, int]:
    """What log matching compares of a persisted entry, for a violation report."""
    return prev_term, entry.data, int(entry.type)


def _conf(conf: ConfState) -> str:
    return f"voters={sorted(conf.voters)} learners={sorted(conf.learners)}"

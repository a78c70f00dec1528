"""What one single-server membership change does to a configuration, and when it is refused.

Pure arithmetic on ``ConfState``: the leader (``RaftNode.propose_conf_change``) adds the
refusals that depend on its log (a change in flight, no entry of its term committed, a learner
behind). Changing one server at a time keeps every majority of the old voters overlapping every
majority of the new ones, so no joint configuration is needed.
"""

from __future__ import annotations

from raftly.core.errors import ConfChangeRefused
from raftly.core.types import (
    UNIQUE_MEMBER_FIELDS,
    ConfChange,
    ConfChangeType,
    ConfState,
    Member,
)


def apply_change(conf: ConfState, change: ConfChange) -> ConfState:
    """The configuration after ``change``; raises ConfChangeRefused (nothing changes) if the
    change does not fit ``conf``."""
    node = change.member.id
    if change.type is ConfChangeType.ADD_LEARNER:
        new = ConfState(conf.voters, conf.learners | {node}, _members_with(conf, change.member))
    elif node not in conf.ids:
        raise ConfChangeRefused("unknown", f"node {node} is not a member")
    elif change.type is ConfChangeType.PROMOTE:
        if node not in conf.learners:
            raise ConfChangeRefused("not_learner", f"node {node} is already a voter")
        new = ConfState(conf.voters | {node}, conf.learners - {node}, conf.members)
    else:
        if conf.voters == {node}:
            raise ConfChangeRefused("last_voter", f"node {node} is the last voter")
        new = ConfState(conf.voters - {node}, conf.learners - {node},
                        tuple(m for m in conf.members if m.id != node))
    new.validate()
    return new


def _members_with(conf: ConfState, member: Member) -> tuple[Member, ...]:
    """The recorded members plus a new one; refused if its id, name or an address is in use."""
    if member.id in conf.ids:
        raise ConfChangeRefused("exists", f"node {member.id} is already a member")
    for other in conf.members:
        for what in UNIQUE_MEMBER_FIELDS:
            if getattr(member, what) and getattr(member, what) == getattr(other, what):
                raise ConfChangeRefused(
                    "exists", f"{what} {getattr(member, what)!r} is in use by node {other.id}")
    if not conf.members and member == Member(member.id):
        return ()  # nothing is recorded about anyone (the simulator): keep it that way
    # One record per node once any is recorded: nodes added before get bare records.
    known = {m.id: m for m in conf.members}
    known[member.id] = member
    return tuple(known.get(i, Member(i)) for i in sorted(conf.ids | {member.id}))

"""The held and dropped commit notices of RaftServer under a lossy, delaying, partitioning network.

The randomized safety suite drives RaftNode directly, so it never runs the server layer's holding
of entry-less appends (``RaftServer._send``). Here three servers on a ``MemoryNetwork`` whose links
delay every message at random (keeping each link's order), lose 5% of them, and cut a random node
off for a while every 50 proposals. Afterwards every follower must reach the leader's final commit
and every state machine must have applied the same commands at the same indexes.

Real time, seeded faults: every wait is bounded by ``eventually`` or a proposal timeout.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque

import pytest
from polling import eventually
from snapshot_helpers import FAST, Counter

from raftly.core.errors import NotLeader, ProposalDropped
from raftly.core.messages import AppendEntries, Message
from raftly.server import Busy, OutcomeUnknown, RaftServer
from raftly.storage import MemoryStorage
from raftly.transport import MemoryNetwork
from raftly.transport.codec import decode_message, encode_message

PROPOSALS = 300
LOSS = 0.05
MAX_DELAY = 0.003


def lossy_links(net: MemoryNetwork, rng: random.Random) -> dict[str, int]:
    """Replace ``net``'s routing: drop LOSS of the messages, delay the rest by U(0, MAX_DELAY)
    seconds, first in first out per link (each delivery takes the head of its link's queue)."""
    queues: dict[tuple[int, int], deque[Message]] = {}
    last_at: dict[tuple[int, int], float] = {}
    counts = {"empty_appends": 0}

    def deliver_head(link: tuple[int, int]) -> None:
        msg = queues[link].popleft()
        dst = net._transports[msg.dst]
        net._deliver(dst, msg)  # checks the link again on arrival

    def route(msg: Message) -> None:
        net.sent += 1
        dst = net._transports.get(msg.dst)
        if (dst is None or dst._loop is None or not net.link_up(msg.src, msg.dst)
                or rng.random() < LOSS):
            net.dropped += 1
            return
        if type(msg) is AppendEntries and not msg.entries:
            counts["empty_appends"] += 1
        link = (msg.src, msg.dst)
        loop = dst._loop
        at = max(loop.time() + rng.uniform(0, MAX_DELAY), last_at.get(link, 0.0))
        last_at[link] = at
        queues.setdefault(link, deque()).append(decode_message(encode_message(msg)))
        loop.call_at(at, deliver_head, link)

    net._route = route  # type: ignore[method-assign]
    return counts


def describe(servers: dict[int, RaftServer]) -> str:
    lines = []
    for i, s in servers.items():
        m = s.state_machine
        assert isinstance(m, Counter)
        lines.append(f"node {i}: value {m.value}, {len(m.applied)} applied, last {m.applied[-5:]}, "
                     f"commit {s.node.log.commit}, applied {s.status().applied_index}, "
                     f"term {s.status().term}, leader {s.is_leader}")
    return "\n".join(lines)


async def stress(seed: int) -> None:
    rng = random.Random(seed)
    net = MemoryNetwork()
    counts = lossy_links(net, rng)
    ids = [1, 2, 3]
    servers = {i: RaftServer(i, storage=MemoryStorage(), transport=net.transport(i),
                             state_machine=Counter(), bootstrap=frozenset(ids), config=FAST,
                             rng=random.Random(seed * 10 + i)) for i in ids}
    loop = asyncio.get_running_loop()
    reconnects: list[asyncio.TimerHandle] = []
    try:
        for server in servers.values():
            await server.start()

        async def leader() -> RaftServer:
            return await eventually(
                lambda: next((s for s in servers.values() if s.is_leader and s.failure is None),
                             None), what="a leader")

        current = await leader()
        for n in range(PROPOSALS):
            if n and n % 50 == 0:
                down = rng.choice(ids)
                net.disconnect(down)
                reconnects.append(loop.call_later(rng.uniform(0.05, 0.4), net.connect, down))
            try:
                await current.propose(b"1", timeout=0.5)
            except (NotLeader, ProposalDropped, OutcomeUnknown, Busy):
                current = await leader()
        net.heal()
        current = await leader()
        await current.propose(b"0", timeout=5)  # commits everything before it, in this term
        final = current.node.log.commit
        await eventually(lambda: all(s.node.log.commit >= final for s in servers.values()),
                         what=f"every follower's commit reaching {final}")
        # The server's applied index, not the log's (that one counts entries handed out to
        # be applied, which the ready loop applies after its save).
        await eventually(lambda: all(s.status().applied_index >= final
                                     for s in servers.values()),
                         what=f"every node applying up to {final}")
        applied = {(m.value, tuple(m.applied)) for s in servers.values()
                   if isinstance(m := s.state_machine, Counter)}
        assert len(applied) == 1, describe(servers)
        assert all(s.failure is None for s in servers.values())
        assert counts["empty_appends"] > 0  # the held notices did go out (and were lost, too)
    finally:
        for handle in reconnects:
            handle.cancel()
        for server in servers.values():
            await server.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_followers_reach_the_leaders_commit_under_delay_loss_and_disconnects(seed: int) -> None:
    asyncio.run(asyncio.wait_for(stress(seed), 30))

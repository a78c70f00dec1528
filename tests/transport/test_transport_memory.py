"""MemoryNetwork: in-process delivery on the event loop, with disconnects and partitions."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from polling import eventually
from transport_helpers import Sinks

from raftly.core.messages import AppendEntries, Heartbeat, InstallSnapshot, Message
from raftly.core.types import Entry, Snapshot, SnapshotMeta
from raftly.transport import MemoryNetwork, Transport


def hb(src: int, dst: int, commit: int = 0) -> Heartbeat:
    return Heartbeat(term=1, src=src, dst=dst, commit=commit)


async def started(net: MemoryNetwork, n: int) -> list[list[Message]]:
    inboxes: list[list[Message]] = [[] for _ in range(n)]
    for i in range(n):
        await net.transport(i).start(inboxes[i].append)
    return inboxes


def test_memory_transport_satisfies_the_protocol() -> None:
    assert isinstance(MemoryNetwork().transport(0), Transport)
    assert MemoryNetwork().transport(0) is not None


def test_delivery_is_on_the_loop_not_inside_send_and_copies_the_message() -> None:
    async def body() -> None:
        net = MemoryNetwork()
        inbox = await started(net, 2)
        msg = AppendEntries(term=1, src=0, dst=1, prev_index=0, prev_term=0, entries=[Entry(1, 1)])
        net.transport(0).send(msg)
        assert inbox[1] == []  # not delivered synchronously
        await eventually(lambda: len(inbox[1]) == 1)
        assert inbox[1] == [msg]
        assert inbox[1][0].entries is not msg.entries  # type: ignore[attr-defined]
        for i in range(2):
            await net.transport(i).close()

    asyncio.run(body())


def test_disconnect_partition_and_heal() -> None:
    async def body() -> None:
        net = MemoryNetwork()
        inbox = await started(net, 3)
        t = [net.transport(i) for i in range(3)]

        async def exchange() -> set[tuple[int, int]]:
            for box in inbox:
                box.clear()
            for a in range(3):
                for b in range(3):
                    if a != b:
                        t[a].send(hb(a, b))
            await asyncio.sleep(0)  # call_soon callbacks run on the next loop iteration
            await asyncio.sleep(0)
            return {(m.src, m.dst) for box in inbox for m in box}

        everyone = {(a, b) for a in range(3) for b in range(3) if a != b}
        assert await exchange() == everyone
        net.disconnect(2)
        assert await exchange() == {(0, 1), (1, 0)}
        net.connect(2)
        net.partition([0], [1, 2])
        assert await exchange() == {(1, 2), (2, 1)}
        net.heal()
        assert await exchange() == everyone
        await t[1].close()
        assert await exchange() == {(0, 2), (2, 0)}  # a closed transport neither gets nor sends
        assert net.dropped > 0

    asyncio.run(body())


def test_a_link_cut_while_a_message_is_in_flight_loses_it() -> None:
    async def body() -> None:
        net = MemoryNetwork(use_codec=False)
        inbox = await started(net, 2)
        net.transport(0).send(hb(0, 1))
        net.disconnect(1)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert inbox[1] == []
        assert net.delivered == 0 and net.dropped == 1

    asyncio.run(body())


def test_send_snapshot_fills_the_receivers_sink_then_delivers_and_fails_on_a_cut_link(
    tmp_path: Path,
) -> None:
    data = os.urandom(300_000)
    path = tmp_path / "snap"
    path.write_bytes(data)
    msg = InstallSnapshot(term=2, src=0, dst=1, snapshot=Snapshot(SnapshotMeta(9, 2)))

    async def body() -> None:
        net = MemoryNetwork()
        sinks = Sinks()
        inbox: list[Message] = []
        await net.transport(0).start(inbox.append)
        await net.transport(1).start(inbox.append, snapshot_sink=sinks)
        assert await net.transport(0).send_snapshot(msg, str(path), chunk_size=1 << 16)
        assert bytes(sinks.made[0].data) == data and sinks.made[0].finished
        assert inbox == [msg]
        net.disconnect(1)
        assert not await net.transport(0).send_snapshot(msg, str(path))
        net.connect(1)
        sinks.options["finish_error"] = "bad checksum"
        assert not await net.transport(0).send_snapshot(msg, str(path))
        assert sinks.made[-1].aborted and inbox == [msg]
        back = InstallSnapshot(term=2, src=1, dst=0, snapshot=msg.snapshot)
        assert not await net.transport(1).send_snapshot(back, str(path))  # 0 takes none

    asyncio.run(body())

"""``raftly member`` and ``raftly leader transfer`` against an in-process cluster on 127.0.0.1:
each prints one line and exits 0, or says why the cluster refused and exits 1."""

from __future__ import annotations

import asyncio
import contextlib
import io

from polling import eventually

from raftly.cli import main
from raftly.core.config import Config
from raftly.kv.service import LocalCluster

FAST = Config(tick_interval=0.01, heartbeat_interval=0.05, election_timeout=0.3)


async def raftly(*argv: str) -> tuple[int, str, str]:
    """Run the CLI in a thread (it blocks), capturing its output."""
    out, err = io.StringIO(), io.StringIO()

    def call() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return main(list(argv))

    code = await asyncio.to_thread(call)
    return code, out.getvalue(), err.getvalue()


def test_member_add_list_promote_remove_and_leader_transfer() -> None:
    async def main_() -> None:
        async with LocalCluster(3, config=FAST, members=True) as cluster:
            leader = await cluster.wait_for_leader()
            ep = ["--endpoints", ",".join(n.url.removeprefix("http://") for n in cluster.nodes)]
            code, out, err = await raftly("member", "add", "n9", "--raft", "127.0.0.1:1",
                                          "--api", "127.0.0.1:2", "--learner", *ep)
            assert code == 0 and out.startswith("added n9 as a learner"), err
            code, out, _ = await raftly("member", "list", *ep)
            assert code == 0 and any(line.split()[:3:2] == ["n9", "learner"]
                                     for line in out.splitlines()), out
            # n9 never ran: far behind, so it is not promoted; the refusal says by how much.
            code, out, err = await raftly("member", "promote", "n9", *ep)
            assert code == 1 and "409" in err and "behind" in err, err
            code, out, err = await raftly("member", "remove", "n9", *ep)
            assert code == 0 and out.startswith("removed n9"), err
            code, out, err = await raftly("member", "remove", "n9", *ep)
            assert code == 1 and "404" in err, err
            target = next(n for n in cluster.nodes if n is not leader)
            code, out, err = await raftly("leader", "transfer", target.name, *ep)
            assert (code, out) == (0, f"{target.name} leads\n"), err
            await eventually(lambda: target.server.is_leader, 5.0)

    asyncio.run(asyncio.wait_for(main_(), 60))

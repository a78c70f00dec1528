"""Backup and restore with real processes: ``raftly snapshot save`` from a follower of cluster A
(the request is sent on to the leader), ``inspect``, ``restore`` of every member of a new
3-node cluster B from that one file, then B serves exactly A's keys at the save (a lease with
its key, not a deleted key, not what A wrote after), takes new writes, and refuses A's peers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from e2e_helpers import cli, dump_logs, new_cluster
from polling import eventually, wait_until

from raftly.core.messages import Heartbeat
from raftly.kv.client import Client
from raftly.localcluster import ProcessCluster
from raftly.transport import TcpTransport


def _kv_list(endpoints: list[str]) -> str:
    run = cli("kv", "list", "--json", endpoints=endpoints)
    assert run.code == 0, run.err
    return run.out


def test_save_from_a_follower_then_restore_a_new_cluster_that_holds_exactly_the_saved_keys(
    cluster: ProcessCluster, tmp_path: Path,
) -> None:
    a = cluster
    leader, _ = a.wait_for_leader()
    follower = next(name for name in a.names if name != leader)
    with Client(a.endpoints, timeout=20.0) as client:
        for i in range(300):
            client.put(f"key/{i:03d}", f"value {i}".encode())
        client.put("binary", bytes(range(256)))
        client.put("gone", b"deleted before the save")
        assert client.delete("gone")
        lease = client.lease_grant(3600)
        client.put("leased", b"with a lease", lease=lease.id)
        saved = _kv_list(a.endpoints)
        backup = tmp_path / "a.rbk"
        run = cli("snapshot", "save", str(backup), endpoints=[a.nodes[follower].api])
        assert run.code == 0, run.err
        assert run.out.startswith(f"saved {backup}: index ") and "302 keys" in run.out, run.out
        client.put("after/the-save", b"not in the backup")

    # An existing file is kept unless --force.
    again = cli("snapshot", "save", str(backup), endpoints=a.endpoints)
    assert again.code == 1 and "exists" in again.err and "--force" in again.err, again.err
    inspected = cli("snapshot", "inspect", "--json", str(backup))
    assert inspected.code == 0, inspected.err
    meta = json.loads(inspected.out)
    assert (meta["keys"], meta["leases"]) == (302, 1)
    assert meta["cluster_id"] == a.spec.cluster_id and meta["index"] >= meta["revision"] > 300

    b = new_cluster(tmp_path / "b")
    assert b.spec.cluster_id != a.spec.cluster_id
    b.write_cluster_file()
    try:
        for name, node in b.nodes.items():
            run = cli("snapshot", "restore", str(backup), "--cluster", str(b.cluster_file),
                      "--data-dir", str(node.data_dir), "--id", name)
            assert run.code == 0, run.err
            assert f"index {meta['index']}, term {meta['term']}, 302 keys" in run.out, run.out
        # A second restore into a seeded directory is refused and changes nothing.
        node = b.nodes["n1"]
        refused = cli("snapshot", "restore", str(backup), "--cluster", str(b.cluster_file),
                      "--data-dir", str(node.data_dir), "--id", "n1")
        assert refused.code == 1 and "not empty" in refused.err, refused.err
        b.start()
        b_leader, _ = b.wait_for_leader(timeout=30.0)
        assert _kv_list(b.endpoints) == saved
        with Client(b.endpoints, timeout=20.0) as client:
            assert client.get("gone") is None and client.get("after/the-save") is None
            assert [(x.id, x.keys) for x in client.leases()] == [(lease.id, ["leased"])]
            assert client.get_entry("leased").lease == lease.id  # type: ignore[union-attr]
            assert client.put("new/in-b", b"written after the restore") > meta["index"]
            assert client.get("new/in-b") == b"written after the restore"
        statuses = b.statuses()
        assert {s["cluster_id"] for s in statuses.values() if s} == {b.spec.cluster_id}
        _a_peer_is_refused_by_b(a, b, b_leader)
    finally:
        b.stop(grace=5.0)
        dump_logs(b)


def _a_peer_is_refused_by_b(a: ProcessCluster, b: ProcessCluster, b_leader: str) -> None:
    """A node of A (A's cluster id, a raft id B uses) dialling B's leader with a heartbeat of a
    far higher term is refused at the handshake: B's leader keeps leading in its term."""
    status = b.status(b_leader)
    assert status is not None
    term = status["term"]
    target = b.nodes[b_leader].spec
    victim = next(n.spec for n in b.nodes.values() if n.name != b_leader)

    async def intrude() -> None:
        t = TcpTransport(victim.id, ("127.0.0.1", 0),
                         {target.id: (target.raft.host, target.raft.port)},
                         cluster_id=a.spec.cluster_id)
        await t.start(lambda _: None)
        try:
            t.send(Heartbeat(term=1_000_000, src=victim.id, dst=target.id, commit=0, seq=1))
            await eventually(lambda: t.stats()["connect_failures"] >= 1, timeout=20.0,
                             what="the dial refused")
        finally:
            await t.close()

    asyncio.run(intrude())
    log = wait_until("B's leader logs the refusal",
                     lambda: "is not this cluster's" in b.nodes[b_leader].log_tail(200)
                     and b.nodes[b_leader].log_tail(200))
    assert repr(a.spec.cluster_id) in log
    after = b.status(b_leader)
    assert after is not None and after["role"] == "leader" and after["term"] == term


def test_save_on_a_cluster_with_an_auth_file_needs_an_admin_token(tmp_path: Path) -> None:
    read, admin = "read-token-0123456789", "admin-token-0123456789"
    auth = tmp_path / "auth.toml"
    auth.write_text(f'[[tokens]]\ntoken = "{read}"\nrole = "read"\nname = "reader"\n'
                    f'[[tokens]]\ntoken = "{admin}"\nrole = "admin"\nname = "ops"\n')
    cluster = new_cluster(tmp_path / "c", serve_options=["--auth-file", str(auth)])
    cluster.token = read  # its own status polls
    cluster.env["RAFTLY_TOKEN"] = read  # the nodes' look-ups of each other
    try:
        cluster.start()
        cluster.wait_for_leader(timeout=30.0)
        refused = cli("snapshot", "save", str(tmp_path / "r.rbk"), "--token", read,
                      endpoints=cluster.endpoints)
        assert refused.code == 1 and "forbidden (403)" in refused.err, refused.err
        assert not (tmp_path / "r.rbk").exists()
        saved = cli("snapshot", "save", str(tmp_path / "a.rbk"), endpoints=cluster.endpoints,
                    env={"RAFTLY_TOKEN": admin})
        assert saved.code == 0 and "0 keys" in saved.out, saved.err
    finally:
        cluster.stop(grace=5.0)
        dump_logs(cluster)

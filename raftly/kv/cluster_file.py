"""The cluster file: which nodes form a cluster and where each listens, read from TOML.

::

    cluster_id = "demo"          # optional; default derived from the sorted node names
    [nodes.n1]
    raft = "127.0.0.1:7001"      # host:port of the Raft transport
    api  = "127.0.0.1:8001"      # host:port of the HTTP API
    id   = 1                     # optional; default a stable hash of the name

The file only says where nodes are and who bootstraps the cluster; once running, the Raft log
is the one source of membership, so nodes can never disagree because a local file overrides it.
"""

from __future__ import annotations

import re
import tomllib
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
NAME_PATTERN = _NAME
"""What a node name may be (also for members added at run time)."""
RESERVED_NAMES = frozenset({"client"})
"""Names no node may take: ``raftly certs`` issues the client certificate with CN "client", and
a peer's identity is its certificate's CN, so a member named "client" could be impersonated by
anyone holding the client certificate."""


def usable_name(name: object) -> bool:
    """Whether ``name`` may name a node (in a cluster file or a join request)."""
    return isinstance(name, str) and bool(_NAME.match(name)) and name not in RESERVED_NAMES
MAX_NODE_ID = 0x7FFFFFFF


class ClusterFileError(ValueError):
    """The cluster file is missing, not TOML, or describes an impossible cluster."""


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The HTTP base URL of an API address (``base_url(tls=False)``)."""
        return self.base_url(tls=False)

    def base_url(self, tls: bool) -> str:
        """The base URL of an API address: https when the cluster serves TLS (a cluster is all
        TLS or all plain, so one node's setting says how to reach every member)."""
        return f"{'https' if tls else 'http'}://{self}"


@dataclass(frozen=True, slots=True)
class NodeSpec:
    name: str
    id: int
    raft: Address
    api: Address


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    cluster_id: str
    nodes: tuple[NodeSpec, ...]

    def node(self, name: str) -> NodeSpec:
        for spec in self.nodes:
            if spec.name == name:
                return spec
        raise ClusterFileError(
            f"no node named {name!r} in the cluster file (nodes: "
            f"{', '.join(n.name for n in self.nodes)})")

    def by_id(self, node_id: int) -> NodeSpec | None:
        for spec in self.nodes:
            if spec.id == node_id:
                return spec
        return None

    @property
    def ids(self) -> frozenset[int]:
        return frozenset(n.id for n in self.nodes)


def name_to_id(name: str) -> int:
    """The default Raft id of a node: a stable hash of its name (positive, 31 bits)."""
    return zlib.crc32(name.encode("utf-8")) & MAX_NODE_ID


def parse_address(text: object, where: str) -> Address:
    """``host:port`` or ``[v6host]:port``."""
    if not isinstance(text, str):
        raise ClusterFileError(f"{where}: expected a \"host:port\" string, got {text!r}")
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
    else:
        host, sep, port_text = text.rpartition(":")
        if ":" in host:
            raise ClusterFileError(f"{where}: write an IPv6 address as [host]:port, not {text!r}")
    if not sep or not host or not port_text.isdigit():
        raise ClusterFileError(f"{where}: expected \"host:port\", got {text!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ClusterFileError(f"{where}: port {port} out of range")
    return Address(host, port)


def parse_cluster(data: Mapping[str, object], source: str = "cluster file") -> ClusterSpec:
    """Validate an already-parsed TOML document; see the module docstring for the layout."""
    unknown = set(data) - {"nodes", "cluster_id"}
    if unknown:
        raise ClusterFileError(f"{source}: unknown top-level keys {sorted(unknown)}")
    nodes_table = data.get("nodes")
    if not isinstance(nodes_table, dict) or not nodes_table:
        raise ClusterFileError(f"{source}: needs at least one [nodes.NAME] table")
    nodes: list[NodeSpec] = []
    for name, table in nodes_table.items():
        where = f"{source}: [nodes.{name}]"
        if not usable_name(name):
            raise ClusterFileError(
                f"{where}: a node name is 1-63 letters, digits, '_', '.', '-' (not 'client'),"
                f" not {name!r}")
        if not isinstance(table, dict):
            raise ClusterFileError(f"{where}: must be a table with raft and api addresses")
        extra = set(table) - {"raft", "api", "id"}
        if extra:
            raise ClusterFileError(f"{where}: unknown keys {sorted(extra)}")
        for required in ("raft", "api"):
            if required not in table:
                raise ClusterFileError(f"{where}: missing {required} = \"host:port\"")
        raw_id = table.get("id", None)
        if raw_id is None:
            node_id = name_to_id(name)
        elif type(raw_id) is not int or not 1 <= raw_id <= MAX_NODE_ID:
            raise ClusterFileError(f"{where}: id must be an integer from 1 to {MAX_NODE_ID}")
        else:
            node_id = raw_id
        nodes.append(NodeSpec(name, node_id, parse_address(table["raft"], f"{where} raft"),
                              parse_address(table["api"], f"{where} api")))
    _check_unique(nodes, source)
    cluster_id = data.get("cluster_id")
    if cluster_id is None:
        cluster_id = "raftly:" + ",".join(sorted(n.name for n in nodes))
    elif not isinstance(cluster_id, str) or not cluster_id or len(cluster_id) > 255:
        raise ClusterFileError(f"{source}: cluster_id must be a non-empty string (≤ 255)")
    return ClusterSpec(cluster_id, tuple(sorted(nodes, key=lambda n: n.name)))


def _check_unique(nodes: list[NodeSpec], source: str) -> None:
    seen_ids: dict[int, str] = {}
    seen_addrs: dict[Address, str] = {}
    for node in nodes:
        other = seen_ids.setdefault(node.id, node.name)
        if other != node.name:
            raise ClusterFileError(
                f"{source}: nodes {other!r} and {node.name!r} have the same raft id {node.id}"
                " (set a distinct `id = N` on one of them)")
        for kind, addr in (("raft", node.raft), ("api", node.api)):
            # Port 0 means "any free port" (tests); it cannot clash.
            if addr.port == 0:
                continue
            other = seen_addrs.setdefault(addr, f"{node.name} {kind}")
            if other != f"{node.name} {kind}":
                raise ClusterFileError(
                    f"{source}: {node.name} {kind} address {addr} is also {other}")


def load_cluster(path: str | Path) -> ClusterSpec:
    """Read and validate the cluster file at ``path``."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ClusterFileError(f"cannot read cluster file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ClusterFileError(f"{path}: not valid TOML: {exc}") from None
    return parse_cluster(data, str(path))


def parse_cluster_text(text: str, source: str = "cluster file") -> ClusterSpec:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ClusterFileError(f"{source}: not valid TOML: {exc}") from None
    return parse_cluster(data, source)


def render_cluster(spec: ClusterSpec) -> str:
    """The TOML text of ``spec`` (used to write the file of a local cluster)."""
    lines = [f"cluster_id = {_toml_str(spec.cluster_id)}", ""]
    for node in spec.nodes:
        lines += [f"[nodes.{node.name}]", f"id = {node.id}",
                  f"raft = {_toml_str(str(node.raft))}", f"api = {_toml_str(str(node.api))}", ""]
    return "\n".join(lines)


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


__all__ = ["NAME_PATTERN", "RESERVED_NAMES", "Address", "ClusterFileError", "ClusterSpec",
           "NodeSpec", "load_cluster", "name_to_id", "parse_address", "parse_cluster",
           "parse_cluster_text", "render_cluster", "usable_name"]

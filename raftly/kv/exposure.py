"""Whether a node listens beyond this host without protection, and the warning ``serve`` logs.

Plaintext on loopback is the zero-setup default of a local cluster; anywhere else anyone who can
reach the ports can read the traffic (no TLS) or write every key (no auth file). ``serve`` then
logs one WARNING line saying what is missing and which flag adds it.
"""

from __future__ import annotations

import ipaddress

from raftly.kv.cluster_file import NodeSpec


def is_loopback(host: str) -> bool:
    """Whether ``host`` is only reachable from this machine (a wildcard address is not)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may well resolve to a public address


def exposure_warning(spec: NodeSpec, *, tls: bool, auth: bool) -> str | None:
    """The warning for a node listening on ``spec``'s addresses, or None when there is none."""
    exposed = [f"{kind} {address}" for kind, address in (("raft", spec.raft), ("api", spec.api))
               if not is_loopback(address.host)]
    missing = []
    if not tls:
        missing.append("without TLS (--tls-dir): anyone on the network can read and forge "
                       "its traffic")
    if not auth:
        missing.append("without an auth file (--auth-file): anyone who reaches the API can "
                       "write every key and change the membership")
    if not exposed or not missing:
        return None
    return (f"node {spec.name} listens on a non-loopback address ({', '.join(exposed)}) "
            + " and ".join(missing))


__all__ = ["exposure_warning", "is_loopback"]

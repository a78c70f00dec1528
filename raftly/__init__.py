"""raftly: the Raft consensus algorithm for Python, and a replicated key-value service built on it.

The layers (see docs/architecture.md): ``raftly.core`` is the algorithm as a pure state
machine, ``raftly.storage`` keeps a node's state durable, ``raftly.testing`` runs whole clusters
on a virtual clock.
"""

__version__ = "0.1.0"

# The KV clients, loaded on first use so that `import raftly` stays light.
_LAZY = {"Client": "raftly.kv.client", "AsyncClient": "raftly.kv.client"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'raftly' has no attribute {name!r}")

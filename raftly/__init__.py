"""raftly: the Raft consensus algorithm for Python, and a replicated key-value service built on it.

The layers (see DESIGN.md): ``raftly.core`` is the algorithm as a pure state machine,
``raftly.storage`` keeps a node's state durable, ``raftly.testing`` runs whole clusters on a
virtual clock.
"""

__version__ = "0.1.0"

"""The replicated key-value service built on the library API: state machine, HTTP API, client.

``raftly.kv.state_machine`` is the deterministic store and its command encoding;
``raftly.kv.cluster_file`` reads the cluster's TOML file; ``raftly.kv.http`` is the aiohttp API;
``raftly.kv.service`` wires a node together; ``raftly.kv.client`` talks to a cluster. Import the
submodules directly: this package imports nothing heavy on its own.
"""

"""``raftly bench``: throughput and latency of a local 3-node cluster, over HTTP and the library.

Two measurements, each a closed loop of C concurrent clients (default C = 1, 16, 64, 256) that
write 16-byte values for ``--seconds`` per level, after a short unmeasured warm-up:

- **http**: three real nodes, each a separate ``raftly serve``-equivalent process
  (``raftly.kv.service.serve`` on a generated cluster file, DiskStorage in a temporary directory),
  driven by one aiohttp ``ClientSession`` with C tasks, each a closed loop of
  ``PUT /v1/kv/KEY`` sent straight to the leader (found first through ``/v1/status``).
- **library**: three ``RaftServer`` objects in this process, talking real TCP on loopback, each
  with DiskStorage in a temporary directory and a trivial state machine; C coroutines each a
  closed loop of ``await leader.propose(value)``. No HTTP. Note that all three nodes and the
  clients then share one event loop and one CPU.

Printed per C: completed writes per second, p50 and p99 latency in ms, errors (non-200 answers,
NotLeader, Busy...), and the mean entries per fsync on the leader and on the followers over the
measured window: group commit at work (at 64 clients one fsync should carry many entries).

fsync is on by default (``--fsync never`` to measure without it). Every level of every run is
measured on a fresh cluster per run; with ``--runs N`` the table shows the median of each column
over the N runs. The machines are noisy: quote figures from ``--runs 3`` or more, and compare
systems side by side in one sitting.

``--compare`` (``compare.py``) is that sitting: raftly over HTTP and as a library (one process
and three), etcd over HTTP with the same client, and PySyncObj, in rounds that alternate the
systems; the raw fsync floor, reads, overload and the simulator beside them; absolute figures,
ratios and the targets of issue 16, on stdout and in OUT/compare.json, OUT/compare.md and two
SVG plots.

The benchmark always ends by itself: every wait has a deadline, and the node processes and
temporary directories are removed on the way out, on error and on Ctrl-C too (the node
processes also die with this process on Linux).

``--tls`` measures the cost of TLS instead: the HTTP benchmark (default at 1 and 64 clients)
on a plain cluster and on a TLS cluster (TLS between the nodes, https from the client) in the
same run, then the TLS/plain ratios of throughput and p50.

On a terminal, a progress line on stderr counts the measurements (``progress.py``); the output
ends with a one-line summary.

Usage: ``raftly bench [--clients 1,16,64,256] [--seconds 5] [--runs 1] [--fsync always|never]
[--mode both|http|library] [--dir BASE] [--tls] [--progress|--no-progress]``;
``raftly bench --compare [--clients 1,16,64,256] [--seconds S] [--rounds N] [--systems LIST]
[--out DIR] [--event-loop auto|asyncio|uvloop] [--value-size B] [--no-extras]``
"""


from raftly.bench.cli import build_parser, main
from raftly.bench.http import bench_http
from raftly.bench.library import bench_library
from raftly.bench.load import closed_loop
from raftly.bench.stats import Row, Sample, format_ratios, format_table, summarize

__all__ = ["Row", "Sample", "bench_http", "bench_library", "build_parser", "closed_loop",
           "format_ratios", "format_table", "main", "summarize"]

"""Fault-injecting runs of real raftly clusters, checked for linearizability (``raftly check``).

- ``proxy``: a TCP proxy per directed link between nodes, to cut the network without touching
  the nodes;
- ``cluster``: the node processes (start, SIGKILL, restart, SIGSTOP/SIGCONT);
- ``nemesis``: the seeded fault schedule and the task that plays it;
- ``clients``: the workload, one attempt per op, outcomes classified for the checker;
- ``history``: the history and nemesis logs (JSON lines, one clock);
- ``report``: the self-contained HTML report;
- ``progress``: what the progress line shows while a run goes on (phase, time, ops, faults);
- ``runner``: ``main(argv)``, the command itself.

The checker is ``raftly.testing.linearizability``.
"""

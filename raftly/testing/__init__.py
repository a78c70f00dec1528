"""Tools to test Raft and what runs on it: the deterministic cluster simulator and its checks.

``SimCluster`` runs a whole cluster in one process on a virtual clock; point its
``state_machine`` argument at your own state machine to test it under partitions and crashes.
"""

from raftly.testing.budget import BudgetExceeded, SimBudget
from raftly.testing.safety import SafetyChecker, SafetyViolation
from raftly.testing.sim import RecordingStateMachine, SimCluster

__all__ = ["BudgetExceeded", "RecordingStateMachine", "SafetyChecker", "SafetyViolation",
           "SimBudget", "SimCluster"]

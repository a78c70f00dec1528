"""supports_snapshots: which state machines have the snapshot hooks (core/state_machine.py)."""

from __future__ import annotations

from raftly.core.state_machine import SnapshotCapture, SupportsRead, supports_snapshots


class ApplyOnly:
    def apply(self, index: int, command: bytes) -> object:
        return index


class Snapshotting(ApplyOnly):
    def capture(self) -> SnapshotCapture:
        raise NotImplementedError

    def restore(self, source: SupportsRead) -> None:
        raise NotImplementedError


class CaptureAttribute(ApplyOnly):
    capture = None  # an attribute of that name is not the hook
    restore = Snapshotting.restore


def test_a_machine_with_capture_and_restore_supports_snapshots() -> None:
    assert supports_snapshots(Snapshotting())


def test_a_machine_without_the_hooks_does_not() -> None:
    assert not supports_snapshots(ApplyOnly())
    assert not supports_snapshots(CaptureAttribute())
    assert not supports_snapshots(object())

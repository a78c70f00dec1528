"""The child processes of one benchmark run (etcd, PySyncObj, raftly nodes): started in their own
process groups, dying with the benchmark, and always stopped and reaped on the way out.

``Children`` is a context manager: whatever ends the block (a result, an error, Ctrl-C, SIGTERM
turned into SystemExit), every child gets SIGTERM, then SIGKILL after a grace period, and is
waited for. Each child also gets SIGKILL from Linux if the benchmark itself dies without
cleaning up (``python -m raftly.bench.children --parent PID -- ARGV`` sets that up, then execs
ARGV).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from raftly.localproc import die_with_parent

if TYPE_CHECKING:
    from raftly.bench.stats import Sample

STOP_GRACE = 5.0
"""Seconds a child gets to exit on SIGTERM before it is killed."""


class ChildFailed(RuntimeError):
    """A child exited before its work was done, or did not finish in time; the message carries
    the tails of the children's logs."""


class Children:
    """Processes started with ``start``, each logging to its own file; stopped on exit."""

    __slots__ = ("logs", "procs")

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self, argv: Sequence[str], log: Path, env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        """Start ``argv`` (stdout and stderr to ``log``), killed by Linux if we die first."""
        launcher = [sys.executable, "-m", "raftly.bench.children", "--parent", str(os.getpid()),
                    "--", *argv]
        with open(log, "ab") as out:
            proc = subprocess.Popen(launcher, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True, env=env)
        self.procs.append(proc)
        self.logs.append(log)
        return proc

    def tails(self, chars: int = 1500) -> str:
        """The end of every child's log, for an error message."""
        parts = []
        for log in self.logs:
            try:
                text = log.read_text(errors="replace")[-chars:]
            except OSError:
                text = "(no log)"
            parts.append(f"--- {log.name}:\n{text}")
        return "\n".join(parts)

    def check_alive(self, what: str) -> None:
        """Raise ChildFailed if a child has exited."""
        for proc, log in zip(self.procs, self.logs, strict=True):
            code = proc.poll()
            if code is not None:
                raise ChildFailed(f"{what}: {log.stem} exited with code {code}\n{self.tails()}")

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str,
                 interval: float = 0.05, *, while_alive: bool = True) -> None:
        """Poll ``condition`` until true; ChildFailed after ``timeout`` s or (``while_alive``)
        as soon as a child exits."""
        deadline = time.monotonic() + timeout
        while not condition():
            if while_alive:
                self.check_alive(what)
            if time.monotonic() > deadline:
                raise ChildFailed(f"{what}: not done within {timeout:g} s\n{self.tails()}")
            time.sleep(interval)

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM every process group, SIGKILL what is left after ``grace`` s; reap all."""
        for proc in self.procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(grace)

    def __enter__(self) -> Children:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def measure_in_children(argvs: Sequence[Sequence[str]], root: Path, out: Path, budget: float,
                        what: str) -> list[Sample]:
    """Start one child per command line (logs under ``root``), wait up to ``budget`` s for one
    of them (the leader's) to write its Samples as JSON to ``out``, stop them all, and return
    the Samples. ChildFailed, with the children's logs, if a child exits first or time runs
    out."""
    from raftly.bench.stats import sample_from_json

    with Children() as children:
        for i, argv in enumerate(argvs):
            children.start(argv, root / f"node{i}.log")
        children.wait_for(out.exists, budget, what, 0.1)
        try:
            data = json.loads(out.read_text())
            if not isinstance(data, list):
                raise ValueError("not a list of samples")
            return [sample_from_json(d) for d in data]
        except ValueError as exc:
            raise ChildFailed(f"{what}: bad result in {out}: {exc}") from None


LEAD_STABLE = 1.0
"""Seconds a node child must have led before it measures (the others then know it too)."""
ELECTION_BUDGET = 30.0
"""Seconds a node child waits for a leader to settle before it gives up."""


def int_list(text: str) -> list[int]:
    """``"1,2,3"`` as ``[1, 2, 3]``: the node children's ``--ports`` and ``--clients``."""
    return [int(x) for x in text.split(",") if x]


class LeadWatch:
    """In a node child, polled every POLL s: has this node led long enough to measure (the
    others then know it too), has another node measured already, or is time up?"""

    __slots__ = ("_deadline", "_out", "_since", "_stable")

    POLL = 0.05

    def __init__(self, out: str | Path, budget: float, stable: float) -> None:
        self._out = Path(out)
        self._deadline = time.monotonic() + budget
        self._stable = stable
        self._since: float | None = None

    def poll(self, leads: bool) -> str | None:
        """"measure", "other" (another node wrote the result), "timeout", or None (poll
        again)."""
        now = time.monotonic()
        if now > self._deadline:
            return "timeout"
        if not leads:
            self._since = None
            return "other" if self._out.exists() else None
        self._since = self._since or now
        return "measure" if now - self._since >= self._stable else None


def write_samples(samples: Sequence[Sample], out: str | Path) -> None:
    """In the measuring child: the Samples as JSON, atomically (the parent polls for ``out``)."""
    from raftly.bench.stats import sample_to_json

    tmp = Path(f"{out}.tmp")
    tmp.write_text(json.dumps([sample_to_json(s) for s in samples]))
    os.replace(tmp, out)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _launch(argv: list[str]) -> int:
    """``--parent PID -- ARGV``: die with PID (SIGKILL), then become ARGV."""
    if len(argv) < 4 or argv[0] != "--parent" or argv[2] != "--":
        sys.stderr.write("usage: python -m raftly.bench.children --parent PID -- ARGV\n")
        return 2
    die_with_parent(signal.SIGKILL, parent=int(argv[1]))
    os.execvp(argv[3], argv[3:])


__all__ = ["ELECTION_BUDGET", "LEAD_STABLE", "STOP_GRACE", "ChildFailed", "Children", "LeadWatch",
           "int_list", "measure_in_children", "write_samples"]

if __name__ == "__main__":
    sys.exit(_launch(sys.argv[1:]))

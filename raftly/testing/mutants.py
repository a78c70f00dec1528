"""Mutation testing of the safety suite: inject classic Raft bugs one at a time, see what catches
them.

The fuzzer and the simulator's safety checks are raftly's main evidence of correctness, so their
strength is measured here rather than assumed. Each ``Mutant`` in ``CATALOGUE`` is one bug that
real Raft implementations have shipped, written as exact text replacements against the current
source. A run copies the ``raftly`` package to a temporary directory, applies one mutant there
(the tree itself never changes), and runs, with the copy first on the import path:

- the fuzzer on seeds ``0:N`` (``python -m raftly.testing.fuzz``), stopped at the first failing
  seed, with a wall-clock limit per seed so a run-away simulation is reported as a hang;
- the scenario suite (``tests/testing/test_scenarios_*.py`` and ``tests/core``, plus any tests the
  mutant names), stopped at the first failing test.

A mutant whose replacement text is not found exactly once (the code moved) *does not apply*: it
is reported as such, never skipped. Command line::

    python -m raftly.testing.mutants --seeds 1000 [--only ID[,ID]] [--jobs 2] [--no-scenarios]

Standard library only: it drives the project through subprocesses.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

PACKAGE = "raftly"
SCENARIO_TESTS = ("tests/testing/test_scenarios_*.py", "tests/core")
"""The scenario suite every mutant runs against, relative to the project root."""


@dataclass(slots=True, frozen=True)
class Patch:
    """Replace ``old`` by ``new`` in ``path`` (relative to the project root); ``old`` must occur
    exactly once, so a patch never lands somewhere its author did not mean."""

    path: str
    old: str
    new: str


@dataclass(slots=True, frozen=True)
class Mutant:
    """One injected bug: an id, what it breaks, where it is known from, and how to inject it."""

    id: str
    description: str
    source: str
    patches: tuple[Patch, ...]
    tests: tuple[str, ...] = ()
    """Tests beyond the scenario suite that guard this bug (e.g. the storage contract tests)."""


_NODE = "raftly/core/node.py"
_LOG = "raftly/core/log.py"

CATALOGUE: tuple[Mutant, ...] = (
    Mutant(
        "figure8-commit",
        "the leader commits an entry of an earlier term by counting replicas",
        "Raft paper, section 5.4.2 and Figure 8",
        (Patch(_NODE,
               "if quorum_index > self.log.commit and self.log.term_at(quorum_index) == self.term:",
               "if quorum_index > self.log.commit:"),),
    ),
    Mutant(
        "vote-not-persisted",
        "a vote is answered before it is durable, so a crash forgets it",
        "Raft paper, Figure 2 ('persistent state ... updated before responding to RPCs')",
        (Patch(_NODE,
               "if isinstance(msg, HeartbeatResponse) or (",
               "if isinstance(msg, (HeartbeatResponse, RequestVoteResponse)) or ("),),
    ),
    Mutant(
        "vote-twice",
        "a node grants its vote to a second candidate in the same term",
        "Raft paper, Figure 2, RequestVote receiver rule 2 (votedFor is null or candidateId)",
        (Patch(_NODE,
               "could_vote = self.vote == msg.src or (self.vote is None and self.leader is None)",
               "could_vote = self.vote == msg.src or self.leader is None"),),
    ),
    Mutant(
        "vote-stale-log",
        "a vote is granted to a candidate whose log is less up to date",
        "Raft paper, section 5.4.1 (election restriction)",
        (Patch(_NODE,
               "granted = could_vote and self.log.is_up_to_date(msg.last_log_index, "
               "msg.last_log_term)",
               "granted = could_vote"),),
    ),
    Mutant(
        "up-to-date-term-only",
        "'at least as up to date' compares the last terms only, not the lengths",
        "Raft paper, section 5.4.1; a common misreading of the comparison",
        (Patch(_LOG,
               "return last_term > our_term or (last_term == our_term "
               "and last_index >= self.last_index)",
               "return last_term >= our_term"),),
    ),
    Mutant(
        "follower-commit-beyond-match",
        "a follower commits the leader's commit index beyond what it matched "
        "(and the leader no longer bounds the commit it sends)",
        "Raft paper, Figure 2, AppendEntries receiver rule 5 (min(leaderCommit, last new entry))",
        (Patch(_NODE, "log.commit_to(min(msg.commit, last_new))",
               "log.commit_to(min(msg.commit, log.last_index))"),
         Patch(_NODE, "commit = min(log.commit, last)", "commit = log.commit")),
    ),
    Mutant(
        "truncate-on-stale-append",
        "a stale or reordered AppendEntries truncates entries the follower already holds",
        "Raft paper, Figure 2, AppendEntries receiver rule 3 (truncate only on a conflict)",
        (Patch(_LOG,
               "            if existing == entry.term:\n"
               "                continue\n"
               "            if existing is not None:\n",
               "            if existing is not None:\n"),),
    ),
    Mutant(
        "read-without-quorum",
        "a leader serves a read at once, without a heartbeat round confirming it still leads",
        "Raft thesis, section 6.4 (ReadIndex step 3)",
        (Patch(_NODE, "if self.voters == {self.id}:", "if True:"),),
    ),
    Mutant(
        "read-before-noop",
        "a new leader takes a read index before its no-op of the term commits",
        "Raft thesis, section 6.4 (ReadIndex step 1)",
        (Patch(_NODE, "if self.log.term_at(self.log.commit) != self.term:", "if False:"),),
    ),
    Mutant(
        "leader-counts-undurable",
        "the leader counts itself towards a commit for entries it has not made durable",
        "Raft thesis, section 10.2.1 (writing to the leader's disk in parallel)",
        (Patch(_NODE,
               "        return pr.match if pr is not None else 0\n",
               "        if peer == self.id:\n"
               "            return self.log.last_index\n"
               "        return pr.match if pr is not None else 0\n"),),
    ),
    Mutant(
        "apply-skipped-on-restart",
        "a restarted node takes its durable commit index as applied, skipping entries its "
        "fresh state machine never saw",
        "Raft paper, Figure 2 (lastApplied is volatile); a recurring bug in Raft libraries",
        (Patch(_LOG, "self.applied = snapshot.index", "self.applied = self.commit"),),
    ),
    Mutant(
        "apply-twice",
        "the last committed entry is handed out to be applied again with the next Ready",
        "Raft paper, Figure 2 (apply each index once, in order); an off-by-one in lastApplied",
        (Patch(_LOG,
               "entries = self.slice(self.applied + 1, self.commit)\n"
               "        self.applied = self.commit\n",
               "entries = self.slice(self.applied + 1, self.commit)\n"
               "        self.applied = self.commit - 1\n"),),
    ),
    Mutant(
        "storage-commit-beyond-log",
        "the storage accepts, and reads back, a commit index beyond its durable log",
        "the Storage contract (raftly/storage/base.py); entries must be durable before the commit",
        (Patch("raftly/storage/checks.py",
               "if hard_state is not None and hard_state.commit > last_index:",
               "if False:"),),
        tests=("tests/storage/test_storage_conformance.py",),
    ),
    Mutant(
        "conf-change-in-flight",
        "a leader starts a membership change while another is not yet committed",
        "Ongaro, 'bug in single-server membership changes' (raft-dev, 2015); Raft thesis 4.1",
        (Patch(_NODE, "if self._conf_index > self.log.commit:", "if False:"),),
    ),
    Mutant(
        "learner-votes",
        "learners count as voters: they vote, are asked for votes and count towards a commit",
        "etcd raft learners (a learner must never count in a quorum)",
        (Patch(_NODE, "self.voters = self.conf.voters", "self.voters = self.conf.ids"),),
    ),
    Mutant(
        "stale-snapshot-accepted",
        "a follower restores a snapshot older than its commit index (a late or duplicate "
        "InstallSnapshot), rolling its state machine back",
        "Raft paper, section 7 (InstallSnapshot receiver rules 6-8); etcd raft's restore() "
        "guard against snapshots at or below the commit index",
        (Patch(_NODE,
               "if meta.index > log.commit and not log.matches(meta.index, meta.term):",
               "if not log.matches(meta.index, meta.term):"),
         Patch(_LOG,
               "if meta.index <= self.commit:\n            raise InvariantError(f\"restore to",
               "if False:\n            raise InvariantError(f\"restore to")),
    ),
)


class Verdict(Enum):
    CAUGHT = "caught"
    CAUGHT_HANG = "caught (hang)"
    MISSED = "missed"
    DOES_NOT_APPLY = "does not apply"
    ERROR = "error"
    """The runner itself could not run the mutant (e.g. the copy was not the code imported)."""


@dataclass(slots=True, frozen=True)
class FuzzOutcome:
    seeds_run: int
    """Seeds run up to and including the first failing one (all of them if none failed)."""
    failed_seed: int | None = None
    prop: str | None = None
    """The property that fired, or "hang" / "crash: ..." for a run that never reported one."""
    message: str = ""


@dataclass(slots=True, frozen=True)
class SuiteOutcome:
    failed_test: str | None
    prop: str | None = None
    message: str = ""


@dataclass(slots=True, frozen=True)
class MutantResult:
    mutant: Mutant
    verdict: Verdict
    fuzz: FuzzOutcome | None = None
    suite: SuiteOutcome | None = None
    detail: str = ""
    """Why a mutant does not apply, or what went wrong for ERROR."""

    @property
    def caught(self) -> bool:
        return self.verdict in (Verdict.CAUGHT, Verdict.CAUGHT_HANG)

    def line(self) -> str:
        """One line for the report: the verdict, then what each harness found."""
        head = f"{self.mutant.id:<30} {self.verdict.value:<15}"
        parts = []
        if self.detail:
            parts.append(self.detail)
        if self.fuzz is not None:
            f = self.fuzz
            if f.failed_seed is None:
                parts.append(f"fuzz: {f.seeds_run} seeds passed")
            else:
                parts.append(f"fuzz: seed {f.failed_seed} ({f.prop})")
        if self.suite is not None:
            s = self.suite
            parts.append("scenarios: passed" if s.failed_test is None
                         else f"scenarios: {s.failed_test} ({s.prop})")
        return f"{head} {'; '.join(parts)}"


class DoesNotApply(Exception):
    """A mutant's replacement text no longer matches the source (the code moved)."""


# -- properties --------------------------------------------------------------------------------

_PROPERTY_PREFIXES = (
    ("election safety", "election safety"),
    ("leader append-only", "leader append-only"),
    ("log matching", "log matching"),
    ("leader completeness", "leader completeness"),
    ("state machine safety", "state machine safety"),
    ("stale read", "linearizable reads"),
    ("membership", "membership changes"),
    ("no progress after healing", "liveness after healing"),
    ("nodes applied different histories", "convergence after healing"),
)


def property_of(message: str) -> str:
    """The property a violation message reports, from the wording of ``SafetyChecker``, the
    simulator and the fuzzer; a core invariant or other error is named by its exception."""
    text = message.strip()
    for prefix, prop in _PROPERTY_PREFIXES:
        if text.startswith(prefix):
            return prop
    if re.match(r"node \S+ applied index \d+ right after", text):
        return "apply order (an index applied twice or skipped)"
    m = re.match(r"(?:[\w.]+\.)?(\w+(?:Error|Violation|Exception)): ?(.*)", text, re.DOTALL)
    if m:
        name, rest = m.groups()
        if name == "SafetyViolation":
            return property_of(rest)
        if name == "InvariantError":
            return "invariant (InvariantError)"
        head = rest.strip().splitlines()[0] if rest.strip() else ""
        return f"{name}: {head[:60]}" if head else name
    first = text.splitlines()[0] if text else "?"
    return f"assertion: {first[:60]}" if first.startswith("assert") else first[:60]


# -- applying a mutant to a copy ---------------------------------------------------------------

def project_root() -> Path:
    """The directory holding the ``raftly`` package (and ``tests`` in a checkout)."""
    return Path(__file__).resolve().parents[2]


def patched_texts(root: Path, mutant: Mutant) -> dict[str, str]:
    """The mutated text of each file ``mutant`` patches under ``root``, nothing written.

    DoesNotApply if a patch leaves the package, if a replacement's text is not found exactly
    once, or if the result no longer compiles.
    """
    texts: dict[str, str] = {}
    for n, patch in enumerate(mutant.patches, 1):
        if not patch.path.startswith(PACKAGE + "/"):
            raise DoesNotApply(f"patch {n}: {patch.path} is outside the {PACKAGE} package")
        path = root / patch.path
        if patch.path not in texts:
            if not path.is_file():
                raise DoesNotApply(f"patch {n}: {patch.path} does not exist")
            texts[patch.path] = path.read_text(encoding="utf-8")
        count = texts[patch.path].count(patch.old)
        if count != 1:
            where = "not found" if count == 0 else f"found {count} times"
            raise DoesNotApply(f"patch {n} in {patch.path}: {patch.old.strip()!r} {where}")
        texts[patch.path] = texts[patch.path].replace(patch.old, patch.new)
    for rel, text in texts.items():
        try:
            compile(text, rel, "exec")
        except SyntaxError as e:
            raise DoesNotApply(f"{rel} no longer compiles once patched: {e}") from None
    return texts


def check_applies(mutant: Mutant, root: Path | None = None) -> str | None:
    """Why ``mutant`` does not apply to the source under ``root``, or None if it does."""
    try:
        patched_texts(root or project_root(), mutant)
    except DoesNotApply as e:
        return str(e)
    return None


@contextlib.contextmanager
def _mutated_copy(mutant: Mutant, root: Path) -> Iterator[Path]:
    """A temporary directory holding a mutated copy of the package (DoesNotApply if it won't)."""
    texts = patched_texts(root, mutant)
    with tempfile.TemporaryDirectory(prefix=f"raftly-mutant-{mutant.id}-") as tmp:
        copy = Path(tmp)
        shutil.copytree(root / PACKAGE, copy / PACKAGE,
                        ignore=shutil.ignore_patterns("__pycache__"))
        for rel, text in texts.items():
            (copy / rel).write_text(text, encoding="utf-8")
        yield copy


def _env(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(copy), env.get("PYTHONPATH"))))
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # nothing written next to the tree's tests
    env["PYTHONUNBUFFERED"] = "1"  # the fuzzer's per-seed lines arrive as they happen
    return env


def _imported_from(copy: Path) -> Path:
    """Where a subprocess run like the harnesses are run imports the package from."""
    out = subprocess.run(
        [sys.executable, "-c", f"import {PACKAGE}; print({PACKAGE}.__file__)"],
        cwd=copy, env=_env(copy), capture_output=True, text=True, check=True, timeout=60)
    return Path(out.stdout.strip()).resolve()


# -- the fuzzer --------------------------------------------------------------------------------

_SEED_LINE = re.compile(r"seed (\d+): (ok|FAILED)")


def run_fuzz(copy: Path, seeds: int, seed_timeout: float) -> FuzzOutcome:
    """Run the copy's fuzzer on seeds ``0:seeds``, stopping at the first failing seed.

    A seed that reports nothing for ``seed_timeout`` wall-clock seconds is a hang (a normal seed
    takes well under a second); an exit without a report is a crash, named by its last line.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", f"{PACKAGE}.testing.fuzz", "--seeds", f"0:{seeds}"],
        cwd=copy, env=_env(copy), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    done = 0
    failed: int | None = None
    report: list[str] = []
    tail: list[str] = []
    try:
        while True:
            try:
                line = lines.get(timeout=seed_timeout)
            except queue.Empty:
                return FuzzOutcome(done + 1, done, "hang",
                                   f"seed {done} still running after {seed_timeout:g} s")
            if line is None:
                break
            m = _SEED_LINE.match(line)
            if m and failed is not None:
                break  # the failing seed's report is complete
            if m and m.group(2) == "ok":
                done = int(m.group(1)) + 1
            elif m:
                failed = int(m.group(1))
            elif failed is not None:
                report.append(line)
                if line.lstrip().startswith("replay:"):
                    break
            else:
                tail = [*tail[-20:], line]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    if failed is not None:
        message = "\n".join(report)
        return FuzzOutcome(failed + 1, failed, property_of(message), message)
    if proc.returncode != 0 or done < seeds:
        last = next((t for t in reversed(tail) if t.strip()), "no output")
        return FuzzOutcome(done + 1, done, f"crash: {property_of(last)}", "\n".join(tail))
    return FuzzOutcome(done)


# -- the scenario suite ------------------------------------------------------------------------

_CHECK_PLUGIN = f'''\
"""Loaded into the mutant's pytest run: records where {PACKAGE} was imported from."""
import os
import sys


def pytest_sessionfinish(session, exitstatus):
    module = sys.modules.get("{PACKAGE}")
    with open(os.environ["RAFTLY_MUTANT_IMPORTED"], "w", encoding="utf-8") as f:
        f.write(getattr(module, "__file__", None) or "")
'''

_FAILED_LINE = re.compile(r"^(?:FAILED|ERROR) (\S+)(?: - (.*))?$")


def run_suite(copy: Path, root: Path, extra: Sequence[str], timeout: float) -> SuiteOutcome:
    """Run the scenario suite (and ``extra`` tests) on the copy; stop at the first failure.

    The tests are the tree's, the package the copy's: pytest runs in the copy's directory, and
    a plugin records which package the session imported, so a run that tested the unmutated
    tree cannot pass for one that tested the mutant.
    """
    paths = sorted({str(p) for pattern in (*SCENARIO_TESTS, *extra) for p in root.glob(pattern)})
    if not paths:
        raise RuntimeError(f"no scenario tests under {root}: run from a source checkout")
    (copy / "raftly_mutant_check.py").write_text(_CHECK_PLUGIN, encoding="utf-8")
    imported = copy / "imported.txt"
    env = _env(copy)
    env["RAFTLY_MUTANT_IMPORTED"] = str(imported)
    env["COLUMNS"] = "1000"  # pytest cuts the summary's failure messages to the terminal width
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
             "-p", "raftly_mutant_check", "--rootdir", str(root), *paths],
            cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return SuiteOutcome("(timeout)", "hang", f"the suite ran over {timeout:g} s")
    found = Path(imported.read_text(encoding="utf-8")) if imported.exists() else None
    if found is None or not found.resolve().is_relative_to(copy.resolve()):
        raise RuntimeError(f"the scenario suite imported {PACKAGE} from {found}, not the "
                           f"mutated copy in {copy}\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    if out.returncode == 0:
        return SuiteOutcome(None)
    for line in out.stdout.splitlines():
        m = _FAILED_LINE.match(line)
        if m:
            path, _, name = m.group(1).partition("::")
            test = f"{os.path.relpath((copy / path).resolve(), root)}::{name}"
            message = m.group(2) or ""
            return SuiteOutcome(test, property_of(message), message)
    return SuiteOutcome("(pytest)", f"error (exit {out.returncode})",
                        (out.stdout + out.stderr)[-2000:])


# -- running mutants ---------------------------------------------------------------------------

@dataclass(slots=True, frozen=True)
class RunOptions:
    seeds: int = 1000
    scenarios: bool = True
    seed_timeout: float = 30.0
    suite_timeout: float = 120.0


def run_mutant(mutant: Mutant, options: RunOptions, root: Path | None = None) -> MutantResult:
    """Inject ``mutant`` into a copy of the package and run the harnesses on it."""
    root = root or project_root()
    try:
        with _mutated_copy(mutant, root) as copy:
            where = _imported_from(copy)
            if not where.is_relative_to(copy.resolve()):
                return MutantResult(mutant, Verdict.ERROR,
                                    detail=f"{PACKAGE} imported from {where}, not the copy")
            fuzz = run_fuzz(copy, options.seeds, options.seed_timeout)
            suite = (run_suite(copy, root, mutant.tests, options.suite_timeout)
                     if options.scenarios else None)
    except DoesNotApply as e:
        return MutantResult(mutant, Verdict.DOES_NOT_APPLY, detail=str(e))
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        return MutantResult(mutant, Verdict.ERROR, detail=str(e).splitlines()[0])
    # A hang is a catch only when nothing reported a property: it names no broken property.
    fuzz_reported = fuzz.failed_seed is not None and fuzz.prop != "hang"
    suite_reported = suite is not None and suite.failed_test is not None and suite.prop != "hang"
    if fuzz_reported or suite_reported:
        verdict = Verdict.CAUGHT
    elif fuzz.prop == "hang" or (suite is not None and suite.prop == "hang"):
        verdict = Verdict.CAUGHT_HANG
    else:
        verdict = Verdict.MISSED
    return MutantResult(mutant, verdict, fuzz, suite)


def score_line(results: Sequence[MutantResult]) -> str:
    """caught / total, and how many fuzz seeds it took to catch each mutant the fuzzer caught."""
    caught = [r for r in results if r.caught]
    to_catch = sorted(r.fuzz.seeds_run for r in results
                      if r.fuzz is not None and r.fuzz.failed_seed is not None)
    line = f"score: {len(caught)}/{len(results)} caught"
    hangs = sum(r.verdict is Verdict.CAUGHT_HANG for r in results)
    if hangs:
        line += f" ({hangs} only as a hang)"
    if to_catch:
        line += (f"; fuzz seeds to first catch: median {statistics.median(to_catch):g}, "
                 f"max {to_catch[-1]} ({len(to_catch)} caught by the fuzzer)")
    return line


def select(only: str | None) -> list[Mutant]:
    """The catalogue, or the mutants named in a comma-separated ``only``."""
    if not only:
        return list(CATALOGUE)
    by_id = {m.id: m for m in CATALOGUE}
    wanted = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in by_id]
    if unknown:
        raise ValueError(f"unknown mutant(s): {', '.join(unknown)}; known: {', '.join(by_id)}")
    return [by_id[name] for name in wanted]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {PACKAGE}.testing.mutants",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=1000, help="fuzz seeds 0:N per mutant")
    parser.add_argument("--only", help="run only these mutants (comma-separated ids)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run in parallel")
    parser.add_argument("--no-scenarios", action="store_true", help="run the fuzzer only")
    parser.add_argument("--seed-timeout", type=float, default=30.0,
                        help="wall-clock seconds one fuzz seed may run before it is a hang")
    parser.add_argument("--list", action="store_true", help="list the catalogue and exit")
    args = parser.parse_args(argv)
    try:
        mutants = select(args.only)
    except ValueError as e:
        parser.error(str(e))
    if args.list:
        for m in mutants:
            print(f"{m.id:<30} {m.description}\n{'':<30} from: {m.source}")
        return 0
    options = RunOptions(seeds=args.seeds, scenarios=not args.no_scenarios,
                         seed_timeout=args.seed_timeout)
    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = []
        # Printed in catalogue order as each finishes, so a long run shows its progress.
        for result in pool.map(lambda m: run_mutant(m, options), mutants):
            print(result.line(), flush=True)
            results.append(result)
    print(score_line(results))
    print(f"({len(results)} mutants, {options.seeds} seeds each, "
          f"{time.perf_counter() - began:.0f} s)")
    return 0 if all(r.caught for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

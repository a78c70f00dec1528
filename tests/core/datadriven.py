"""A small datadriven runner: text files of commands with their expected output underneath.

The format is that of cockroachdb/datadriven, as used by etcd-io/raft's ``testdata/*.txt``::

    # a comment
    propose 1 foo
    ----
    index=3

Blocks are separated by blank lines; lines starting with ``#`` between blocks are comments. An
expected output never contains a blank line (commands print ``ok`` when they have nothing to
say). With ``rewrite`` the file is written back with the actual outputs, comments kept.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SEPARATOR = "----"


@dataclass(slots=True)
class Case:
    """One command of a transcript, with where it sits in the file."""

    line: int
    """The 1-based line of the command, for error messages."""
    command: str
    expected: list[str]
    start: int
    """Index (0-based) of the command line in the file."""
    end: int
    """Index just past the expected output."""


class TranscriptError(AssertionError):
    """A command's output differs from the transcript, or the file is malformed."""


def parse(text: str, path: str = "<transcript>") -> list[Case]:
    lines = text.splitlines()
    cases: list[Case] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            i += 1
            continue
        if i + 1 >= len(lines) or lines[i + 1] != SEPARATOR:
            raise TranscriptError(f"{path}:{i + 1}: expected {SEPARATOR!r} after {line!r}")
        end = i + 2
        while end < len(lines) and lines[end].strip():
            end += 1
        cases.append(Case(i + 1, line.strip(), lines[i + 2:end], i, end))
        i = end
    return cases


def run(path: Path, execute: Callable[[str], str], *, rewrite: bool = False) -> None:
    """Run every command of ``path`` in order through ``execute``; compare or rewrite outputs.

    Later commands depend on the state earlier ones left, so the first mismatch stops the run.
    """
    text = path.read_text()
    lines = text.splitlines()
    cases = parse(text, str(path))
    actual_outputs: list[list[str]] = []
    for case in cases:
        try:
            output = execute(case.command)
        except Exception as exc:
            raise TranscriptError(f"{path}:{case.line}: {case.command!r} raised {exc!r}") from exc
        actual = [line.rstrip() for line in (output.strip("\n") or "ok").splitlines()]
        if any(not line for line in actual):
            raise TranscriptError(f"{path}:{case.line}: output of {case.command!r} "
                                  "has a blank line, which the format cannot hold")
        actual_outputs.append(actual)
        if not rewrite and actual != case.expected:
            diff = "\n".join(difflib.unified_diff(case.expected, actual, "expected", "actual",
                                                  lineterm=""))
            raise TranscriptError(f"{path}:{case.line}: output of {case.command!r} differs "
                                  f"(run pytest with --rewrite to accept it):\n{diff}")
    if rewrite:
        path.write_text(rewritten(lines, cases, actual_outputs))


def rewritten(lines: list[str], cases: list[Case], outputs: list[list[str]]) -> str:
    """The file's lines with each case's expected output replaced by ``outputs``."""
    result: list[str] = []
    position = 0
    for case, output in zip(cases, outputs, strict=True):
        result += lines[position:case.start]
        result += [case.command, SEPARATOR, *output]
        position = case.end
    result += lines[position:]
    return "\n".join(result) + "\n"

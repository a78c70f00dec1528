"""Transcript tests of the core: each ``testdata/*.txt`` file is a scenario of commands (see
``interaction_env``) with the expected output pinned underneath. ``pytest --rewrite``
regenerates the outputs; review the diff before committing it."""

from __future__ import annotations

from pathlib import Path

import pytest
from datadriven import TranscriptError, parse, run
from interaction_env import InteractionEnv

TESTDATA = Path(__file__).parent / "testdata"


@pytest.mark.parametrize("path", sorted(TESTDATA.glob("*.txt")), ids=lambda p: p.stem)
def test_transcript(path: Path, request: pytest.FixtureRequest) -> None:
    run(path, InteractionEnv().execute, rewrite=request.config.getoption("--rewrite"))


def test_a_mismatch_names_the_file_and_line_of_the_command_and_shows_a_diff(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.txt"
    path.write_text("# header\necho a\n----\na\n\necho b\n----\nc\n")
    with pytest.raises(TranscriptError) as info:
        run(path, lambda line: line.split()[1])
    message = str(info.value)
    assert f"{path}:6:" in message and "'echo b'" in message
    assert "-c" in message and "+b" in message


def test_rewrite_replaces_outputs_and_keeps_comments(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("# header\necho a\n----\nstale\nlines\n\n# between\necho b\n----\n")
    run(path, lambda line: line.split()[1], rewrite=True)
    assert path.read_text() == "# header\necho a\n----\na\n\n# between\necho b\n----\nb\n"
    run(path, lambda line: line.split()[1])


def test_a_command_without_separator_is_reported_with_its_line() -> None:
    with pytest.raises(TranscriptError, match=r"t\.txt:2:"):
        parse("# x\nstatus 1\nstatus 2\n", "t.txt")

"""``raftly serve --config FILE``: every option can come from the ``[serve]`` table, the command
line wins over the file and the file over the defaults, and each mistake in the file is one line
naming the file and the key (exit 1) before anything starts."""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path
from typing import Any

import pytest

from raftly.cli import build_parser, main
from raftly.cli.serve_config import options
from raftly.kv import service


def _serve_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    assert parser._subparsers is not None
    for action in parser._subparsers._group_actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices["serve"]
    raise AssertionError("no serve subcommand")


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


def _write(tmp_path: Path, text: str, name: str = "node.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def raftly(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(argv))
    return code, err.getvalue()


def test_the_file_fills_in_what_the_command_line_leaves_out_and_the_command_line_wins(
        tmp_path: Path) -> None:
    config = _write(tmp_path, '[serve]\nid = "n2"\nelection-timeout = 2\nfsync = "never"\n'
                              'snapshot-entries = 500\nlog-format = "json"\n')
    args = _parse("--config", str(config), "--fsync", "always", "--snapshot-entries", "7")
    assert args.id == "n2" and args.election_timeout == 2.0 and args.log_format == "json"
    assert args.fsync == "always" and args.snapshot_entries == 7  # the command line wins
    assert args.heartbeat == 0.1 and args.segment_size == 64 << 20  # neither: the defaults
    # Wherever --config stands, and however it is spelled.
    again = _parse("--fsync", "always", f"--config={config}", "--snapshot-entries", "7")
    assert vars(again) == vars(args)


def test_every_option_of_serve_can_be_a_key(tmp_path: Path) -> None:
    parser = _serve_parser()
    keys = options(parser)
    assert {"data-dir", "election-timeout", "log-format", "tls-dir", "client-cert-auth",
            "max-watches", "token", "metrics"} <= set(keys)
    # Every action of serve (but --help and --config) is reachable by a key, switches included.
    actions = {action.dest for action in parser._actions if action.option_strings
               and action.dest not in ("help", "config")}
    assert {action.dest for action in keys.values()} == actions
    lines, expected = [], {}
    for key, action in keys.items():
        if isinstance(action, argparse._StoreTrueAction):
            lines.append(f"{key} = true")
            expected[action.dest] = True
        elif isinstance(action, argparse._StoreFalseAction):
            lines.append(f"{key} = false")  # the switch given: metrics = false is --no-metrics
            expected[action.dest] = False
        elif action.choices is not None:
            choice = list(action.choices)[-1]
            lines.append(f'{key} = "{choice}"')
            expected[action.dest] = choice
        elif action.type in (None, str):
            lines.append(f'{key} = "value-{key}"')
            expected[action.dest] = (str(tmp_path / f"value-{key}")
                                     if action.metavar in ("FILE", "DIR") else f"value-{key}")
        else:
            lines.append(f"{key} = 3")
            expected[action.dest] = action.type("3")  # type: ignore[misc]
    config = _write(tmp_path, "[serve]\n" + "\n".join(lines) + "\n")
    args = vars(_parse("--config", str(config)))
    assert {dest: args[dest] for dest in expected} == expected
    assert len(expected) == len(actions)


def test_a_switch_that_turns_something_off_is_a_positive_key(tmp_path: Path) -> None:
    off = _write(tmp_path, "[serve]\nmetrics = false\n")
    on = _write(tmp_path, "[serve]\nmetrics = true\n", "on.toml")
    assert _parse("--config", str(off)).metrics is False
    assert _parse("--config", str(on)).metrics is True
    assert _parse("--config", str(on), "--no-metrics").metrics is False  # the command line wins


def test_relative_paths_in_the_file_are_relative_to_the_file(tmp_path: Path) -> None:
    config = _write(tmp_path, '[serve]\ncluster = "cluster.toml"\ndata-dir = "/srv/n1"\n'
                              'id = "n1"\n')
    args = _parse("--config", str(config))
    assert args.cluster == str(tmp_path / "cluster.toml")
    assert args.data_dir == "/srv/n1" and args.id == "n1"


def test_the_values_from_the_file_reach_the_node(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    async def fake_serve(*args: Any, **kwargs: Any) -> None:
        seen.update(kwargs, cluster=args[0], name=args[1])

    monkeypatch.setattr(service, "serve", fake_serve)
    config = _write(tmp_path, '[serve]\ncluster = "c.toml"\nid = "n3"\ndata-dir = "d"\n'
                              'fsync = "never"\nmax-watches = 9\nsnapshot-entries = 40\n')
    assert raftly("serve", "--config", str(config), "--max-watches", "11") == (0, "")
    assert seen["cluster"] == str(tmp_path / "c.toml") and seen["name"] == "n3"
    assert seen["fsync"] == "never" and seen["max_watches"] == 11
    assert seen["snapshot"].entries == 40


@pytest.mark.parametrize(("text", "message"), [
    ('[serve]\ndata_dir = "x"\n',
     "unknown key 'data_dir' in [serve]: keys are spelled like the options, with dashes: "
     "write data-dir"),
    ("[serve]\nelecton-timeout = 1\n",
     "unknown key 'electon-timeout' in [serve] (did you mean election-timeout?)"),
    ("[serve]\nfrobnicate = 1\n", "unknown key 'frobnicate' in [serve] (see `raftly serve "
                                  "--help`)"),
    ('[serve]\nconfig = "other.toml"\n',
     "unknown key 'config' in [serve]: a config file cannot name another one"),
    ('[serve]\nelection-timeout = "1"\n', "[serve] election-timeout: must be a number, not '1'"),
    ("[serve]\nelection-timeout = -1\n", "[serve] election-timeout: must be positive: '-1'"),
    ("[serve]\nsnapshot-entries = 1.5\n", "[serve] snapshot-entries: not a whole number: '1.5'"),
    ("[serve]\nmax-watches = true\n", "[serve] max-watches: must be a whole number, not True"),
    ("[serve]\nlearner = 1\n", "[serve] learner: must be true or false, not 1"),
    ('[serve]\nmetrics = "no"\n', "[serve] metrics: must be true or false, not 'no'"),
    ("[serve]\nno-metrics = true\n", "unknown key 'no-metrics' in [serve]: a switch that turns "
                                      "something off is a key without no-: write metrics = false"),
    ("[serve]\nid = 3\n", "[serve] id: must be a string, not 3"),
    ('[serve]\nfsync = "sometimes"\n',
     "[serve] fsync: must be one of always, never, not 'sometimes'"),
    ('[serve]\nlog-level = "LOUD"\n', "[serve] log-level: must be one of DEBUG, INFO, "
                                      "WARNING, ERROR, not 'LOUD'"),
    ('id = "n1"\n', "unknown key or table 'id': the options of `raftly serve` go in a "
                    "[serve] table"),
    ("[nodes.n1]\nraft = \"x\"\n", "unknown key or table 'nodes': the options of `raftly "
                                  "serve` go in a [serve] table"),
    ("", "no [serve] table (the options of `raftly serve` go there)"),
    ("serve = 3\n", "no [serve] table (the options of `raftly serve` go there)"),
])
def test_a_mistake_in_the_file_is_one_line_naming_the_file_and_the_key(
        tmp_path: Path, text: str, message: str) -> None:
    config = _write(tmp_path, text)
    code, err = raftly("serve", "--config", str(config))
    assert code == 1
    assert err == f"raftly: {config}: {message}\n"


def test_a_missing_or_unreadable_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert raftly("serve", "--config", str(missing)) == (
        1, f"raftly: --config {missing}: no such file\n")
    code, err = raftly("serve", "--config", str(tmp_path))
    assert code == 1 and err.startswith(f"raftly: --config {tmp_path}: cannot read it: ")
    assert err.count("\n") == 1


def test_a_file_that_is_not_toml_is_one_line(tmp_path: Path) -> None:
    config = _write(tmp_path, "[serve\nid = 1\n")
    code, err = raftly("serve", "--config", str(config))
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"raftly: --config {config}: not valid TOML: ")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe[serve]")
    assert raftly("serve", "--config", str(binary)) == (
        1, f"raftly: --config {binary}: not a text file (UTF-8)\n")


def test_a_bad_flag_on_the_command_line_is_still_a_usage_error_with_a_file(
        tmp_path: Path) -> None:
    config = _write(tmp_path, '[serve]\nid = "n1"\n')
    with pytest.raises(SystemExit) as exited, contextlib.redirect_stderr(io.StringIO()):
        main(["serve", "--config", str(config), "--heartbeat", "-1"])
    assert exited.value.code == 2

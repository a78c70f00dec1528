"""``raftly serve --config FILE``: the options of ``serve`` from a ``[serve]`` table in TOML.

Every long option of ``serve`` is a key, spelled exactly like the option without its dashes
(``data-dir``, ``election-timeout``), except a switch that turns something off (``--no-metrics``):
its key is the thing it turns off, ``metrics = false`` (the natural TOML spelling; ``true`` is the
default), and ``no-metrics`` is refused with that hint. A key with underscores is refused with the
dashed spelling as a hint, an unknown key with the closest valid one. Values are TOML values of the
option's kind (a string, a number, ``true`` for a switch) and go through the option's own
validator, so a file accepts exactly what the command line accepts. Relative paths (the options
whose value is a FILE or DIR) are relative to the config file's directory, so that a node started
from any working directory (a service manager's) finds its files. Options given on the command line
win over the file, and the file over the defaults: ``ServeParser`` reads the file first and hands
argparse a namespace already holding its values, which argparse then only overwrites with what the
command line says.

A file that is missing, unreadable, not TOML, or wrong in any key is one line of error
(``CliError``, exit status 1) naming the file and the key.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from raftly.cli.common import CliError, non_negative_int, positive_float, positive_int

TABLE = "serve"
_NUMBERS = {positive_float: "a number", positive_int: "a whole number",
            non_negative_int: "a whole number"}
_PATHS = ("FILE", "DIR")
"""The metavars of the options whose value is a path."""


class ServeParser(argparse.ArgumentParser):
    """The parser of ``serve``: the values of ``--config FILE`` fill in what the command line
    leaves out."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        # A first pass finds --config however it was written (--config=F, an abbreviation).
        first, _ = super().parse_known_args(args, argparse.Namespace())
        path = getattr(first, "config", None)
        if path is not None:
            namespace = namespace if namespace is not None else argparse.Namespace()
            for dest, value in read_config(path, self).items():
                setattr(namespace, dest, value)
        return super().parse_known_args(args, namespace)


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The keys a ``[serve]`` table may hold: each long option's name without its dashes, and
    for a ``--no-X`` switch, ``X`` (its value stored as is: ``X = false`` is ``--no-X``)."""
    keys = {}
    for action in parser._actions:
        for option in action.option_strings:
            if option.startswith("--") and option not in ("--help", "--config"):
                key = option[2:]
                if isinstance(action, argparse._StoreFalseAction) and key.startswith("no-"):
                    key = key[3:]
                keys[key] = action
    return keys


def read_config(path: str, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The option values (by destination) of the ``[serve]`` table of the TOML file ``path``,
    checked like the options of ``parser``; CliError naming the file and what is wrong."""
    import tomllib

    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CliError(f"--config {path}: no such file") from None
    except OSError as exc:
        raise CliError(f"--config {path}: cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CliError(f"--config {path}: not a text file (UTF-8)") from None
    except tomllib.TOMLDecodeError as exc:
        raise CliError(f"--config {path}: not valid TOML: {exc}") from None
    for key in data:
        if key != TABLE:
            raise CliError(f"{path}: unknown key or table {key!r}: the options of `raftly "
                           f"serve` go in a [{TABLE}] table")
    table = data.get(TABLE)
    if not isinstance(table, dict):
        raise CliError(f"{path}: no [{TABLE}] table (the options of `raftly serve` go there)")
    known = options(parser)
    base = Path(path).parent
    values: dict[str, Any] = {}
    for key, value in table.items():
        action = known.get(key)
        if action is None:
            raise CliError(f"{path}: unknown key {key!r} in [{TABLE}]{_hint(key, known)}")
        values[action.dest] = _check(action, value, base, f"{path}: [{TABLE}] {key}")
    return values


def _hint(key: str, known: dict[str, argparse.Action]) -> str:
    if key == "config":
        return ": a config file cannot name another one"
    dashed = key.replace("_", "-")
    if dashed.startswith("no-") and isinstance(known.get(dashed[3:]), argparse._StoreFalseAction):
        return (f": a switch that turns something off is a key without no-: "
                f"write {dashed[3:]} = false")
    if dashed in known:
        return f": keys are spelled like the options, with dashes: write {dashed}"
    close = difflib.get_close_matches(dashed, known, n=1)
    return f" (did you mean {close[0]}?)" if close else " (see `raftly serve --help`)"


def _check(action: argparse.Action, value: Any, base: Path, where: str) -> Any:
    """``value`` as the option ``action`` would have stored it from the command line."""
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        if not isinstance(value, bool):
            raise CliError(f"{where}: must be true or false, not {value!r}")
        return value
    number = _NUMBERS.get(action.type)  # type: ignore[arg-type]
    if number is not None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CliError(f"{where}: must be {number}, not {value!r}")
    elif not isinstance(value, str):
        raise CliError(f"{where}: must be a string, not {value!r}")
    if callable(action.type):
        try:
            value = action.type(str(value))
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise CliError(f"{where}: {exc}") from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise CliError(f"{where}: must be one of {choices}, not {value!r}")
    if action.metavar in _PATHS and not Path(value).is_absolute():
        value = str(base / value)
    return value


__all__ = ["TABLE", "ServeParser", "options", "read_config"]

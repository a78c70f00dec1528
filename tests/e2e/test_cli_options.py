"""``raftly``'s own options as a new user meets them: --version, the client options before or
after the subcommand and checked at once, a fast failure when nothing listens, examples in
--help, and errors in a user's words."""

from __future__ import annotations

import subprocess
import sys
import time

from e2e_helpers import cli

from raftly.localcluster import ProcessCluster
from raftly.localproc import free_ports


def test_version_and_the_usage_lines_name_the_raftly_command() -> None:
    version = cli("--version")
    assert version.code == 0 and version.out.startswith("raftly ")
    assert version.out.split()[1][0].isdigit()
    fuzz = cli("fuzz", "--help")
    assert fuzz.code == 0 and fuzz.out.startswith("usage: raftly fuzz")


def test_help_shows_examples() -> None:
    for command in ([], ["kv"], ["kv", "put"], ["kv", "get"], ["kv", "list"]):
        run = cli(*command, "--help")
        assert run.code == 0 and "examples:" in run.out, command
    assert "a backslash is written" in cli("kv", "list", "--help").out


def test_client_options_go_before_or_after_the_subcommand(
        shared_cluster: ProcessCluster) -> None:
    eps = ",".join(shared_cluster.endpoints)
    for args in (["--endpoints", eps, "--timeout", "20", "kv", "put", "opt/k", "v"],
                 ["kv", "--endpoints", eps, "--timeout", "20", "put", "opt/k", "v"],
                 ["kv", "put", "opt/k", "v", "--endpoints", eps, "--timeout", "20"]):
        run = cli(*args, endpoints=["127.0.0.1:1"])  # the option wins over the environment
        assert run.code == 0 and run.out.startswith("OK"), (args, run.err)
    run = cli("--endpoints", eps, "status")
    assert run.code == 0 and "leader" in run.out, run.err
    misplaced = cli("--endpoints", eps, "demo")
    assert misplaced.code == 2 and "--endpoints is an option of `raftly kv`" in misplaced.err


def test_endpoints_that_are_not_addresses_are_a_usage_error_at_once() -> None:
    for args, env in ((["--endpoints", "garbage"], None), ([], ["garbage"]),
                      (["--endpoints", "ftp://127.0.0.1:8001"], None),
                      (["--endpoints", "127.0.0.1:99999"], None)):
        started = time.monotonic()
        run = cli("kv", "get", "k", *args, endpoints=env)
        assert run.code == 2 and "is not an address" in run.err, (args, run.err)
        assert time.monotonic() - started < 5, "checked before any request"
    assert "$RAFTLY_ENDPOINTS" in cli("kv", "get", "k", endpoints=["garbage"]).err


def test_connection_refused_by_every_endpoint_fails_fast() -> None:
    ports = free_ports(2)  # nothing listens there
    started = time.monotonic()
    run = cli("kv", "put", "k", "v", "--timeout", "30",
              "--endpoints", ",".join(f"127.0.0.1:{p}" for p in ports))
    took = time.monotonic() - started
    assert run.code == 1 and "connection refused by every endpoint" in run.err, run.err
    assert run.err.count("\n") == 1 and took < 10, f"{took:.1f}s"


def test_errors_speak_the_users_words() -> None:
    empty = cli("kv", "put", "", "v", "--endpoints", "127.0.0.1:1")
    assert empty.code == 2 and "the key is empty" in empty.err
    assert "str" not in empty.err


def test_the_command_line_loads_no_heavy_module_until_a_command_runs() -> None:
    # Every `raftly kv get` pays for what `import raftly.cli` loads: the core, storage, the
    # server and the process launcher are imported by the commands that use them.
    code = ("import sys, raftly.cli; print(' '.join(sorted(m for m in sys.modules "
            "if m.startswith(('raftly.core', 'raftly.storage', 'raftly.server', "
            "'raftly.localcluster', 'aiohttp')))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    assert loaded == []

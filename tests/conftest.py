"""Options shared by the whole suite.

``--slow`` turns on exhaustive runs; ``--fuzz-seeds N`` sets how many random simulator seeds
run (500 by default: about ten seconds); ``--rewrite`` regenerates the expected outputs of the
transcript tests (tests/core/testdata) from what the code does now.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="also run slow, exhaustive tests")
    parser.addoption("--fuzz-seeds", type=int, default=500, help="random simulator seeds to run")
    parser.addoption("--rewrite", action="store_true",
                     help="rewrite transcript tests' expected outputs with the actual ones")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "fuzz_seed" in metafunc.fixturenames:
        metafunc.parametrize("fuzz_seed", range(metafunc.config.getoption("--fuzz-seeds")))


@pytest.fixture
def lazyfs(tmp_path):  # type: ignore[no-untyped-def]
    """A factory of lazy file systems (``raftly.testing.lazyfs``) under ``tmp_path``:
    ``lazyfs("strict")`` mounts one and returns its ``LazyMount``. Every mount is unmounted at
    teardown, failed test or not; skips where FUSE is not usable."""
    from raftly.testing.lazyfs import LazyMount, unavailable

    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    mounts: list[LazyMount] = []

    def mount(mode: str = "lazy", name: str = "mnt") -> LazyMount:
        lazy = LazyMount(tmp_path / f"{name}-backing", tmp_path / name, mode=mode)  # type: ignore[arg-type]
        mounts.append(lazy)
        lazy.start()
        return lazy

    yield mount
    for lazy in mounts:
        lazy.stop()

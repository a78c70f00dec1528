"""DiskThread: storage calls run on one thread, in order, and answer the awaiting coroutine."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from raftly.server.disk import DiskThread


def test_calls_run_in_submission_order_on_one_thread_off_the_loop() -> None:
    async def main() -> None:
        disk = DiskThread("test-disk")
        seen: list[tuple[int, str]] = []

        def call(i: int) -> int:
            seen.append((i, threading.current_thread().name))
            return i * 2

        loop = asyncio.get_running_loop()
        futures = [disk.run(call, i) if i % 2 else loop.run_in_executor(disk, call, i)
                   for i in range(50)]
        assert await asyncio.gather(*futures) == [i * 2 for i in range(50)]
        assert [i for i, _ in seen] == list(range(50))
        assert {name for _, name in seen} == {"test-disk"}
        disk.shutdown()

    asyncio.run(main())


def test_an_exception_reaches_the_awaiting_caller() -> None:
    async def main() -> None:
        disk = DiskThread("test-disk")

        def fail() -> None:
            raise OSError("disk on fire")

        with pytest.raises(OSError, match="disk on fire"):
            await disk.run(fail)
        with pytest.raises(OSError, match="disk on fire"):
            await asyncio.get_running_loop().run_in_executor(disk, fail)
        assert await disk.run(int, "7") == 7  # the thread survived both
        disk.shutdown()

    asyncio.run(main())


def test_a_cancelled_caller_does_not_stop_the_call_and_shutdown_waits_for_it() -> None:
    async def main() -> None:
        disk = DiskThread("test-disk")
        gate = threading.Event()
        done: list[str] = []

        def slow() -> None:
            gate.wait(10.0)
            done.append("slow")

        future = disk.run(slow)
        later = disk.run(done.append, "later")
        future.cancel()
        gate.set()
        await later
        assert done == ["slow", "later"]
        disk.shutdown(wait=True)
        with pytest.raises(RuntimeError):
            disk.run(done.append, "too late")
        with pytest.raises(RuntimeError):
            disk.submit(done.append, "too late")

    asyncio.run(main())


def test_no_thread_runs_until_the_first_call() -> None:
    # A server whose construction is refused (or that is never started) must not leak a thread.
    before = set(threading.enumerate())
    disk = DiskThread("test-disk-unused")
    assert set(threading.enumerate()) == before
    disk.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        disk.submit(print)
    assert set(threading.enumerate()) == before


def test_interpreter_exit_finishes_the_calls_handed_over(tmp_path: Path) -> None:
    # Without shutdown() (an embedding app dying of an unhandled exception), a save under way
    # finishes instead of being cut off, as concurrent.futures' workers do.
    out = tmp_path / "saved"
    code = textwrap.dedent(f"""
        import time
        from raftly.server.disk import DiskThread

        def save():
            time.sleep(0.3)
            open({str(out)!r}, "w").write("done")

        disk = DiskThread("exit-disk")
        disk.submit(save)
        raise SystemExit(0)
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
    assert out.read_text() == "done"

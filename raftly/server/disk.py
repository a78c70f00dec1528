"""``DiskThread``: the one thread a ``RaftServer`` runs its storage calls on.

It owns the hand-off of blocking disk work from the event loop to a thread and back. Storage is
not thread-safe (one caller at a time), so every call runs on the same thread, in the order
submitted. It is a ``concurrent.futures.Executor`` (``loop.run_in_executor`` works with it, for
the rare calls: start, snapshots, close), and ``run`` is the hot path of every save: it hands the
call over with one queue put and answers an asyncio future with one ``call_soon_threadsafe``,
without the ``concurrent.futures.Future``, its condition variable and the chaining between the two
futures that ``run_in_executor`` pays for on each call (measured: about half the round trip).

The thread starts on the first call, so a ``DiskThread`` that is never used (a server whose
construction failed, or that was never started) holds no thread. Like the workers of
``concurrent.futures``, it is not a daemon: at interpreter exit it runs the calls already handed
over (a save under way finishes) and then stops, even without ``shutdown``.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

logger = logging.getLogger("raftly.server")

T = TypeVar("T")

_Job = Callable[[], None] | None
"""A job for the thread, or None: stop."""


_live: weakref.WeakSet[DiskThread] = weakref.WeakSet()
"""DiskThreads whose thread runs: told to stop at interpreter exit."""


def _stop_all_at_exit() -> None:
    # Runs before the interpreter joins non-daemon threads (as concurrent.futures' hook does):
    # each thread finishes the calls it already has, then stops, so the join cannot hang.
    for disk in list(_live):
        disk.shutdown(wait=True)


threading._register_atexit(_stop_all_at_exit)  # type: ignore[attr-defined]


class DiskThread(Executor):
    """One worker thread running calls in submission order (see the module docstring)."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._shutdown = False
        self._name = name
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def _put(self, job: Callable[[], None]) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._shutdown:
                    raise RuntimeError("disk thread shut down")
                if self._thread is None:
                    thread = threading.Thread(target=self._work, name=self._name)
                    thread.start()
                    self._thread = thread
                    _live.add(self)
        self._jobs.put(job)

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run ``fn(*args)`` on the thread; the returned future (of the running loop) gets its
        result or exception. Cancelling the future does not stop the call."""
        if self._shutdown:
            raise RuntimeError("disk thread shut down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def job() -> None:
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the awaiting caller, never lost
                _answer(loop, _fail, future, exc)
            else:
                _answer(loop, _succeed, future, result)

        self._put(job)
        return future

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        if self._shutdown:
            raise RuntimeError("disk thread shut down")
        future: Future[T] = Future()

        def job() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)

        self._put(job)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop once the calls submitted so far have run (``cancel_futures`` is not supported:
        storage calls already handed over are never skipped)."""
        with self._start_lock:
            if not self._shutdown:
                self._shutdown = True
                self._jobs.put(None)
            thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join()

    def _work(self) -> None:
        jobs = self._jobs
        while True:
            job = jobs.get()
            if job is None:
                return
            try:
                job()
            except BaseException:  # jobs hand their errors on; this is a bug: say so, keep going
                logger.critical("disk thread job failed", exc_info=True)


def _answer(loop: asyncio.AbstractEventLoop, settle: Callable[[asyncio.Future[Any], Any], None],
            future: asyncio.Future[Any], value: Any) -> None:
    try:
        loop.call_soon_threadsafe(settle, future, value)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        logger.debug("disk call finished after its event loop closed")


def _succeed(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():  # cancelled meanwhile (the server is closing)
        future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


__all__ = ["DiskThread"]

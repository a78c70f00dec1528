"""A lazy file system for tests: a FUSE passthrough that forgets what was not fsynced.

``LazyMount`` (``mount``) runs one in a child process and sends it a power loss; the FUSE
operations and the namespace model live in ``fs``, the page cache of one file in ``cache``, the
control socket in ``control``. Needs the ``check`` extra (mfusepy) and libfuse 3 (Debian's
``fuse3``); see docs/lazyfs.md for the modes and what each models.
"""

from raftly.testing.lazyfs.mount import LazyMount, unavailable

__all__ = ["LazyMount", "unavailable"]

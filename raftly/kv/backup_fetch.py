"""The client side of ``GET /v1/snapshot``: find the leader, stream its snapshot into a backup
file (raftly.kv.backup) and check it on arrival. Blocking, standard library only, like
``raftly.kv.client.Client``, whose routing pieces it uses (endpoints and their scheme, the
bearer token, which redirects may be followed, which TLS failures are final).

A node that does not lead answers ``307`` to the leader, which is followed (never from https
down to http); ``503`` (no leader yet, or the leader busy with other snapshots) and unreachable
nodes are retried on the next endpoint with backoff for up to ``timeout`` seconds; any other
refusal (401, 403, ...) is final. Once the leader streams, ``timeout`` bounds each read (a
stream that stalls that long fails), not the whole transfer: a large state takes its time. A
stream that breaks off is not resumed: the temporary file goes and the error says so.
"""

from __future__ import annotations

import http.client
import os
import ssl
import tempfile
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

from raftly.kv.backup import (
    STREAM_TRAILER,
    BackupError,
    BackupInfo,
    BackupWriter,
    check_stream_trailer,
    exists_error,
    parse_stream_headers,
)
from raftly.kv.client import tls_context
from raftly.kv.client_core import ClientCore, Response, base_url, redirect_url, tls_failure
from raftly.kv.protocol import SNAPSHOT_PATH

_MAX_REDIRECTS = 5
_CHUNK = 1 << 20


class FetchError(BackupError):
    """No snapshot could be had: ``status`` is the node's HTTP status when it refused (401,
    403, ...), else None (unreachable, timed out, stream broken)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def save_snapshot(endpoints: str | Sequence[str], path: str | os.PathLike[str], *,
                  timeout: float = 10.0, force: bool = False, cacert: str | None = None,
                  cert: str | None = None, key: str | None = None, token: str | None = None,
                  ssl_context: ssl.SSLContext | None = None) -> BackupInfo:
    """Fetch a consistent snapshot from the cluster's leader into the backup file ``path``
    (written durably, verified, never replacing an existing file unless ``force``).

    FetchError when no node serves it (see the module docstring); BackupError when the file
    cannot be written or what arrived does not check out.
    """
    # Before the leader does any work for nothing: the name is free, the directory writable.
    if not force and os.path.lexists(path):
        raise exists_error(path)
    _check_writable(os.path.dirname(os.path.abspath(os.fspath(path))))
    context = tls_context(cacert, cert, key, ssl_context)
    core = ClientCore(endpoints, timeout, timeout, None, tls=context is not None, token=token,
                      client_cert=cert is not None)
    deadline = time.monotonic() + timeout
    attempt, redirects, last = 0, 0, "nothing tried"
    target = core.target
    while True:
        conn = _connect(target, timeout, context)
        try:
            try:
                conn.request("GET", SNAPSHOT_PATH, headers=core.headers)
                raw = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                if (error := tls_failure(target, exc)) is not None:
                    raise FetchError(str(error)) from None
                last = f"{target}: {type(exc).__name__}: {exc}"
                core.rotate()
                target = core.target
            else:
                if raw.status == 200:
                    return _receive(raw, target, path, force)
                resp = Response(raw.status, {k.lower(): v for k, v in raw.getheaders()},
                                raw.read(64 << 10))
                last = f"{target}: {resp.status} {resp.error_message()}"
                if resp.status == 307 and redirects < _MAX_REDIRECTS:
                    location = redirect_url(target + SNAPSHOT_PATH, resp.headers.get("location"))
                    if location is None:
                        raise FetchError(f"{target}: refused to follow a redirect to "
                                         f"{resp.headers.get('location')!r}")
                    target, redirects = base_url(location), redirects + 1
                    continue
                if resp.status < 500 and resp.status != 307:
                    raise FetchError(f"{target}: {resp.error_message()}", resp.status)
                if resp.status != 503 or _leader_named(resp) is None:
                    core.rotate()  # this node cannot help: another may know the leader
                    target = core.target
        finally:
            conn.close()
        if time.monotonic() >= deadline:
            raise FetchError(f"GET {SNAPSHOT_PATH}: no node served a snapshot within "
                             f"{timeout:g}s (last: {last})")
        redirects = 0
        time.sleep(min(core.backoff(attempt), max(0.0, deadline - time.monotonic())))
        attempt += 1


def _check_writable(directory: str) -> None:
    """BackupError unless a file can be created in ``directory`` (tried, then removed)."""
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".raftly-probe.")
    except OSError as exc:
        raise BackupError(f"cannot write in {directory}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)


def _leader_named(resp: Response) -> str | None:
    try:
        leader = resp.json().get("leader")
    except (ValueError, AttributeError):
        return None
    return leader if isinstance(leader, str) else None


def _connect(base: str, timeout: float, context: ssl.SSLContext | None
             ) -> http.client.HTTPConnection:
    parts = urlsplit(base)
    if parts.scheme == "https":
        return http.client.HTTPSConnection(parts.netloc, timeout=timeout,
                                           context=context or ssl.create_default_context())
    return http.client.HTTPConnection(parts.netloc, timeout=timeout)


def _receive(raw: http.client.HTTPResponse, target: str, path: str | os.PathLike[str],
             force: bool) -> BackupInfo:
    """The 200 answer's stream into the backup file; the last bytes are the trailer."""
    header = parse_stream_headers({k.lower(): v for k, v in raw.getheaders()})
    writer = BackupWriter(path, header, force=force)
    tail = b""
    keep = STREAM_TRAILER.size
    try:
        while chunk := raw.read(_CHUNK):
            # Hold back what may be the trailer: only the stream's end tells.
            if len(chunk) >= keep:
                writer.write(tail)
                writer.write(chunk[:-keep])
                tail = chunk[-keep:]
            else:
                joined = tail + chunk
                writer.write(joined[:-keep])
                tail = joined[-keep:]
        digest = check_stream_trailer(tail, writer.payload_size)
    except (OSError, http.client.HTTPException) as exc:
        writer.abort()
        raise FetchError(f"{target}: the snapshot stream broke off after "
                         f"{writer.payload_size} bytes ({type(exc).__name__}: {exc}); "
                         "try again") from None
    except BaseException:
        writer.abort()
        raise
    return writer.commit(digest)


__all__ = ["FetchError", "save_snapshot"]

"""TLS settings of a node and of a client, turned into ``ssl.SSLContext`` objects.

One node uses one certificate for both of its ports: the peer port (mutual TLS: both ends show a
certificate of the cluster CA, and each end checks that the other's certificate names the node
it claims to be, see ``common_name``) and the client API (HTTPS; client certificates optional or
required). Only TLS 1.2 and newer are accepted.

Peers do not check host names: nodes are found by address and identified by name, so the check
that matters is "this certificate names node n2", which works the same through NAT, proxies and
``raftly check``'s fault-injecting proxies. HTTPS clients check host names as browsers do.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class TlsError(ValueError):
    """TLS files missing or unusable; the message names the file."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A node's certificate, its key, and the CA certificate that signs the cluster's."""

    cert: Path
    key: Path
    ca: Path

    @classmethod
    def from_dir(cls, directory: str | Path, name: str) -> TlsFiles:
        """``DIR/<name>.crt``, ``DIR/<name>.key`` and ``DIR/ca.crt`` (``raftly certs`` layout)."""
        folder = Path(directory)
        return cls(folder / f"{name}.crt", folder / f"{name}.key", folder / "ca.crt")


def _base(purpose: ssl.Purpose, ca: Path | None) -> ssl.SSLContext:
    if ca is None:
        # No CA of our own: a public HTTPS server, trusted through the system's CAs.
        context = ssl.create_default_context(purpose)
    else:
        # Only the given CA, never the system store as well: a certificate that any public CA
        # issued for a host, or with a CN equal to a node's name, must not pass.
        protocol = (ssl.PROTOCOL_TLS_CLIENT if purpose == ssl.Purpose.SERVER_AUTH
                    else ssl.PROTOCOL_TLS_SERVER)
        context = ssl.SSLContext(protocol)
        _must_exist(ca, "CA certificate")
        try:
            context.load_verify_locations(cafile=str(ca))
        except (ssl.SSLError, OSError) as exc:
            raise TlsError(f"{ca}: not a usable CA certificate: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _load_pair(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    _must_exist(cert, "certificate")
    _must_exist(key, "private key")
    try:
        context.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(f"{cert} / {key}: not a usable certificate and key: {exc}") from None


def _must_exist(path: Path, what: str) -> None:
    if not path.is_file():
        raise TlsError(f"{path}: no such {what} file")


def peer_server_context(files: TlsFiles) -> ssl.SSLContext:
    """For the peer port's listener: demands a certificate of the cluster CA from every peer."""
    context = _base(ssl.Purpose.CLIENT_AUTH, files.ca)
    context.verify_mode = ssl.CERT_REQUIRED
    _load_pair(context, files.cert, files.key)
    return context


def peer_client_context(files: TlsFiles) -> ssl.SSLContext:
    """For dialling peers: shows this node's certificate, demands one of the cluster CA back.

    Host names are not checked (see the module docstring); the caller checks the name with
    ``common_name`` after the handshake.
    """
    context = _base(ssl.Purpose.SERVER_AUTH, files.ca)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    _load_pair(context, files.cert, files.key)
    return context


def api_server_context(files: TlsFiles, *, require_client_cert: bool = False) -> ssl.SSLContext:
    """For the HTTPS API. With ``require_client_cert`` only clients holding a certificate of
    the cluster CA get past the handshake; otherwise one is checked if offered."""
    context = _base(ssl.Purpose.CLIENT_AUTH, files.ca)
    context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    _load_pair(context, files.cert, files.key)
    return context


def client_context(cacert: str | Path | None = None, cert: str | Path | None = None,
                   key: str | Path | None = None) -> ssl.SSLContext:
    """For an HTTPS client: trusts ``cacert`` (else the system's CAs), shows ``cert``/``key``
    if given, and checks host names."""
    if (cert is None) != (key is None):
        raise TlsError("a client certificate needs both --cert and --key")
    context = _base(ssl.Purpose.SERVER_AUTH, Path(cacert) if cacert is not None else None)
    if cert is not None and key is not None:
        _load_pair(context, Path(cert), Path(key))
    return context


def common_name(peercert: dict[str, Any] | None) -> str | None:
    """The subject common name of a verified certificate (``getpeercert()``), or None.

    A node's name is its certificate's common name, not one of its DNS names: those list the
    hosts it runs on, which an operator may well name like nodes.
    """
    if not peercert:
        return None
    found = [str(value) for rdn in peercert.get("subject", ()) for attr, value in rdn
             if attr == "commonName"]
    return found[0] if len(found) == 1 else None

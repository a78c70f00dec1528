"""A cluster's certificates: one CA, a key and certificate per node, and a client certificate.

``raftly certs init``, ``add`` and ``renew`` call this module; ``serve`` reads its own
certificate's name and expiry with ``read_certificate``. Layout of a certificate
directory (every file readable by its owner only, the directory too)::

    ca.crt  ca.key          the cluster CA (keep ca.key off the nodes once the cluster runs)
    n1.crt  n1.key          a node: subject CN and a DNS name equal to the node's name, plus
                            localhost, 127.0.0.1, ::1 and the --hosts given; usable as a
                            server and as a client certificate (peers authenticate both ways)
    client.crt client.key   a client (CN "client"), for APIs that ask for client certificates

Keys are ECDSA P-256: small, fast to sign and verify, supported by every TLS 1.2+ stack.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from raftly.kv.cluster_file import usable_name
from raftly.storage.disk.fsio import Syncer

CA_NAME = "ca"
CLIENT_NAME = "client"
DEFAULT_DAYS = 825
"""Validity of issued certificates (the longest browsers accept for a server certificate)."""
CA_DAYS = 3650
_LOOPBACK = ("localhost", "127.0.0.1", "::1")


class CertError(ValueError):
    """A certificate directory is missing, incomplete, or asked to do something impossible."""


@dataclass(frozen=True, slots=True)
class Issued:
    """One certificate written to disk."""

    name: str
    cert: Path
    key: Path
    not_after: datetime.datetime


@dataclass(frozen=True, slots=True)
class Authority:
    """A CA that can sign: its certificate and private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def init_certs(directory: str | Path, nodes: Sequence[str], hosts: Sequence[str] = (),
               *, days: int = DEFAULT_DAYS) -> list[Issued]:
    """Create a new CA in ``directory`` and certificates for ``nodes`` and a client.

    Refuses a directory that already has a CA, so that re-running never replaces the cluster's
    trust root by accident (use ``add_certs`` for new nodes).
    """
    folder = Path(directory)
    if (folder / "ca.crt").exists() or (folder / "ca.key").exists():
        raise CertError(f"{folder} already has a CA (ca.crt); use `raftly certs add` to issue "
                        "certificates for new nodes")
    _check_names(nodes)
    if not folder.exists():
        # Owner-only, but only a directory made here: an existing one (`--dir .`, a home
        # directory) keeps its mode; the files in it are owner-only anyway.
        folder.mkdir(parents=True, mode=0o700)
        os.chmod(folder, 0o700)  # mkdir's mode is filtered by the umask
    ca = new_authority()
    not_after = ca.cert.not_valid_after_utc
    _write(folder / "ca.crt", ca.cert.public_bytes(serialization.Encoding.PEM))
    _write(folder / "ca.key", _key_pem(ca.key))
    issued = [Issued(CA_NAME, folder / "ca.crt", folder / "ca.key", not_after)]
    issued += add_certs(folder, nodes, hosts, days=days)
    issued.append(_issue_to(folder, ca, CLIENT_NAME, (), days=days, server=False))
    return issued


def add_certs(directory: str | Path, nodes: Sequence[str], hosts: Sequence[str] = (),
              *, days: int = DEFAULT_DAYS) -> list[Issued]:
    """Issue certificates for ``nodes`` with the CA already in ``directory``."""
    folder = Path(directory)
    _check_names(nodes)
    ca = load_authority(folder)
    for name in nodes:
        if (folder / f"{name}.crt").exists():
            raise CertError(f"{folder / (name + '.crt')} already exists: remove it first to "
                            "issue a new one")
    return [_issue_to(folder, ca, name, hosts, days=days, server=True) for name in nodes]


def renew_certs(directory: str | Path, names: Sequence[str], hosts: Sequence[str] = (),
                *, days: int = DEFAULT_DAYS) -> list[Issued]:
    """Re-issue the certificates of ``names`` (nodes, or "client") with the CA in ``directory``,
    each with a new key, replacing the old files atomically (a node reading them mid-way sees
    the old pair or the new one). Without ``hosts`` a node keeps the hosts its old certificate
    named. The nodes use the new files when they restart."""
    folder = Path(directory)
    if not names:
        raise CertError("give at least one name to renew (--nodes n1,n2 or client)")
    _check_names([n for n in names if n != CLIENT_NAME], allow_empty=True)
    ca = load_authority(folder)
    renewed: list[Issued] = []
    for name in names:
        old = folder / f"{name}.crt"
        if not old.exists():
            raise CertError(f"{old}: no such certificate to renew (issue one with "
                            "`raftly certs add`)")
        kept = hosts or _extra_hosts(x509.load_pem_x509_certificate(old.read_bytes()), name)
        cert, key = issue(ca, name, kept, server=name != CLIENT_NAME, days=days)
        with tempfile.TemporaryDirectory(dir=folder, prefix=".renew-") as scratch:
            new_cert, new_key = write_pair(Path(scratch), name, cert, key)
            # Key first: a reader between the two renames pairs the old certificate with the
            # new key and fails to load, it never runs with a mismatched pair unnoticed.
            os.replace(new_key, folder / f"{name}.key")
            os.replace(new_cert, old)
        Syncer("always").directory(str(folder))  # the renames survive a crash
        renewed.append(Issued(name, old, folder / f"{name}.key", cert.not_valid_after_utc))
    return renewed


@dataclass(frozen=True, slots=True)
class CertificateFacts:
    """What ``serve`` checks of its own certificate at start."""

    name: str | None
    """The subject CN: a node's identity (None if the certificate has not exactly one)."""
    not_before: datetime.datetime
    not_after: datetime.datetime


def read_certificate(path: str | Path) -> CertificateFacts:
    """The name and validity of the PEM certificate at ``path``; ``CertError`` if unreadable."""
    try:
        cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise CertError(f"{path}: not a readable certificate: {exc}") from None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = str(names[0].value) if len(names) == 1 else None
    return CertificateFacts(name, cert.not_valid_before_utc, cert.not_valid_after_utc)


def new_authority(*, days: int = CA_DAYS, common_name: str = "raftly cluster CA") -> Authority:
    """A new self-signed CA (in memory)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(cert, key)


def load_authority(directory: str | Path) -> Authority:
    folder = Path(directory)
    try:
        cert = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
        key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise CertError(f"{exc.filename}: no such file (create a CA with `raftly certs init`)"
                        ) from None
    except ValueError as exc:
        raise CertError(f"{folder}: the CA files cannot be read: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{folder / 'ca.key'}: not an EC private key")
    return Authority(cert, key)


def issue(ca: Authority, name: str, hosts: Iterable[str] = (), *, server: bool = True,
          days: int = DEFAULT_DAYS, not_before: datetime.datetime | None = None,
          not_after: datetime.datetime | None = None,
          ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate named ``name`` signed by ``ca``, and its key (in memory).

    A server certificate also names localhost, 127.0.0.1, ::1 and ``hosts``, and serves as a
    client certificate too. ``not_before``/``not_after`` override the validity (tests use them
    for expired and not-yet-valid certificates).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    start = not_before or now - datetime.timedelta(minutes=5)
    end = not_after or now + datetime.timedelta(days=days)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    alt_names: list[x509.GeneralName] = [x509.DNSName(name)]
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        for host in dict.fromkeys([*_LOOPBACK, *hosts]):
            alt_names.append(_general_name(host))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                       critical=False)
    )
    return builder.sign(ca.key, hashes.SHA256()), key


def write_pair(folder: Path, name: str, cert: x509.Certificate,
               key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    """Write ``name.crt`` and ``name.key`` (owner-only) into ``folder``."""
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    _write(key_path, _key_pem(key))
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _issue_to(folder: Path, ca: Authority, name: str, hosts: Sequence[str], *, days: int,
              server: bool) -> Issued:
    cert, key = issue(ca, name, hosts, server=server, days=days)
    cert_path, key_path = write_pair(folder, name, cert, key)
    return Issued(name, cert_path, key_path, cert.not_valid_after_utc)


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _extra_hosts(cert: x509.Certificate, name: str) -> list[str]:
    """The hosts a certificate names beyond its node name and the loopback ones."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    found = [*san.get_values_for_type(x509.DNSName),
             *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]
    return [h for h in found if h != name and h not in _LOOPBACK]


def _check_names(nodes: Sequence[str], *, allow_empty: bool = False) -> None:
    if not nodes and not allow_empty:
        raise CertError("give at least one node name (--nodes n1,n2,n3)")
    for name in nodes:
        if not usable_name(name) or name == CA_NAME:
            raise CertError(f"{name!r} is not a usable node name (letters, digits, '_', '.', "
                            f"'-'; not {CA_NAME!r} or {CLIENT_NAME!r})")
    if len(set(nodes)) != len(nodes):
        raise CertError("a node name is given twice")


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes) -> None:
    # Created owner-only from the start (never briefly world-readable), and exclusive: an
    # existing file is never overwritten.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CertError(f"{path} already exists: remove it first") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)

"""``raftly.security.certs``: the files of a certificate directory (owner-only, a directory that
refuses a second CA and never overwrites), the names and usages each certificate carries, and the
refusals of bad input."""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from raftly.security.certs import (
    CertError,
    add_certs,
    init_certs,
    issue,
    load_authority,
    new_authority,
    write_pair,
)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def alt_names(cert: x509.Certificate) -> set[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {*san.get_values_for_type(x509.DNSName),
            *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))}


def usages(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_init_writes_a_ca_node_and_client_certificates_readable_by_the_owner_only(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "certs"
    issued = init_certs(folder, ["n1", "n2"], hosts=["10.0.0.5", "db1.example.com"], days=30)
    assert [i.name for i in issued] == ["ca", "n1", "n2", "client"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "ca.crt", "ca.key", "client.crt", "client.key", "n1.crt", "n1.key", "n2.crt", "n2.key"]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    ca = load(folder / "ca.crt")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for item in issued[1:]:
        cert = load(item.cert)
        assert cn(cert) == item.name
        cert.verify_directly_issued_by(ca)  # raises unless the CA signed it
        assert item.not_after == cert.not_valid_after_utc
        remaining = item.not_after - datetime.datetime.now(datetime.UTC)
        assert datetime.timedelta(days=29) < remaining <= datetime.timedelta(days=30)
    n1 = load(folder / "n1.crt")
    assert alt_names(n1) == {"n1", "localhost", "127.0.0.1", "::1", "10.0.0.5",
                             "db1.example.com"}
    assert usages(n1) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    client = load(folder / "client.crt")
    assert cn(client) == "client" and usages(client) == {ExtendedKeyUsageOID.CLIENT_AUTH}


def test_init_leaves_the_mode_of_an_existing_directory_alone(tmp_path: Path) -> None:
    folder = tmp_path / "home"
    folder.mkdir()
    os.chmod(folder, 0o755)
    init_certs(folder, ["n1"])
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in folder.iterdir())


def test_init_refuses_a_directory_that_already_has_a_ca(tmp_path: Path) -> None:
    init_certs(tmp_path, ["n1"])
    before = (tmp_path / "ca.crt").read_bytes()
    with pytest.raises(CertError, match="already has a CA"):
        init_certs(tmp_path, ["n2"])
    assert (tmp_path / "ca.crt").read_bytes() == before
    assert not (tmp_path / "n2.crt").exists()


def test_add_issues_with_the_existing_ca_and_never_overwrites(tmp_path: Path) -> None:
    init_certs(tmp_path, ["n1"])
    (item,) = add_certs(tmp_path, ["n4"], hosts=["10.0.0.9"])
    cert = load(item.cert)
    assert cert.issuer == load(tmp_path / "ca.crt").subject and "10.0.0.9" in alt_names(cert)
    before = (tmp_path / "n1.crt").read_bytes()
    with pytest.raises(CertError, match="already exists"):
        add_certs(tmp_path, ["n1"])
    assert (tmp_path / "n1.crt").read_bytes() == before
    with pytest.raises(CertError, match="certs init"):
        add_certs(tmp_path / "elsewhere", ["n5"])


@pytest.mark.parametrize("nodes", [[], ["ca"], ["client"], ["n1", "n1"], ["bad name"], ["a/b"]])
def test_unusable_node_names_are_refused_before_anything_is_written(
    tmp_path: Path, nodes: list[str]
) -> None:
    with pytest.raises(CertError):
        init_certs(tmp_path / "certs", nodes)
    assert not (tmp_path / "certs").exists()


def test_a_damaged_ca_is_a_cert_error(tmp_path: Path) -> None:
    init_certs(tmp_path, ["n1"])
    (tmp_path / "ca.key").chmod(0o600)
    (tmp_path / "ca.key").write_bytes(b"not a key")
    with pytest.raises(CertError, match="cannot be read"):
        load_authority(tmp_path)


def test_issue_in_memory_with_chosen_validity_and_write_pair(tmp_path: Path) -> None:
    ca = new_authority()
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    end = datetime.datetime(2020, 2, 1, tzinfo=datetime.UTC)
    cert, key = issue(ca, "n7", ["10.1.2.3"], not_before=start, not_after=end)
    assert (cert.not_valid_before_utc, cert.not_valid_after_utc) == (start, end)
    assert ipaddress.ip_address("10.1.2.3") in cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)
    cert_path, key_path = write_pair(tmp_path, "n7", cert, key)
    assert load(cert_path) == cert
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600

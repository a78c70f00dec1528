"""``raftly certs init|add|renew``: every file printed with its expiry, owner-only files, and a
refusal (an existing CA, no CA, a bad name, bad days) as one line with a non-zero exit."""

from __future__ import annotations

import contextlib
import io
import re
import stat
from pathlib import Path

import pytest
from cryptography import x509

from raftly.cli import main
from raftly.security.tls import TlsFiles, peer_server_context


def raftly(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse's usage errors
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def expiry(out: str, path: Path) -> str:
    match = re.search(rf"^{re.escape(str(path))}\s+expires (\S+ \S+) UTC$", out, re.M)
    assert match, out
    return match.group(1)


def test_init_prints_every_file_with_the_expiry_of_each_certificate(tmp_path: Path) -> None:
    folder = tmp_path / "certs"
    code, out, err = raftly("certs", "init", "--dir", str(folder), "--nodes", "n1, n2,n3",
                            "--hosts", "10.0.0.5", "--days", "90")
    assert code == 0, err
    names = ["ca", "n1", "n2", "n3", "client"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{n}.{ext}" for n in names for ext in ("crt", "key"))
    for name in names:
        cert = x509.load_pem_x509_certificate((folder / f"{name}.crt").read_bytes())
        assert expiry(out, folder / f"{name}.crt") == f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M}"
        assert re.search(rf"^{re.escape(str(folder / (name + '.key')))}$", out, re.M)
        assert stat.S_IMODE((folder / f"{name}.key").stat().st_mode) == 0o600
    n1 = x509.load_pem_x509_certificate((folder / "n1.crt").read_bytes())
    assert (n1.not_valid_after_utc - n1.not_valid_before_utc).days == 90  # from 5 min before
    san = n1.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "10.0.0.5" in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}


def test_add_issues_for_a_new_node_with_the_existing_ca(tmp_path: Path) -> None:
    assert raftly("certs", "init", "--dir", str(tmp_path), "--nodes", "n1")[0] == 0
    code, out, err = raftly("certs", "add", "--dir", str(tmp_path), "--nodes", "n4")
    assert code == 0, err
    expiry(out, tmp_path / "n4.crt")
    assert "ca.crt" not in out and (tmp_path / "n4.key").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["init", "--nodes", "n1"], "already has a CA"),
    (["add", "--nodes", "n1"], "n1.crt already exists"),
    (["add", "--nodes", "client"], "not a usable node name"),
])
def test_a_refusal_is_one_line_and_exit_1(tmp_path: Path, argv: list[str], message: str) -> None:
    assert raftly("certs", "init", "--dir", str(tmp_path), "--nodes", "n1")[0] == 0
    code, out, err = raftly("certs", argv[0], "--dir", str(tmp_path), *argv[1:])
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("raftly: ") and message in err


def test_add_without_a_ca_and_bad_days_are_refused(tmp_path: Path) -> None:
    code, _, err = raftly("certs", "add", "--dir", str(tmp_path / "none"), "--nodes", "n4")
    assert code == 1 and "certs init" in err
    code, _, err = raftly("certs", "init", "--dir", str(tmp_path), "--nodes", "n1",
                          "--days", "0")
    assert code == 2 and "positive number of days" in err
    assert not (tmp_path / "ca.crt").exists()


def test_renew_reissues_with_the_same_ca_keeping_the_hosts_and_replacing_the_files(
        tmp_path: Path) -> None:
    assert raftly("certs", "init", "--dir", str(tmp_path), "--nodes", "n1,n2", "--hosts",
                  "db1.example.com,10.0.0.5", "--days", "10")[0] == 0
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    old = {n: (tmp_path / f"{n}.crt").read_bytes() for n in ("n1", "n2", "client")}
    old_key = (tmp_path / "n1.key").read_bytes()
    code, out, err = raftly("certs", "renew", "--dir", str(tmp_path), "--nodes", "n1,client",
                            "--days", "400")
    assert code == 0, err
    for name in ("n1", "client"):
        expiry(out, tmp_path / f"{name}.crt")
        cert = x509.load_pem_x509_certificate((tmp_path / f"{name}.crt").read_bytes())
        assert (tmp_path / f"{name}.crt").read_bytes() != old[name]
        cert.verify_directly_issued_by(ca)
        assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 400
        assert stat.S_IMODE((tmp_path / f"{name}.key").stat().st_mode) == 0o600
    assert (tmp_path / "n1.key").read_bytes() != old_key
    peer_server_context(TlsFiles.from_dir(tmp_path, "n1"))  # the new key fits the new cert
    assert (tmp_path / "n2.crt").read_bytes() == old["n2"]  # not named: left alone
    n1 = x509.load_pem_x509_certificate((tmp_path / "n1.crt").read_bytes())
    san = n1.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"n1", "localhost", "db1.example.com"}
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1", "::1", "10.0.0.5"}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    code, _, err = raftly("certs", "renew", "--dir", str(tmp_path), "--nodes", "n9")
    assert code == 1 and "no such certificate to renew" in err

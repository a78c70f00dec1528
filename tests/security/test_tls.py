"""``raftly.security.tls``: the contexts each end of a node's ports gets (TLS 1.2+, certificates
demanded where they must be, host names checked by clients only), clear errors for missing or
unusable files, the common name of a peer's certificate, and a real handshake on loopback."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from raftly.security.certs import init_certs
from raftly.security.tls import (
    TlsError,
    TlsFiles,
    api_server_context,
    client_context,
    common_name,
    peer_client_context,
    peer_server_context,
)


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    init_certs(tmp_path / "certs", ["n1", "n2"])
    return tmp_path / "certs"


def test_from_dir_names_the_raftly_certs_layout(tmp_path: Path) -> None:
    assert TlsFiles.from_dir(tmp_path, "n2") == TlsFiles(tmp_path / "n2.crt",
                                                         tmp_path / "n2.key", tmp_path / "ca.crt")


def test_each_context_demands_what_its_end_must(certs: Path) -> None:
    files = TlsFiles.from_dir(certs, "n1")
    contexts = {
        "peer server": peer_server_context(files),
        "peer client": peer_client_context(files),
        "api": api_server_context(files),
        "api with client certs": api_server_context(files, require_client_cert=True),
        "client": client_context(certs / "ca.crt"),
    }
    assert all(c.minimum_version == ssl.TLSVersion.TLSv1_2 for c in contexts.values())
    assert contexts["peer server"].verify_mode == ssl.CERT_REQUIRED
    assert contexts["peer client"].verify_mode == ssl.CERT_REQUIRED
    assert not contexts["peer client"].check_hostname  # the caller checks the name instead
    assert contexts["api"].verify_mode == ssl.CERT_OPTIONAL
    assert contexts["api with client certs"].verify_mode == ssl.CERT_REQUIRED
    assert contexts["client"].check_hostname and contexts["client"].verify_mode == (
        ssl.CERT_REQUIRED)


def test_missing_or_unusable_files_are_tls_errors_naming_the_file(certs: Path,
                                                                  tmp_path: Path) -> None:
    with pytest.raises(TlsError, match=r"n9\.crt: no such certificate file"):
        peer_server_context(TlsFiles.from_dir(certs, "n9"))
    with pytest.raises(TlsError, match=r"nowhere\.crt: no such CA certificate file"):
        client_context(tmp_path / "nowhere.crt")
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("not a certificate")
    with pytest.raises(TlsError, match=r"garbage\.crt: not a usable CA certificate"):
        client_context(garbage)
    mismatched = TlsFiles(certs / "n1.crt", certs / "n2.key", certs / "ca.crt")
    with pytest.raises(TlsError, match="not a usable certificate and key"):
        peer_client_context(mismatched)
    with pytest.raises(TlsError, match="both --cert and --key"):
        client_context(certs / "ca.crt", cert=certs / "client.crt")


def test_common_name_is_the_subjects_one_cn_or_none() -> None:
    def peercert(*cns: str) -> dict[str, object]:
        return {"subject": ((("organizationName", "x"),), *((("commonName", c),) for c in cns))}

    assert common_name(peercert("n1")) == "n1"
    assert common_name(peercert()) is None
    assert common_name(peercert("n1", "n2")) is None  # ambiguous: no identity
    assert common_name(None) is None and common_name({}) is None


def test_an_https_client_checks_the_host_name_and_the_ca(certs: Path, tmp_path: Path) -> None:
    async def main() -> None:
        server_context = api_server_context(TlsFiles.from_dir(certs, "n1"))

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"hello")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_context)
        port = server.sockets[0].getsockname()[1]
        try:
            for host in ("127.0.0.1", "localhost"):  # both are in every node certificate
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=client_context(certs / "ca.crt"),
                    server_hostname=host)
                assert common_name(writer.get_extra_info("peercert")) == "n1"
                assert await reader.read() == b"hello"
                writer.close()
            with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
                await asyncio.open_connection("127.0.0.1", port,
                                              ssl=client_context(certs / "ca.crt"),
                                              server_hostname="db9.example.com")
            init_certs(tmp_path / "other", ["n1"])
            with pytest.raises(ssl.SSLCertVerificationError, match="verify failed"):
                await asyncio.open_connection("127.0.0.1", port,
                                              ssl=client_context(tmp_path / "other" / "ca.crt"))
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def test_contexts_given_a_ca_trust_that_ca_only_never_the_system_store(certs: Path) -> None:
    files = TlsFiles.from_dir(certs, "n1")
    for context in (peer_server_context(files), peer_client_context(files),
                    api_server_context(files), api_server_context(files, require_client_cert=True),
                    client_context(certs / "ca.crt"),
                    client_context(certs / "ca.crt", certs / "client.crt", certs / "client.key")):
        assert context.cert_store_stats()["x509_ca"] == 1

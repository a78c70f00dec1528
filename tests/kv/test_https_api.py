"""The KV API over HTTPS (certificates from ``raftly.security.certs`` in tmp_path): it serves,
plain HTTP gets no data, redirects and member URLs keep https, a client certificate can be made
mandatory, tokens work over it, a member's certificate is a read pass (never more), and expired
or not-yet-valid certificates are refused at either end."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import aiohttp
import pytest
from kv_helpers import ADMIN, AUTH, FAST, READ, SecureCluster, bearer, call, followers, run

from raftly.security.certs import init_certs, issue, load_authority, new_authority, write_pair
from raftly.security.tls import client_context

NAMES = ["n1", "n2", "n3"]


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    init_certs(tmp_path / "tls", NAMES)
    return tmp_path / "tls"


def trusting(certs: Path, *, client_cert: bool = False) -> ssl.SSLContext:
    if client_cert:
        return client_context(certs / "ca.crt", certs / "client.crt", certs / "client.key")
    return client_context(certs / "ca.crt")


def test_https_cluster_serves_and_redirects_keep_https(certs: Path) -> None:
    async def main() -> None:
        async with SecureCluster(3, config=FAST, tls_dir=certs) as cluster, \
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                    ssl=trusting(certs))) as s:
            leader = await cluster.wait_for_leader()
            assert all(n.url.startswith("https://127.0.0.1:") for n in cluster.nodes)
            follower = followers(cluster, leader)[0]
            status, body, headers = await call(s, "PUT", follower.url + "/v1/kv/a%2Fb?expect=x",
                                               data=b"v")
            assert status == 307, body
            assert headers["Location"] == leader.url + "/v1/kv/a%2Fb?expect=x"
            assert headers["Location"].startswith("https://")
            assert (await call(s, "PUT", leader.url + "/v1/kv/k", data=b"v"))[0] == 200
            # A client that follows the redirect reaches the leader over https.
            async with s.put(follower.url + "/v1/kv/k2", data=b"w") as resp:
                assert resp.status == 200 and resp.url.scheme == "https"
            assert (await call(s, "GET", follower.url + "/v1/kv/k"))[:2] == (200, b"v")
            status, body, _ = await call(s, "GET", follower.url + "/v1/status")
            assert status == 200 and body["leader_api"] == leader.url
            assert {m["api"] for m in body["members"]} == {n.url for n in cluster.nodes}
            # The configuration keeps plain host:port; only URLs get the scheme.
            status, body, _ = await call(s, "GET", follower.url + "/v1/members")
            assert status == 200 and all("://" not in str(m["api"]) for m in body["members"])

    run(main())


def test_plain_http_to_an_https_api_gets_no_data(certs: Path) -> None:
    async def main() -> None:
        async with SecureCluster(1, config=FAST, tls_dir=certs) as cluster, \
                aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            plain = "http://" + str(leader.api_address)
            with pytest.raises(aiohttp.ClientError):
                await call(s, "GET", plain + "/v1/kv/k")
            # Nor does a client that does not trust the cluster CA get past the handshake.
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await call(s, "GET", leader.url + "/v1/status")

    run(main())


def test_client_certificate_auth_refuses_clients_without_a_cluster_certificate(
        certs: Path, tmp_path: Path) -> None:
    other_ca = new_authority()
    cert, key = issue(other_ca, "client", server=False)
    write_pair(tmp_path, "stranger", cert, key)

    async def main() -> None:
        async with SecureCluster(1, config=FAST, tls_dir=certs,
                                 client_cert_auth=True) as cluster:
            leader = await cluster.wait_for_leader()
            url = leader.url + "/v1/status"
            contexts = {"none": trusting(certs),
                        "other CA": client_context(certs / "ca.crt", tmp_path / "stranger.crt",
                                                   tmp_path / "stranger.key")}
            for what, context in contexts.items():
                async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                        ssl=context)) as s:
                    with pytest.raises(aiohttp.ClientError):
                        await call(s, "GET", url)
                        pytest.fail(f"a client with {what} certificate was served")
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                    ssl=trusting(certs, client_cert=True))) as s:
                assert (await call(s, "GET", url))[0] == 200

    run(main())


def test_tokens_over_https(certs: Path) -> None:
    async def main() -> None:
        async with SecureCluster(3, config=FAST, tls_dir=certs, auth=AUTH) as cluster, \
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                    ssl=trusting(certs))) as s:
            leader = await cluster.wait_for_leader()
            follower = followers(cluster, leader)[0]
            assert (await call(s, "GET", leader.url + "/v1/status"))[0] == 401
            status, body, _ = await call(s, "PUT", leader.url + "/v1/kv/k", data=b"v",
                                         headers=bearer(READ))
            assert status == 403 and body["code"] == "forbidden"
            status, _, headers = await call(s, "PUT", follower.url + "/v1/kv/k", data=b"v",
                                            headers=bearer(ADMIN))
            assert status == 307 and headers["Location"] == leader.url + "/v1/kv/k"

    run(main())


def test_a_members_certificate_gets_the_read_role_without_a_token_and_never_more(
        certs: Path, tmp_path: Path) -> None:
    # A certificate of the cluster CA for a name that is no member's: no role at all.
    cert, key = issue(load_authority(certs), "n7", server=True)
    write_pair(tmp_path, "n7", cert, key)

    def session(name: str, folder: Path = certs) -> aiohttp.ClientSession:
        context = client_context(certs / "ca.crt", folder / f"{name}.crt", folder / f"{name}.key")
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))

    async def main() -> None:
        async with SecureCluster(3, config=FAST, tls_dir=certs, auth=AUTH,
                                 members=True) as cluster:
            leader = await cluster.wait_for_leader()
            url = leader.url
            async with session("n2") as s:
                for path in ("/v1/status", "/v1/members", "/v1/kv/k"):
                    assert (await call(s, "GET", url + path))[0] in (200, 404), path
                status, body, _ = await call(s, "PUT", url + "/v1/kv/k", data=b"v")
                assert status == 401 and body["code"] == "unauthorized"
                status, _, _ = await call(s, "POST", url + "/v1/leader/transfer")
                assert status == 401
                # A token, when sent, is what counts: the certificate adds nothing to it.
                status, body, _ = await call(s, "PUT", url + "/v1/kv/k", data=b"v",
                                             headers=bearer(READ))
                assert status == 403 and body["code"] == "forbidden"
                status, _, _ = await call(s, "GET", url + "/v1/status",
                                          headers=bearer("not-a-token-0123456789"))
                assert status == 401
            for name, folder in (("client", certs), ("n7", tmp_path)):
                async with session(name, folder) as s:
                    status, body, _ = await call(s, "GET", url + "/v1/status")
                    assert status == 401 and body["code"] == "unauthorized", name

    run(main())


def _dated(ca_dir: Path, folder: Path, name: str, when: str, *, server: bool) -> None:
    """Write ``name``.crt/.key into ``folder``: expired ("expired") or not yet valid ("future")."""
    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)
    start, end = (now - 30 * day, now - day) if when == "expired" else (now + day, now + 30 * day)
    cert, key = issue(load_authority(ca_dir), name, server=server, not_before=start,
                      not_after=end)
    write_pair(folder, name, cert, key)


@pytest.mark.parametrize("when", ["expired", "future"])
def test_clients_refuse_an_api_whose_certificate_is_expired_or_not_yet_valid(
        certs: Path, when: str) -> None:
    for old in ("n1.crt", "n1.key"):
        (certs / old).unlink()
    _dated(certs, certs, "n1", when, server=True)  # the cluster's n1 takes this one

    async def main() -> None:
        async with SecureCluster(1, config=FAST, tls_dir=certs) as cluster, \
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                    ssl=trusting(certs))) as s:
            leader = await cluster.wait_for_leader()
            with pytest.raises(aiohttp.ClientConnectorCertificateError,
                               match="certificate has expired" if when == "expired"
                               else "certificate is not yet valid"):
                await call(s, "GET", leader.url + "/v1/status")

    run(main())


def test_client_certificate_auth_refuses_expired_and_not_yet_valid_client_certificates(
        certs: Path, tmp_path: Path) -> None:
    for when in ("expired", "future"):
        _dated(certs, tmp_path, when, when, server=False)

    async def main() -> None:
        async with SecureCluster(1, config=FAST, tls_dir=certs,
                                 client_cert_auth=True) as cluster:
            leader = await cluster.wait_for_leader()
            url = leader.url + "/v1/status"
            for when in ("expired", "future"):
                context = client_context(certs / "ca.crt", tmp_path / f"{when}.crt",
                                         tmp_path / f"{when}.key")
                async with aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(ssl=context)) as s:
                    with pytest.raises(aiohttp.ClientError):
                        await call(s, "GET", url)
                        pytest.fail(f"a client with an {when} certificate was served")
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                    ssl=trusting(certs, client_cert=True))) as s:
                assert (await call(s, "GET", url))[0] == 200  # the cluster's own is fine

    run(main())

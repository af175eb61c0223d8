"""Node-to-node TLS: every connection to another node trusts exactly one certificate, checked in the TLS
handshake, before any credential is sent.

The certificate is named by its SHA-256 fingerprint: the one the user gives to join a cluster, or the one a
member registered in the log (`RegisterNode.fingerprint`; the log is authenticated by the cluster's Raft key)
for forwarded requests and node-to-node calls. Its DER is fetched from the peer first, on a connection that
sends nothing and is kept only if the certificate has that fingerprint; then that certificate alone is the
trust anchor (`VERIFY_X509_PARTIAL_CHAIN`, no host name check: the fingerprint names the certificate, and a
static cluster has one CA per node). A man in the middle cannot present it without its private key.

Proxmox checks node certificates by fingerprint likewise: pveproxy, proxying to another node, accepts only
the fingerprints of the nodes' `pve-ssl.pem` in /etc/pve (`PVE::Cluster::check_cert_fingerprint`), and
`pvecm add` pins the fingerprint it is given (PVE::APIClient::LWP `cached_fingerprints`).
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Callable

import httpx
import trio

FETCH_TIMEOUT = 10.0  # seconds, when the request sets no connect timeout


def fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate as 32 colon-separated upper-case hex pairs, as Proxmox shows it."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def fetch_certificate(host: str, port: int, timeout: float = FETCH_TIMEOUT) -> bytes:
    """(Blocking.) The DER certificate `host:port` presents; unverified: trust it only by its fingerprint.
    Raises OSError when the peer cannot be reached."""
    return ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate((host, port), timeout=timeout))


def pinned_context(der: bytes) -> ssl.SSLContext:
    """A client context that accepts exactly the certificate `der` (not what its issuer signed)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.load_verify_locations(cadata=der)
    return context


def verify_failed(exc: BaseException) -> bool:
    """Whether `exc` (an httpx error) comes from a peer certificate that failed verification."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


class PeerNotVerified(httpx.ConnectError):
    """The peer presents no certificate with the fingerprint the cluster knows for it (nothing was sent)."""


class PinnedTransport(httpx.AsyncBaseTransport):
    """An httpx transport for calls to other members: each `host:port` is trusted with the certificate whose
    fingerprint `expected(host, port)` gives ("" for none: refused), re-pinned when that changes."""

    def __init__(self, expected: Callable[[str, int], str]) -> None:
        self._expected = expected
        self._pinned: dict[tuple[str, int], tuple[str, httpx.AsyncHTTPTransport]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host, port = request.url.host, request.url.port or 443
        wanted = self._expected(host, port).upper()
        if not wanted:
            raise PeerNotVerified(f"no certificate is registered for {host}:{port}", request=request)
        pinned = self._pinned.get((host, port))
        if pinned is None or pinned[0] != wanted:
            pinned = await self._pin(request, host, port, wanted)
        try:
            return await pinned[1].handle_async_request(request)
        except httpx.ConnectError as exc:
            if verify_failed(exc):
                raise PeerNotVerified(f"{host}:{port} presents a certificate other than the registered {wanted}",
                                      request=request) from exc
            raise

    async def _pin(self, request: httpx.Request, host: str, port: int,
                   wanted: str) -> tuple[str, httpx.AsyncHTTPTransport]:
        timeout = (request.extensions.get("timeout") or {}).get("connect") or FETCH_TIMEOUT
        try:
            der = await trio.to_thread.run_sync(fetch_certificate, host, port, timeout)
        except OSError as exc:
            raise httpx.ConnectError(f"{host}:{port}: {exc}", request=request) from exc
        seen = fingerprint(der)
        if seen != wanted:
            raise PeerNotVerified(f"{host}:{port} presents certificate {seen}, not the registered {wanted}",
                                  request=request)
        previous = self._pinned.get((host, port))
        if previous is not None and previous[0] == wanted:  # pinned meanwhile by a concurrent request
            return previous
        self._pinned[(host, port)] = pinned = (wanted, httpx.AsyncHTTPTransport(verify=pinned_context(der)))
        if previous is not None:
            await previous[1].aclose()  # the certificate it trusts is no longer the member's
        return pinned

    async def aclose(self) -> None:
        for _, transport in self._pinned.values():
            await transport.aclose()


def registered_fingerprint(node) -> Callable[[str, int], str]:
    """`expected` for PinnedTransport: the fingerprint the log registers for the member at `host:port`."""
    def expected(host: str, port: int) -> str:
        with node.read() as s:
            return next((m.get("fingerprint", "") for m in s.nodes.values()
                         if m["ip"] == host and m["api_port"] == port), "")
    return expected


def member_client(node, timeout: httpx.Timeout) -> httpx.AsyncClient:
    """An httpx client for calls to other members of `node`'s cluster, each verified by its registered
    certificate (requests to an address no member registered are refused)."""
    return httpx.AsyncClient(transport=PinnedTransport(registered_fingerprint(node)), timeout=timeout)

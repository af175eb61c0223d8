"""Node-to-node TLS is verified before anything is sent: a man in the middle with another certificate gets no
password, no key, no ticket (api/pinning.py). Real `gpve serve` processes; the man in the middle is a TLS
server of the test's own, with a certificate made as api/tls.py makes a node's.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading

import httpx
import pytest
import trio

from api.pinning import PeerNotVerified, PinnedTransport, fetch_certificate, fingerprint, pinned_context
from api.tls import certificate_fingerprint, ensure_node_certificate
from tests.harness import Cluster, free_ports, wait_for

pytestmark = pytest.mark.slow


class ManInTheMiddle:
    """Listens on `port`. The first `pass_through` connections are relayed to `target_port` untouched (the
    joiner's certificate check sees the real member); later ones get TLS with the test's own certificate, and
    whatever a client sends over it is recorded in `received`."""

    def __init__(self, directory: str, port: int, target_port: int | None = None, pass_through: int = 0) -> None:
        _ca, cert, key = ensure_node_certificate(directory, "n1", ["127.0.0.1"])  # same names, another key
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.target_port, self.pass_through = target_port, pass_through
        self.received = b""
        self.handshakes = 0  # connections that completed a handshake with our certificate
        self.server = socket.create_server(("127.0.0.1", port))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            if self.pass_through > 0:
                self.pass_through -= 1
                threading.Thread(target=self._relay, args=(conn,), daemon=True).start()
            else:
                threading.Thread(target=self._intercept, args=(conn,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target_port))

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
        pump(client, upstream)

    def _intercept(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                self.handshakes += 1
                while data := tls.recv(65536):
                    self.received += data
                    if b"\r\n\r\n" in self.received:
                        tls.sendall(b"HTTP/1.1 500 Intercepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        return
        except (OSError, ssl.SSLError):
            pass  # the client refused our certificate

    def close(self) -> None:
        self.server.close()


def test_a_pinned_context_trusts_exactly_one_node_certificate(tmp_path):
    """The mechanism, with the certificates api/tls.py makes: a leaf trusted as its own anchor (no CA, no host
    name); another node's certificate, even for the same names, fails the handshake."""
    real = ensure_node_certificate(str(tmp_path / "real"), "n1", ["127.0.0.1"])
    other = ensure_node_certificate(str(tmp_path / "other"), "n1", ["127.0.0.1"])
    ports = free_ports(2)
    servers = []
    for (_ca, cert, key), port in zip((real, other), ports, strict=True):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server = socket.create_server(("127.0.0.1", port))
        servers.append(server)

        def serve(server=server, context=context) -> None:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                try:
                    with context.wrap_socket(conn, server_side=True) as tls:
                        tls.sendall(b"hello")
                except (OSError, ssl.SSLError):
                    pass

        threading.Thread(target=serve, daemon=True).start()
    try:
        der = fetch_certificate("127.0.0.1", ports[0])
        assert fingerprint(der) == certificate_fingerprint(real[1])
        pinned = pinned_context(der)
        with pinned.wrap_socket(socket.create_connection(("127.0.0.1", ports[0]), timeout=5)) as tls:
            assert tls.recv(5) == b"hello"
        with pytest.raises(ssl.SSLCertVerificationError):
            pinned.wrap_socket(socket.create_connection(("127.0.0.1", ports[1]), timeout=5))
    finally:
        for server in servers:
            server.close()


def test_a_join_through_a_man_in_the_middle_fails_and_sends_him_nothing(tmp_path):
    """The joiner's fingerprint check reaches the real member (relayed); its later connections reach a TLS
    server with another certificate: the join fails with a clear error before the password is sent."""
    cluster = Cluster(str(tmp_path), 2, standalone=True).start()
    (mitm_port,) = free_ports(1)
    n1, n2 = cluster.nodes
    mitm = ManInTheMiddle(str(tmp_path / "mitm"), mitm_port, target_port=n1.api_port, pass_through=1)
    try:
        fingerprint_n1 = n1.api().cluster.config.join.get()["nodelist"][0]["pve_fp"]
        with open(os.path.join(n2.data_dir, "priv", "raft.key")) as f:
            key_before = f.read()
        answer = n2.session().post(f"{n2.url}/cluster/config/join", timeout=60,
                                   data={"hostname": f"127.0.0.1:{mitm_port}", "password": n1.password,
                                         "fingerprint": fingerprint_n1})
        assert answer.status_code == 502, answer.text
        assert "no longer presents the certificate with fingerprint" in answer.json()["message"]
        assert mitm.handshakes == 0 and mitm.received == b""
        with open(os.path.join(n2.data_dir, "priv", "raft.key")) as f:
            assert f.read() == key_before
        assert [n["name"] for n in n1.api().cluster.config.nodes.get()] == ["n1"]
        assert [n["name"] for n in n2.api().cluster.config.nodes.get()] == ["n2"]
        # the same join, without the man in the middle, works
        n2.api(timeout=60).cluster.config.join.post(hostname=f"127.0.0.1:{n1.api_port}", password=n1.password,
                                                    fingerprint=fingerprint_n1)
        for node in cluster.nodes:
            wait_for(lambda node=node: len(node.api().cluster.config.nodes.get()) == 2)
    finally:
        mitm.close()
        cluster.stop()


def test_forwarding_refuses_a_member_address_that_presents_another_certificate(three_nodes, tmp_path):
    """Requests for another node carry the caller's ticket: they go only to the certificate that node
    registered in the log. n2 stopped, a server with another certificate on its address gets nothing."""
    n1, n2, _n3 = three_nodes.nodes
    session = n1.session()
    status = f"{n1.url}/nodes/n2/storage"
    assert session.get(status, timeout=10).status_code == 200  # forwarded to the real n2
    n2.stop()
    mitm = ManInTheMiddle(str(tmp_path / "mitm"), n2.api_port)
    try:
        answer = session.get(status, timeout=10)
        assert answer.status_code == 502, answer.text
        assert "node 'n2' is unreachable" in answer.json()["message"]
        assert mitm.handshakes == 0 and mitm.received == b""
    finally:
        mitm.close()
    n2.start()
    n2.wait_ready()
    wait_for(lambda: session.get(status, timeout=10).status_code == 200)


def test_a_member_without_a_registered_certificate_is_not_called(tmp_path):
    """PinnedTransport refuses an address no member registered a certificate for, without connecting."""
    (port,) = free_ports(1)
    listener = socket.create_server(("127.0.0.1", port))
    listener.settimeout(0.5)

    async def call() -> None:
        async with httpx.AsyncClient(transport=PinnedTransport(lambda host, port: "")) as client:
            await client.get(f"https://127.0.0.1:{port}/")

    try:
        with pytest.raises(PeerNotVerified):
            trio.run(call)
        with pytest.raises(TimeoutError):
            listener.accept()  # nobody connected
    finally:
        listener.close()

"""The HTTPS server's connections: keep-alive between requests, an idle connection closed after `--keep-alive`
seconds (hypercorn's keep-alive timeout, with api/server.py's timer); what the API makes of unusual requests."""

from __future__ import annotations

import os
import socket
import ssl
import time
from urllib.parse import urlsplit

import pytest

from tests.harness import Cluster

KEEP_ALIVE = 1.5  # s


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    cluster = Cluster(str(tmp_path_factory.mktemp("http")), 1)
    cluster.nodes[0].extra_args = ["--keep-alive", str(KEEP_ALIVE)]
    cluster.start()
    yield cluster.nodes[0]
    cluster.stop()


def _connect(node) -> ssl.SSLSocket:
    url = urlsplit(node.url)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context.wrap_socket(socket.create_connection((url.hostname, url.port), timeout=10))


def _get(sock: ssl.SSLSocket, path: str, method: str = "GET", headers: tuple[str, ...] = ()) -> tuple[int, bytes]:
    """One request (no body) on an open connection: (status, body), the body read to its Content-Length."""
    sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: gpve\r\n{''.join(h + chr(13) + chr(10) for h in headers)}\r\n"
                 .encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection instead of answering"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split(b" ")[1]), body


def test_a_connection_in_use_stays_open_and_an_idle_one_is_closed_after_the_keep_alive(node):
    sock = _connect(node)
    try:
        # requests 1 s apart for longer than the keep-alive: each answer starts the idle time again
        for _ in range(4):
            status, body = _get(sock, "/api2/json/version")
            assert status == 401, body  # no ticket: refused, and the connection stays open
            time.sleep(1.0)
        sock.settimeout(KEEP_ALIVE + 5)
        started = time.monotonic()
        assert sock.recv(1) == b"", "an idle connection is closed by the server"
        assert time.monotonic() - started < KEEP_ALIVE + 1
    finally:
        sock.close()


def test_a_method_the_api_does_not_know_is_501_and_every_cookie_header_counts(node):
    """pve-http-server knows GET, POST, PUT and DELETE and answers any other method `501 method 'X' not
    available`. A client (or proxy) that sends its cookies in several Cookie headers is heard in all of them."""
    sock = _connect(node)
    try:
        for method in ("PATCH", "OPTIONS"):
            status, body = _get(sock, "/api2/json/version", method)
            assert status == 501 and f"method '{method}' not available".encode() in body
        session = node.session()
        assert session.head(node.url + "/version", timeout=10).status_code == 501
        cookies = ("Cookie: theme=dark", f"Cookie: PVEAuthCookie={session.cookies['PVEAuthCookie']}")
        status, body = _get(sock, "/api2/json/version", headers=cookies)
        assert status == 200 and b'"version"' in body
    finally:
        sock.close()


def _sockets(pid: int) -> int:
    fds = f"/proc/{pid}/fd"
    return sum(1 for fd in os.listdir(fds) if os.readlink(os.path.join(fds, fd)).startswith("socket:"))


def test_a_connection_closed_by_its_client_before_the_answer_is_let_go(node):
    """Clients that go away in the middle of a request (a script killed mid-call, here while sending its body) or
    right after asking leave no open socket on the node: it is let go at once, not after the keep-alive time."""
    time.sleep(KEEP_ALIVE + 0.5)  # the earlier tests' connections are gone
    before = _sockets(node.proc.pid)
    for i in range(20):
        sock = _connect(node)
        sock.sendall(b"POST /api2/json/access/ticket HTTP/1.1\r\nHost: gpve\r\nContent-Length: 1000\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n\r\nusername=root%40pam" if i % 2 else
                     b"GET /api2/json/version HTTP/1.1\r\nHost: gpve\r\n\r\n")
        sock.close()
    deadline = time.monotonic() + KEEP_ALIVE / 2
    while _sockets(node.proc.pid) > before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _sockets(node.proc.pid) <= before

"""A fault-injecting TCP proxy for the nodes' Raft traffic, all on loopback.

Each node advertises a proxy address as its Raft id and binds its real port elsewhere
(`--raft-bind`). pysyncobj's connecting side first sends its own node id, so the proxy knows both
ends of every connection and can cut chosen pairs (a partition) and let them through again (heal).
"""

from __future__ import annotations

import pickle
import select
import socket
import struct
import threading
import zlib


def _first_frame_sender(data: bytes) -> str | None:
    """The node id in pysyncobj's first frame: 4-byte length, then zlib(pickle(address))."""
    if len(data) < 4:
        return None
    (length,) = struct.unpack("i", data[:4])
    if len(data) < 4 + length:
        return None
    try:
        value = pickle.loads(zlib.decompress(data[4: 4 + length]))  # noqa: S301 - our own test traffic
    except Exception:
        return "?"
    return value if isinstance(value, str) else "?"


class FaultProxy:
    def __init__(self, routes: dict[str, int]) -> None:
        """`routes`: advertised id "127.0.0.1:P" -> the real port the node binds."""
        self.routes = routes
        self.blocked: set[frozenset[str]] = set()
        self.lock = threading.Lock()
        self.pairs: list[tuple[socket.socket, socket.socket, str, str]] = []
        self.stopping = False
        self.listeners = []
        for advertised, real in routes.items():
            host, port = advertised.rsplit(":", 1)
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, int(port)))
            listener.listen(64)
            self.listeners.append(listener)
            threading.Thread(target=self._accept, args=(listener, advertised, real), daemon=True).start()

    def partition(self, side_a: list[str], side_b: list[str]) -> None:
        with self.lock:
            for a in side_a:
                for b in side_b:
                    self.blocked.add(frozenset((a, b)))
            doomed = [p for p in self.pairs if frozenset((p[2], p[3])) in self.blocked]
        for client, server, _, _ in doomed:
            for s in (client, server):
                try:
                    s.close()
                except OSError:
                    pass

    def heal(self) -> None:
        with self.lock:
            self.blocked.clear()

    def close(self) -> None:
        self.stopping = True
        for listener in self.listeners:
            listener.close()
        self.partition(list(self.routes), list(self.routes))

    def _accept(self, listener: socket.socket, target: str, real: int) -> None:
        while not self.stopping:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client, target, real), daemon=True).start()

    def _serve(self, client: socket.socket, target: str, real: int) -> None:
        head = b""
        source = None
        client.settimeout(5)
        try:
            while source is None:
                chunk = client.recv(4096)
                if not chunk:
                    client.close()
                    return
                head += chunk
                source = _first_frame_sender(head)
            with self.lock:
                cut = frozenset((source, target)) in self.blocked
            if cut:
                client.close()
                return
            server = socket.create_connection(("127.0.0.1", real), timeout=5)
        except OSError:
            client.close()
            return
        client.settimeout(None)
        server.settimeout(None)
        server.sendall(head)
        with self.lock:
            self.pairs.append((client, server, source, target))
        self._pump(client, server)
        with self.lock:
            self.pairs = [p for p in self.pairs if p[0] is not client]

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 1.0)
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        raise OSError("closed")
                    peers[s].sendall(data)
        except (OSError, ValueError):
            pass
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

"""A fault-injecting TCP proxy for the nodes' Raft traffic, all on loopback.

Each node advertises a proxy address as its Raft id and binds its real port elsewhere
(`--raft-bind`). pysyncobj's connecting side sends its own node id at the start (after the key
exchange: the proxy holds the cluster key), so the proxy knows both ends of every connection and can
cut chosen pairs (a partition) and let them through again (heal).
"""

from __future__ import annotations

import pickle
import select
import socket
import struct
import threading
import zlib

from pysyncobj.encryptor import getEncryptor


class _SenderSniffer:
    """The connecting node's id, from the bytes it sends: pysyncobj frames are a 4-byte length ('i') then
    zlib(pickle). Unencrypted, the first frame is the id; keyed (`fernet`), the first frame is the client's
    random key and the second its id, wrapped as (the server's random key, id)."""

    def __init__(self, fernet=None) -> None:
        self.fernet = fernet
        self.buffer = b""
        self.frames = 0

    def feed(self, data: bytes) -> str | None:
        """None until the id is known; "?" for what is not a node id."""
        self.buffer += data
        while len(self.buffer) >= 4:
            (length,) = struct.unpack("i", self.buffer[:4])
            if len(self.buffer) < 4 + length:
                return None
            body, self.buffer = self.buffer[4: 4 + length], self.buffer[4 + length:]
            self.frames += 1
            try:
                value = pickle.loads(zlib.decompress(self.fernet.decrypt(body) if self.fernet else body))  # noqa: S301
            except Exception:
                return "?"
            if self.fernet is None or self.frames == 2:
                if self.fernet is not None:
                    value = value[1] if isinstance(value, tuple) and len(value) == 2 else None
                return value if isinstance(value, str) else "?"
        return None


class FaultProxy:
    def __init__(self, routes: dict[str, int], key_file: str | None = None) -> None:
        """`routes`: advertised id "127.0.0.1:P" -> the real port the node binds; `key_file`: the cluster's
        Raft key, to read the connecting node's id from its encrypted handshake."""
        self.routes = routes
        self.fernet = None
        if key_file:
            with open(key_file) as f:
                self.fernet = getEncryptor(f.read().strip())
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
        try:
            server = socket.create_connection(("127.0.0.1", real), timeout=5)
        except OSError:
            client.close()
            return
        client.settimeout(None)
        server.settimeout(None)
        sniffer = _SenderSniffer(self.fernet)
        source = None
        try:
            while True:
                readable, _, _ = select.select([client, server], [], [], 1.0)
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        raise OSError("closed")
                    (server if s is client else client).sendall(data)
                    if s is client and source is None:
                        source = sniffer.feed(data)
                        if source is not None:
                            with self.lock:
                                if frozenset((source, target)) in self.blocked:
                                    raise OSError("partitioned")
                                self.pairs.append((client, server, source, target))
        except (OSError, ValueError):
            pass
        finally:
            for s in (client, server):
                try:
                    s.close()
                except OSError:
                    pass
            with self.lock:
                self.pairs = [p for p in self.pairs if p[0] is not client]

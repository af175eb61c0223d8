"""The simulated network, with the semantics of pysyncobj's TCP transport.

Between two nodes there is one connection. While it is up, each direction is a FIFO stream: nothing
is lost, duplicated or reordered. Faults act the way they act on TCP: a lost packet that TCP cannot
recover resets the connection (everything in flight is lost, both ends see a disconnect, the higher
name reconnects every `connectionRetryTime`); a partition (either direction) stalls the stream until
`connectionTimeout` kills it; a crashed process is noticed at once, a powered-off host only by timeout.
Per-message reordering and duplication break the TCP contract, so they exist only as the explicit
`reorder` and `dup` faults (datagram mode), off in the default fault set.
"""

from __future__ import annotations

import hashlib
import pickle
import random
from collections.abc import Callable
from dataclasses import dataclass

from pysyncobj.transport import Transport

from engine.replog import ENGINE_TRANSPORT_MIXINS
from sim.loop import Loop

CONNECTION_TIMEOUT = 3.5
RETRY = 0.5


@dataclass
class Link:
    up: bool = False
    epoch: int = 0
    retrying: bool = False


class Network:
    def __init__(self, loop: Loop, rng: random.Random, names: list[str], trace: Callable[[str], None],
                 on_receive: Callable[[str], None], enter: Callable[[str | None], str | None]) -> None:
        self.loop, self.rng, self.trace, self.on_receive, self.enter = loop, rng, trace, on_receive, enter
        self.names = sorted(names)
        self.links = {(a, b): Link() for a in self.names for b in self.names if a < b}
        self.base_delay = {(a, b): rng.uniform(0.0002, 0.002) for a in self.names for b in self.names if a != b}
        self.slow: dict[tuple[str, str], float] = {}
        self.blocked: set[tuple[str, str]] = set()
        self.transports: dict[str, SimTransportBase] = {}
        self.last_arrival: dict[tuple[str, str], float] = {}
        self.loss = 0.0
        self.reorder = False
        self.dup = 0.0
        self.sent = self.delivered = self.lost = self.resets = 0
        self.bytes = 0

    # ---- membership of the network -------------------------------------------------------
    def attach(self, transport: SimTransportBase) -> None:
        name = transport.name
        self.transports[name] = transport
        for pair in self._pairs_of(name):
            self._schedule_connect(pair, 0.0)

    def detach(self, name: str, noticed_after: float) -> None:
        """The process is gone: its side of every link dies now; peers notice after `noticed_after`."""
        self.transports.pop(name, None)
        for pair in self._pairs_of(name):
            link = self.links[pair]
            if link.up:
                link.epoch += 1  # in-flight messages die with the process
                self.loop.after(noticed_after, self._down, pair, link.epoch)

    def _pairs_of(self, name: str) -> list[tuple[str, str]]:
        return [p for p in sorted(self.links) if name in p]

    # ---- connections ---------------------------------------------------------------------
    def _can_connect(self, a: str, b: str) -> bool:
        return (a in self.transports and b in self.transports
                and (a, b) not in self.blocked and (b, a) not in self.blocked)

    def _schedule_connect(self, pair: tuple[str, str], delay: float) -> None:
        link = self.links[pair]
        if not link.retrying:
            link.retrying = True
            self.loop.after(delay, self._try_connect, pair)

    def _try_connect(self, pair: tuple[str, str]) -> None:
        link = self.links[pair]
        link.retrying = False
        a, b = pair
        if link.up or pair[1] not in self.transports:  # the higher name initiates, as TCPTransport does
            return
        if self._can_connect(a, b):
            rtt = self.base_delay[(b, a)] + self.base_delay[(a, b)]
            self.loop.after(rtt, self._connected, pair, link.epoch)
        else:
            self._schedule_connect(pair, RETRY)

    def _connected(self, pair: tuple[str, str], epoch: int) -> None:
        link = self.links[pair]
        if link.up or link.epoch != epoch or not self._can_connect(*pair):
            self._schedule_connect(pair, RETRY)
            return
        link.up, link.epoch = True, link.epoch + 1
        self.trace(f"connect {pair[0]} {pair[1]}")
        for me, peer in (pair, pair[::-1]):
            self.transports[me].connected_to(peer, True)

    def _down(self, pair: tuple[str, str], epoch: int | None = None) -> None:
        link = self.links[pair]
        if not link.up or (epoch is not None and link.epoch != epoch):
            return
        link.up, link.epoch = False, link.epoch + 1
        self.resets += 1
        self.trace(f"disconnect {pair[0]} {pair[1]}")
        for me, peer in (pair, pair[::-1]):
            if me in self.transports:
                self.transports[me].connected_to(peer, False)
        self._schedule_connect(pair, RETRY)

    def reset(self, a: str, b: str) -> None:
        """The connection breaks (a loss TCP cannot recover): both ends notice after a round trip."""
        pair = (min(a, b), max(a, b))
        link = self.links[pair]
        if link.up:
            link.epoch += 1
            self.loop.after(self.base_delay[(a, b)] * 2, self._down, pair, link.epoch)

    # ---- partitions ------------------------------------------------------------------------
    def block(self, src: str, dst: str) -> None:
        if (src, dst) in self.blocked:
            return
        self.blocked.add((src, dst))
        self.trace(f"block {src} {dst}")
        pair = (min(src, dst), max(src, dst))
        self.loop.after(CONNECTION_TIMEOUT, self._stalled, pair)

    def _stalled(self, pair: tuple[str, str]) -> None:
        a, b = pair
        if (a, b) in self.blocked or (b, a) in self.blocked:
            self._down(pair)

    def unblock(self, src: str, dst: str) -> None:
        if (src, dst) in self.blocked:
            self.blocked.discard((src, dst))
            self.trace(f"unblock {src} {dst}")

    def heal_all(self) -> None:
        for src, dst in sorted(self.blocked):
            self.unblock(src, dst)
        self.slow.clear()
        self.loss, self.dup, self.reorder = 0.0, 0.0, False

    # ---- messages --------------------------------------------------------------------------
    def send(self, src: str, dst: str, message: dict) -> None:
        data = pickle.dumps(message, protocol=4)
        self.sent += 1
        self.bytes += len(data)
        self.trace(f"send {src} {dst} {message.get('type')} {hashlib.sha1(data).hexdigest()[:12]}")
        pair = (min(src, dst), max(src, dst))
        link = self.links[pair]
        if self.loss and self.rng.random() < self.loss:
            self.lost += 1
            self.trace(f"loss {src} {dst}")
            if self.reorder or self.dup:
                return  # datagram mode: just this message
            self.reset(src, dst)
            return
        delay = self.base_delay[(src, dst)] * self.rng.uniform(1.0, 3.0) + self.slow.get((src, dst), 0.0)
        when = self.loop.now + delay
        if self.reorder:
            when += self.rng.uniform(0.0, 0.02)
        else:
            when = max(when, self.last_arrival.get((src, dst), 0.0))
            self.last_arrival[(src, dst)] = when
        self.loop.at(when, self._deliver, src, dst, data, link.epoch)
        if self.dup and self.rng.random() < self.dup:
            self.loop.at(when + self.rng.uniform(0.0, 0.02), self._deliver, src, dst, data, link.epoch)

    def _deliver(self, src: str, dst: str, data: bytes, epoch: int) -> None:
        link = self.links[(min(src, dst), max(src, dst))]
        transport = self.transports.get(dst)
        if link.epoch != epoch or not link.up or transport is None or (src, dst) in self.blocked:
            self.lost += 1
            return
        self.delivered += 1
        prev = self.enter(dst)
        try:
            transport.receive(src, pickle.loads(data))
        finally:
            self.enter(prev)
        self.on_receive(dst)


class SimTransportBase(Transport):
    """pysyncobj's view of the simulated network; `make_transport_class` binds it to one `Network`."""

    network: Network

    def __init__(self, syncObj, selfNode, otherNodes) -> None:  # noqa: N803 - pysyncobj's names
        super().__init__(syncObj, selfNode, otherNodes)
        self.name = selfNode.id
        self.peers = {n.id: n for n in otherNodes}
        self.connected: set[str] = set()
        self.network.attach(self)

    def connected_to(self, peer: str, up: bool) -> None:
        node = self.peers.get(peer)
        if node is None:
            return
        prev = self.network.enter(self.name)
        try:
            if up and peer not in self.connected:
                self.connected.add(peer)
                self._onNodeConnected(node)
            elif not up and peer in self.connected:
                self.connected.discard(peer)
                self._onNodeDisconnected(node)
        finally:
            self.network.enter(prev)

    def receive(self, src: str, message: dict) -> None:
        node = self.peers.get(src)
        if node is not None and src in self.connected:
            self._onMessageReceived(node, message)

    def send(self, node, message) -> bool:
        if node.id not in self.connected or self.network.transports.get(self.name) is not self:
            return False
        self.network.send(self.name, node.id, message)
        return True

    def addNode(self, node) -> None:  # noqa: N802 - pysyncobj's name
        """A member added (dynamic membership): from now on its connection counts, as TCPTransport's does."""
        if node.id in self.peers:
            return
        self.peers[node.id] = node
        pair = (min(self.name, node.id), max(self.name, node.id))
        if self.network.links[pair].up:
            self.connected_to(node.id, True)

    def dropNode(self, node) -> None:  # noqa: N802
        """A member removed: its connection is dropped without a disconnect callback, as TCPTransport does."""
        self.peers.pop(node.id, None)
        self.connected.discard(node.id)


def make_transport_class(network: Network) -> type:
    """The class pysyncobj instantiates: the production mixins (sync before send, commit guard) over `network`."""
    return type("SimTransport", (*ENGINE_TRANSPORT_MIXINS, SimTransportBase), {"network": network})

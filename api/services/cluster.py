"""The cluster: create, join (both sides), list and remove nodes (Proxmox's `pvecm create/add/delnode`,
`/cluster/config` endpoints in `PVE/API2/ClusterConfig.pm`).

Joining, on the new node: fetch the member's certificate and check its fingerprint, then, trusting exactly
that certificate (api/pinning.py: a man in the middle fails the handshake before anything is sent), log in
there as root@pam and ask the member to add us (`POST /cluster/config/nodes/{node}`). Its answer, the only
one that carries it, hands over the cluster's Raft key (the key of the log transport's encryption; Proxmox's
addnode answers corosync's authkey likewise) and the cluster CA; the member starts the Raft membership
change, which commits once we follow the cluster's log with that key. The CA becomes ours, and the ticket key
arrives with the log. Every call here that changes the membership is root@pam's alone, as in Proxmox.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os

import httpx
import structlog
import trio

from api.context import Ctx
from api.errors import ApiError
from api.pinning import fetch_certificate, fingerprint, pinned_context, verify_failed
from api.schema import ParamErrors
from engine import commands as cmd
from engine.bridge import NoQuorum
from engine.errors import Rejection
from engine.node import Node

log = structlog.get_logger("gpve.cluster")
JOIN_TIMEOUT = 60.0  # seconds for the cluster to admit a joining node once the member has answered


async def create(ctx: Ctx, clustername: str) -> str:
    """Name the cluster this (single) node forms."""
    await ctx.node.submit(cmd.SetClusterName(request_id=ctx.command_id, ts=ctx.now, user=ctx.user,
                                             cluster_name=clustername))
    return f"cluster '{clustername}' created on node '{ctx.node.name}'"


def join_info(ctx: Ctx) -> dict:
    """What a joiner needs: `nodelist` (name, nodeid, addresses, `pve_fp`, `raft_addr`, `api_port`),
    `preferred_node`, `config_digest`, `totem`. 503 while this node has not caught up with its cluster."""
    with ctx.node.read() as s:
        nodes = sorted((dict(n) for n in s.nodes.values()), key=lambda n: n["nodeid"])
        name, version = s.cluster_name, s.version
    if not any(n["name"] == ctx.node.name for n in nodes):
        # a node that has just (re)started has not replayed its log yet: an empty member list here
        # would make a joiner found a cluster of its own (found by the simulator, seed 18)
        raise NoQuorum("cluster not ready - this node has not caught up with the cluster yet")
    nodelist = [{"name": n["name"], "nodeid": str(n["nodeid"]), "pve_addr": n["ip"], "ring0_addr": n["ip"],
                 "quorum_votes": "1", "pve_fp": n.get("fingerprint", ""), "raft_addr": n["raft_addr"],
                 "api_port": n["api_port"]} for n in nodes]
    digest = hashlib.sha1(repr((name, version, [(n["name"], n["raft_addr"]) for n in nodes])).encode()).hexdigest()
    return {"nodelist": nodelist, "preferred_node": ctx.node.name, "config_digest": digest,
            "totem": {"cluster_name": name, "config_version": str(version), "version": "2"}}


def nodes(ctx: Ctx) -> list[dict]:
    with ctx.node.read() as s:
        return sorted((dict(n) for n in s.nodes.values()), key=lambda n: n["nodeid"])


def admit(ctx: Ctx, name: str, raft_addr: str, ip: str, api_port: int, fingerprint: str) -> dict:
    """(On a member, for a joining node.) Start admitting it, in the background: the Raft membership change
    commits only once the joiner follows the log (keyed with `join_secrets`, which the answer carries too), then
    the node is registered under this request's id. Returns the join information (`join_info`). 409 when another
    node has that name, 503 while this member has not caught up."""
    with ctx.node.read() as s:
        known, admitted_at = s.nodes.get(name), s.applied
    if known and known["raft_addr"] != raft_addr:
        raise ApiError(409, f"node '{name}' already exists in the cluster")
    info = join_info(ctx)
    if not known:
        ctx.rt.spawn(functools.partial(_admit, ctx.node, name, raft_addr, ip, api_port, fingerprint, ctx.user,
                                       ctx.command_id, admitted_at))
    return info


def join_secrets(ctx: Ctx) -> dict:
    """What a member's answer to a joining node hands over, and no other answer: the cluster's Raft key
    (`raft_key`) and CA (`ca_cert`, `ca_key`)."""
    ssl_dir = os.path.join(ctx.node.spec.data_dir, "ssl")
    with open(os.path.join(ssl_dir, "pve-root-ca.pem")) as f:
        ca_cert = f.read()
    with open(os.path.join(ssl_dir, "pve-root-ca.key")) as f:
        ca_key = f.read()
    return {"ca_cert": ca_cert, "ca_key": ca_key, "raft_key": ctx.node.raft_key}


async def _admit(node: Node, name: str, raft_addr: str, ip: str, api_port: int, fingerprint: str, user: str,
                 request_id: str, admitted_at: int) -> None:
    """Add the joiner to the Raft membership (one change at a time), then register it. Without quorum for 30 s the
    admission is dropped (a warning: the joiner's request answers 503 and its admin tries again). An admission
    that outlives a removal of the node (`admitted_at`: this member's `State.applied` when it began) does neither,
    or takes its Raft add back: a node that left stays out."""
    try:
        await node.read_barrier()
        if _removed_since(node, name, admitted_at):
            log.warning("join not admitted", joining=name, raft_addr=raft_addr, error="removed meanwhile")
            return
        await node.change_membership("add", raft_addr)
    except NoQuorum as exc:
        log.warning("join not admitted", joining=name, raft_addr=raft_addr, error=exc.message)
        return
    registered = await node.submit_until_done(cmd.RegisterNode(
        request_id=request_id, ts=node.wall(), user=user, name=name, ip=ip, api_port=api_port, raft_addr=raft_addr,
        fingerprint=fingerprint, admitted_at=admitted_at))
    if registered is not None:  # a refusal is logged by submit_until_done
        log.info("node joined", joined=name, raft_addr=raft_addr)
    elif _removed_since(node, name, admitted_at):
        with contextlib.suppress(NoQuorum):
            await node.change_membership("remove", raft_addr)


def _removed_since(node: Node, name: str, admitted_at: int) -> bool:
    with node.read() as s:
        return s.removed_nodes.get(name, -1) >= admitted_at


async def remove_node(ctx: Ctx, name: str) -> None:
    """Remove node `name` from the cluster: from the node list, then from the Raft membership. The engine refuses
    (404 unknown; 409 while it owns guests or runs tasks). A retry of a removal whose node list entry is already
    gone is answered from the log's request memory, with the Raft address to finish the membership change with
    (before, a retry after a lost answer met 404 and the node stayed a Raft member)."""
    if name == ctx.node.name:
        raise ApiError(400, "cannot remove the node you are talking to - ask another member")
    result = await ctx.node.submit(cmd.RemoveNode(request_id=ctx.command_id, ts=ctx.now, user=ctx.user, name=name))
    await ctx.node.change_membership("remove", result["raft_addr"])


async def next_id(ctx: Ctx, vmid: int | None = None) -> int:
    """`GET /cluster/nextid`: the lowest free VMID, or with `vmid`, that one if free (400 `VM N already exists`
    otherwise; 500 when none is left). Linearizable: a read barrier first, so a VMID taken through any node before
    the call is seen taken."""
    await ctx.node.read_barrier()
    with ctx.node.read() as s:
        if vmid is not None:
            if s.vmid_taken(vmid, ctx.now, ctx.user):
                raise ParamErrors({"vmid": f"VM {vmid} already exists"})
            return vmid
        free = s.next_free_vmid(ctx.now)
    if free is None:
        raise Rejection(500, "unable to get any free VMID in range [100, 999999999]")
    return free


async def join(ctx: Ctx, hostname: str, password: str, expected: str) -> str:
    """Join this (guest-less, single) node to the cluster of member `hostname` (`host` or `host:apiport`),
    with root@pam's `password` there; the member's API certificate must have the SHA-256 fingerprint `expected`
    (400 otherwise; 502 when a later connection presents another certificate: nothing is sent then)."""
    host, _, port_text = hostname.rpartition(":") if ":" in hostname else (hostname, "", "8006")
    port = int(port_text) if port_text.isdigit() else 8006
    with ctx.node.read() as s:
        if s.guests:
            raise ApiError(400, "this node has guests - a joining node must have none")
        if len(s.nodes) > 1:
            raise ApiError(400, "this node is already part of a cluster")
    try:
        der = await trio.to_thread.run_sync(fetch_certificate, host, port)
    except OSError as exc:
        raise ApiError(502, f"unable to reach '{host}:{port}' - {exc}") from None
    seen = fingerprint(der)
    if seen != expected.upper():
        raise ParamErrors({"fingerprint": f"fingerprint mismatch: {host} presents {seen}"})
    async with httpx.AsyncClient(verify=pinned_context(der), timeout=60, trust_env=False) as http:
        try:
            answer = await _ask_to_join(ctx, http, f"https://{host}:{port}/api2/json", host, password)
        except httpx.HTTPError as exc:
            if verify_failed(exc):
                raise ApiError(502, f"'{host}:{port}' no longer presents the certificate with fingerprint "
                                    f"{seen} - nothing was sent to it (man in the middle?)") from None
            raise ApiError(502, f"unable to reach '{host}:{port}' - {type(exc).__name__}") from None
    spec = ctx.node.spec
    members = {n["name"]: n["raft_addr"] for n in answer["nodelist"]}
    await ctx.node.switch_to_cluster({**members, spec.name: spec.raft_addr}, answer["raft_key"])
    with trio.move_on_after(JOIN_TIMEOUT) as waited:
        await ctx.rt.adopt_ca(answer["ca_cert"], answer["ca_key"])  # registers this node: done once admitted
    if waited.cancelled_caught:
        raise NoQuorum(f"cluster not ready - '{host}' did not admit this node within {JOIN_TIMEOUT:.0f} s")
    return f"node '{spec.name}' joined cluster '{answer['totem']['cluster_name']}'"


async def _ask_to_join(ctx: Ctx, http: httpx.AsyncClient, base: str, host: str, password: str) -> dict:
    """Log in at the member (`base`) as root@pam and ask it to add this node; its answer (`admit`)."""
    spec = ctx.node.spec
    login = await http.post(base + "/access/ticket", data={"username": "root@pam", "password": password})
    if login.status_code != 200:
        raise ApiError(401, f"authentication at '{host}' failed")
    auth = login.json()["data"]
    headers = {"CSRFPreventionToken": auth["CSRFPreventionToken"], "Cookie": f"PVEAuthCookie={auth['ticket']}"}
    info = await http.get(base + "/cluster/config/join", headers=headers)
    if info.status_code != 200:
        raise ApiError(info.status_code, f"'{host}': {info.reason_phrase}")
    members = {n["name"]: n["raft_addr"] for n in info.json()["data"]["nodelist"]}
    if not members:
        raise ApiError(503, f"'{host}' does not know its cluster's members yet - try again")
    if ctx.node.name in members:
        raise ApiError(409, f"a node named '{ctx.node.name}' is already in that cluster")
    added = await http.post(base + f"/cluster/config/nodes/{spec.name}", headers=headers,
                            data={"raft_addr": spec.raft_addr, "new_node_ip": spec.ip, "apiport": spec.api_port})
    if added.status_code != 200:
        raise ApiError(added.status_code, f"the cluster refused the join: {added.reason_phrase}")
    return added.json()["data"]

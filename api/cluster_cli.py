"""`gpve cluster create|join|status|nodes`: the cluster API of the local node, from the shell.

The connection trusts exactly the node's own certificate (DATA_DIR/ssl/pve-ssl.pem) before root@pam's
password is sent (api/pinning.py).
"""

from __future__ import annotations

import argparse
import json
import os
import ssl

import httpx

from api.pinning import pinned_context


def _client(args: argparse.Namespace) -> tuple[httpx.Client, str]:
    base = f"https://{args.host}:{args.api_port}/api2/json"
    password_file = args.password_file or os.path.join(args.data_dir, "root-password")
    with open(password_file) as f:
        password = f.read().strip()
    with open(os.path.join(args.data_dir, "ssl", "pve-ssl.pem")) as f:
        certificate = ssl.PEM_cert_to_DER_cert(f.read())
    client = httpx.Client(verify=pinned_context(certificate), timeout=60, trust_env=False)
    try:
        login = client.post(base + "/access/ticket", data={"username": "root@pam", "password": password})
    except httpx.ConnectError as exc:
        raise SystemExit(f"cannot connect to {base} with the node's certificate - {exc}") from None
    if login.status_code != 200:
        raise SystemExit(f"login to {base} failed: {login.status_code} {login.reason_phrase}")
    data = login.json()["data"]
    client.cookies.set("PVEAuthCookie", data["ticket"])
    client.headers["CSRFPreventionToken"] = data["CSRFPreventionToken"]
    return client, base


def _call(client: httpx.Client, method: str, url: str, **kwargs) -> object:
    response = client.request(method, url, **kwargs)
    if response.status_code != 200:
        raise SystemExit(f"{method} {url}: {response.status_code} {response.reason_phrase}")
    return response.json()["data"]


def run(args: argparse.Namespace) -> None:
    client, base = _client(args)
    if args.action == "create":
        print(_call(client, "POST", base + "/cluster/config", data={"clustername": args.name}))
    elif args.action == "join":
        with open(args.member_password_file) as f:
            member_password = f.read().strip()
        print(_call(client, "POST", base + "/cluster/config/join",
                    data={"hostname": args.member, "password": member_password, "fingerprint": args.fingerprint}))
    elif args.action == "status":
        print(json.dumps(_call(client, "GET", base + "/cluster/status"), indent=1))
    elif args.action == "nodes":
        for node in _call(client, "GET", base + "/cluster/config/nodes"):
            print(f"{node['nodeid']:>3}  {node['name']:<20} {node['raft_addr']}")


def add_parser(sub) -> None:
    c = sub.add_parser("cluster", help="create, join or inspect the cluster (through the local node's API)")
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--api-port", type=int, default=8006)
    c.add_argument("--data-dir", default="/var/lib/gpve",
                   help="where this node keeps root-password and its certificate (ssl/pve-ssl.pem)")
    c.add_argument("--password-file", help="root@pam's password for this node (default: DATA_DIR/root-password)")
    actions = c.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="name the cluster this single node forms")
    create.add_argument("name")
    join = actions.add_parser("join", help="join this node to a member's cluster")
    join.add_argument("member", help="a member's API address, host or host:port")
    join.add_argument("--fingerprint", required=True, help="the member's certificate fingerprint (SHA-256)")
    join.add_argument("--member-password-file", required=True, help="root@pam's password on the member")
    actions.add_parser("status", help="membership and quorum")
    actions.add_parser("nodes", help="the cluster's nodes")

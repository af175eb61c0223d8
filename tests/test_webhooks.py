"""Webhooks: signed deliveries to a real HTTP receiver, retried with backoff, finished by another node when
the delivering one is killed, verified by the spec's algorithm and by the `standardwebhooks` library."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from proxmoxer.tools import Tasks
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.harness import wait_for

pytestmark = pytest.mark.slow
SECRET = "s3cret-webhook-key-for-tests"


class Receiver:
    """An HTTP server answering with the scripted statuses in turn (then 200), recording every request."""

    def __init__(self, script: list[int]) -> None:
        self.script, self.requests = list(script), []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.script.pop(0) if receiver.script else 200
                receiver.requests.append((dict(self.headers), body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def spec_verify(secret: str, headers: dict, body: bytes, now: float) -> bool:
    """The spec's pseudo-code, as a receiver implements it."""
    ts = headers["X-Webhook-Timestamp"]
    expected = "sha256=" + hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers["X-Webhook-Signature"], expected) and abs(now - int(ts)) <= 300


def v1(node) -> str:
    return f"https://127.0.0.1:{node.api_port}/v1"


def test_a_delivery_retried_and_finished_by_another_node(three_nodes):
    receiver = Receiver([500, 500])
    try:
        n1 = three_nodes.nodes[0]
        s, px = n1.session(), n1.api()
        r = s.post(f"{v1(n1)}/webhooks", json={"name": "ci", "url": receiver.url, "events": ["vm.created"],
                                               "secret": SECRET}, timeout=10)
        assert r.status_code == 200, r.text
        hook = r.json()
        assert hook["secret"] == SECRET and hook["enabled"] is True
        listed = s.get(f"{v1(n1)}/webhooks", timeout=10).json()
        assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]

        vmid = int(px.cluster.nextid.get())
        upid = px.nodes("n2").qemu.create(vmid=vmid, name="hooked", memory=64)
        Tasks.blocking_status(px, upid, timeout=60, polling_interval=0.2)
        # the first attempt (500) is committed: kill the node that made it, between attempts
        first = wait_for(lambda: [d for d in s.get(f"{v1(n1)}/webhooks/{hook['id']}/deliveries", timeout=10).json()
                                  if d["attempt"] == 1] or None, timeout=30)[0]
        assert (first["status"], first["outcome"]) == (500, "failed")
        deliverer = three_nodes.node(first["node"])
        deliverer.kill()
        alive = next(n for n in three_nodes.nodes if n is not deliverer)
        wait_for(lambda: any(status == 200 for _, _, status in receiver.requests), timeout=60)
        time.sleep(3)  # nothing more comes: delivered means done with

        assert [status for _, _, status in receiver.requests] == [500, 500, 200]
        ids = {headers["webhook-id"] for headers, _, _ in receiver.requests}
        bodies = {body for _, body, _ in receiver.requests}
        assert len(ids) == 1 and len(bodies) == 1  # one event, the same bytes each time
        headers, body, _ = receiver.requests[-1]
        event = json.loads(body)
        assert event["type"] == "vm.created" and event["data"]["vmid"] == vmid and event["id"] == headers["webhook-id"]
        assert set(event) == {"id", "timestamp", "type", "data"}
        assert spec_verify(SECRET, headers, body, time.time())
        assert not spec_verify(SECRET, headers, body, time.time() + 301)  # a replay after 5 minutes: rejected
        assert not spec_verify("another-secret-entirely", headers, body, time.time())
        standard = Webhook("whsec_" + base64.b64encode(SECRET.encode()).decode())
        lowered = {k.lower(): v for k, v in headers.items()}
        assert standard.verify(body, lowered)["data"]["vmid"] == vmid
        with pytest.raises(WebhookVerificationError):
            standard.verify(body.replace(b"hooked", b"h00ked"), lowered)

        alive_s = alive.session()
        deliveries = alive_s.get(f"{v1(alive)}/webhooks/{hook['id']}/deliveries", timeout=10).json()
        assert [(d["attempt"], d["outcome"]) for d in reversed(deliveries)] == \
            [(1, "failed"), (2, "failed"), (3, "delivered")]
        assert {d["node"] for d in deliveries if d["attempt"] > 1} != {deliverer.name}
        assert alive_s.get(f"{v1(alive)}/webhooks/{hook['id']}", timeout=10).json()["pending"] is None
        # the secret is in no answer and nowhere on disk in clear
        for node in three_nodes.nodes:
            for root, _, files in os.walk(node.data_dir):
                for name in files:
                    with open(os.path.join(root, name), "rb") as f:
                        assert SECRET.encode() not in f.read(), os.path.join(root, name)
    finally:
        receiver.close()


def test_gone_disables_and_bad_hooks_are_refused(single_node):
    receiver = Receiver([410])
    try:
        s, px = single_node.session(), single_node.api()
        hook = s.post(f"{v1(single_node)}/webhooks", json={"name": "gone", "url": receiver.url,
                                                            "events": ["vm.*"]}, timeout=10).json()
        assert len(hook["secret"]) >= 16  # made when none is given, shown this once
        vmid = int(px.cluster.nextid.get())
        Tasks.blocking_status(px, px.nodes("n1").qemu.create(vmid=vmid, memory=64), timeout=60, polling_interval=0.2)
        wait_for(lambda: s.get(f"{v1(single_node)}/webhooks/{hook['id']}", timeout=10).json()["enabled"] is False)
        assert len(receiver.requests) == 1
        r = s.put(f"{v1(single_node)}/webhooks/{hook['id']}", json={"enabled": True, "events": ["vm.deleted"]},
                  timeout=10)
        assert r.json()["enabled"] is True and r.json()["events"] == ["vm.deleted"] and "secret" not in r.json()
        for body, key in (({"name": "x", "url": "ftp://example.org/", "events": []}, "url"),
                          ({"name": "x", "url": "file:///etc/passwd", "events": []}, "url"),
                          ({"name": "x", "url": receiver.url, "events": ["vm.exploded"]}, "events"),
                          ({"name": "x", "url": receiver.url, "events": [], "secret": "short"}, "secret"),
                          ({"url": receiver.url, "events": []}, "name")):
            r = s.post(f"{v1(single_node)}/webhooks", json=body, timeout=10)
            assert r.status_code == 400 and key in r.json()["errors"], (body, r.text)
        # a user without Sys.Modify on / may not make the cluster send requests anywhere
        px.access.users.post(userid="plain@pve", password="plain-user-pw")
        plain = requests.Session()
        plain.verify, plain.trust_env = False, False
        ticket = plain.post(f"{single_node.url}/access/ticket", data={"username": "plain@pve",
                                                                      "password": "plain-user-pw"}, timeout=10).json()
        plain.cookies.set("PVEAuthCookie", ticket["data"]["ticket"])
        plain.headers["CSRFPreventionToken"] = ticket["data"]["CSRFPreventionToken"]
        r = plain.post(f"{v1(single_node)}/webhooks", json={"name": "x", "url": receiver.url, "events": []},
                       timeout=10)
        assert r.status_code == 403 and "Sys.Modify" in r.json()["message"]
        assert s.delete(f"{v1(single_node)}/webhooks/{hook['id']}", timeout=10).status_code == 200
        assert s.get(f"{v1(single_node)}/webhooks/{hook['id']}", timeout=10).status_code == 404
    finally:
        receiver.close()

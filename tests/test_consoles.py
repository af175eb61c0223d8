"""Consoles: vncproxy/termproxy tickets, the vncwebsocket bridge and the console page in headless Chromium, against a
real node and a real QEMU guest (its VNC display and its serial port)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import ssl
import time

import pytest
import requests
import trio
from proxmoxer import ResourceException
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from api import auth
from api.console_ws import TermInput
from hypervisor.console import ConsoleSessions, ConsoleTimeout, serial_iface
from hypervisor.qemu_argv import HostFacts, RunPaths, Spice, build_argv
from tests.guest import build_guest, kernel_args, qemu_missing, serial_text, wait_serial
from tests.harness import Cluster, wait_for
from tests.test_guests import done, make_guest, ok

KEY = auth.new_ticket_key_pem()
slow = [pytest.mark.slow, pytest.mark.skipif(qemu_missing() is not None, reason=qemu_missing() or "")]
browser = pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")


# ---- pure parts -----------------------------------------------------------------------------------------------

def test_a_vnc_ticket_is_good_for_its_user_guest_and_port_for_40_seconds():
    now = 1_700_000_000
    ticket = auth.make_vnc_ticket(KEY, "alice@pve", "/vms/100", 5900, now)
    assert re.fullmatch(r"PVEVNC:[0-9A-F]{8}::[A-Za-z0-9+/=]+", ticket)
    assert ticket.split("::")[0] == f"PVEVNC:{now:08X}"  # neither user nor guest in plain text
    assert auth.verify_vnc_ticket(KEY, ticket, "alice@pve", "/vms/100", 5900, now + 39)
    assert auth.verify_vnc_ticket(KEY, "Ab3!x`_z:" + ticket, "alice@pve", "/vms/100", 5900, now)
    for user, path, port, at in (("bob@pve", "/vms/100", 5900, now), ("alice@pve", "/vms/101", 5900, now),
                                 ("alice@pve", "/vms/100", 5901, now), ("alice@pve", "/vms/100", 5900, now + 40),
                                 ("alice@pve", "/vms/100", 5900, now - 20)):
        assert not auth.verify_vnc_ticket(KEY, ticket, user, path, port, at), (user, path, port, at - now)
    other_key = auth.new_ticket_key_pem()
    assert not auth.verify_vnc_ticket(other_key, ticket, "alice@pve", "/vms/100", 5900, now)
    assert not auth.verify_vnc_ticket(KEY, ticket.replace("PVEVNC", "PVE"), "alice@pve", "/vms/100", 5900, now)
    password = auth.vnc_password()
    assert len(password) == 8 and all("!" <= c <= "`" for c in password)


def test_termproxy_messages_in_any_framing_give_the_input_bytes():
    messages = [b"0:5:hello", b"1:80:24:", b"2", b"0:3:a", b"bc0:", b"2:", b"\xc3\xa9", b"x", b"1:100:", b"30:",
                b"0:4:ab"]
    term = TermInput()
    out = b"".join(term.feed(m) for m in messages)
    assert out == b"helloabc\xc3\xa9"  # resizes, pings and the stray `x` carry no input
    assert term.buffer == b"0:4:ab"  # an input message still arriving
    assert TermInput().feed(b"0:4:ab") == b"" and TermInput().feed(b"garbage2") == b""


def test_serial_iface_follows_qm_terminal():
    assert serial_iface({"serial0": "socket", "serial1": "socket"}, None) == "serial0"
    assert serial_iface({"serial1": "socket", "serial0": "/dev/ttyS0"}, None) == "serial1"
    assert serial_iface({"serial1": "socket"}, "serial1") == "serial1"
    for conf, wanted, message in (({}, None, "unable to find a serial interface"),
                                  ({}, "serial2", "serial interface 'serial2' is not configured"),
                                  ({"serial0": "/dev/ttyS0"}, "serial0", "wrong serial type on interface 'serial0'")):
        with pytest.raises(Exception, match=re.escape(message)):
            serial_iface(conf, wanted)


def test_guests_get_a_vnc_display_on_a_unix_socket_and_qxl_guests_spice():
    paths = RunPaths("/run/100.qmp", "/run/100.pid", "/run")

    def argv(conf, spice=None):
        return build_argv(100, {"kvm": 0, **conf}, lambda v: (v, "raw"), HostFacts(), paths, spice=spice)

    def values(a, flag):
        return [b for f, b in zip(a, a[1:], strict=False) if f == flag]

    assert values(argv({}), "-vnc") == ["unix:/run/100.vnc,password=on"]
    for vga in ("serial0", "none"):
        assert values(argv({"vga": vga}), "-vnc") == []
    assert values(argv({}), "-spice") == []
    spiced = argv({"vga": "qxl"}, Spice(61000, "/ssl/c.pem", "/ssl/k.pem", "/ssl/ca.pem"))
    assert values(spiced, "-spice") == ["tls-port=61000,addr=127.0.0.1,tls-ciphers=HIGH,seamless-migration=on,"
                                        "x509-cert-file=/ssl/c.pem,x509-key-file=/ssl/k.pem,"
                                        "x509-cacert-file=/ssl/ca.pem"]
    assert "virtserialport,chardev=vdagent,name=com.redhat.spice.0" in values(spiced, "-device")


async def test_a_console_session_is_claimed_once_by_its_guest_and_user_within_the_timeout(autojump_clock):
    consoles = ConsoleSessions(connect_timeout=10)
    first, second = consoles.open(100, "alice@pve", "vnc", "pw"), consoles.open(100, "alice@pve", "serial")
    first.ticket_id, second.ticket_id = "t1", "t2"
    assert (first.port, second.port) == (5900, 5901)
    for vmid, user, ticket_id in ((101, "alice@pve", "t1"), (100, "bob@pve", "t1"), (100, "alice@pve", "t2")):
        assert consoles.claim(5900, vmid, user, ticket_id) is None
    assert consoles.claim(5900, 100, "alice@pve", "t1") is first
    assert consoles.claim(5900, 100, "alice@pve", "t1") is None  # a second use
    first.end()
    assert await consoles.supervise(5900) is None and 5900 not in consoles.sessions
    await trio.sleep(11)
    assert consoles.claim(5901, 100, "alice@pve", "t2") is None  # too late
    with pytest.raises(ConsoleTimeout):
        await consoles.supervise(5901)
    assert consoles.open(100, "alice@pve", "vnc").port == 5900


# ---- a real node and guest ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def node(tmp_path_factory):
    if qemu_missing():
        pytest.skip(qemu_missing())
    cluster = Cluster(str(tmp_path_factory.mktemp("consoles")), 1).start()
    yield cluster.nodes[0]
    cluster.stop()  # and the guests it leaves running


@pytest.fixture(scope="module")
def guest(node):
    """A running test guest with a shell on its serial port and on its screen (`console=tty0`)."""
    px = node.api()
    vmid = make_guest(px, build_guest(), cmdline="console=tty0")
    ok(px, px.nodes("n1").qemu(vmid).status.start.post())
    wait_serial(node, vmid, r"GPVE-GUEST-READY")
    wait_serial(node, vmid, r"built-in shell")
    return vmid


@pytest.fixture(scope="module")
def other_guest(node):
    px = node.api()
    return make_guest(px, build_guest())


def tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx


def ws_url(node, vmid: int, port: int, ticket: str) -> str:
    return (f"wss://127.0.0.1:{node.api_port}/api2/json/nodes/n1/qemu/{vmid}/vncwebsocket?port={port}"
            f"&vncticket={requests.utils.quote(ticket, safe='')}")


def open_ws(node, cookie: str, vmid: int, port: int, ticket: str):
    return connect(ws_url(node, vmid, port, ticket), ssl=tls(), open_timeout=10, subprotocols=["binary"],
                   additional_headers={"Cookie": f"PVEAuthCookie={requests.utils.quote(cookie, safe='')}"})


def refused(node, cookie: str, vmid: int, port: int, ticket: str) -> tuple[int, str]:
    with pytest.raises(InvalidStatus) as info:
        open_ws(node, cookie, vmid, port, ticket).close()
    body = json.loads(info.value.response.body or b"{}")
    return info.value.response.status_code, body.get("message", "")


def terminal_handshake(ws, user: str, ticket: str) -> bytes:
    ws.send(f"{user}:{ticket}\n".encode())
    return ws.recv(timeout=10)


def login(node, user: str, password: str) -> str:
    r = requests.post(node.url + "/access/ticket", data={"username": user, "password": password}, verify=False,
                      timeout=10)
    r.raise_for_status()
    return r.json()["data"]["ticket"]


def task_of(px, upid: str) -> dict:
    return px.nodes("n1").tasks(upid).status.get()


@pytest.mark.slow
def test_vncproxy_answers_a_password_prefixed_ticket_and_its_task_waits_10_seconds_for_a_client(node, guest):
    px = node.api()
    proxy = px.nodes("n1").qemu(guest).vncproxy.post(websocket=1)
    assert set(proxy) == {"user", "ticket", "port", "upid", "cert", "password"}
    assert proxy["user"] == "root@pam" and 5900 <= proxy["port"] <= 5999
    assert proxy["ticket"].startswith(proxy["password"] + ":PVEVNC:") and len(proxy["password"]) == 8
    with open(os.path.join(node.data_dir, "ssl", "pve-root-ca.pem")) as f:
        assert proxy["cert"] == f.read()
    assert ":vncproxy:" in proxy["upid"] and task_of(px, proxy["upid"])["status"] == "running"
    # a plain GET checks the ticket without using it up (Proxmox's vncwebsocket answer)
    assert px.nodes("n1").qemu(guest).vncwebsocket.get(port=proxy["port"], vncticket=proxy["ticket"]) == \
        {"port": str(proxy["port"])}
    status = done(px, proxy["upid"], timeout=30)  # nobody connected
    assert status["exitstatus"] == "connection timed out"
    assert refused(node, node.session().cookies["PVEAuthCookie"], guest, proxy["port"], proxy["ticket"])[0] == 401
    term = px.nodes("n1").qemu(guest).termproxy.post(serial="serial0")
    assert set(term) == {"user", "ticket", "port", "upid"} and term["ticket"].startswith("PVEVNC:")
    with pytest.raises(ResourceException) as info:
        px.nodes("n1").qemu(guest).vncwebsocket.get(port=term["port"], vncticket=term["ticket"] + "x")
    assert info.value.status_code == 401 and "invalid PVEVNC ticket" in str(info.value)
    if term["port"] == proxy["port"]:  # the port again: the earlier session's ticket (still fresh) is not this one's
        assert refused(node, node.session().cookies["PVEAuthCookie"], guest, term["port"], proxy["ticket"])[0] == 401
    assert done(px, term["upid"], timeout=30)["exitstatus"] == "connection timed out"


@pytest.mark.slow
def test_a_console_ticket_is_refused_for_another_guest_another_user_a_second_use_and_after_it_expired(
        node, guest, other_guest):
    px = node.api()
    root_cookie = node.session().cookies["PVEAuthCookie"]
    px.access.users.post(userid="bob@pve", password="bob-secret-1")
    px.access.acl.put(path=f"/vms/{guest}", users="bob@pve", roles="PVEVMUser")  # VM.Console there
    px.access.acl.put(path=f"/vms/{other_guest}", users="bob@pve", roles="PVEVMUser")
    bob_cookie = login(node, "bob@pve", "bob-secret-1")

    term = px.nodes("n1").qemu(guest).termproxy.post()
    port, ticket = term["port"], term["ticket"]
    assert refused(node, root_cookie, other_guest, port, ticket) == (401, "permission denied - invalid PVEVNC ticket")
    assert refused(node, bob_cookie, guest, port, ticket) == (401, "permission denied - invalid PVEVNC ticket")
    # expired: the same user, guest and port, signed with the cluster's key 60 s ago (a ticket lives 40 s)
    with open(os.path.join(node.data_dir, "priv", "authkey.key")) as f:
        old = auth.make_vnc_ticket(f.read(), "root@pam", f"/vms/{guest}", port, time.time() - 60)
    assert refused(node, root_cookie, guest, port, old) == (401, "permission denied - invalid PVEVNC ticket")
    with open_ws(node, root_cookie, guest, port, ticket) as ws:  # the genuine one still works: it was the age
        assert terminal_handshake(ws, "root@pam", ticket).startswith(b"OK")
        assert refused(node, root_cookie, guest, port, ticket) == (401, "permission denied - invalid PVEVNC ticket")
    assert done(px, term["upid"], timeout=30)["exitstatus"] == "OK"
    assert refused(node, root_cookie, guest, port, ticket)[0] == 401  # and after the session ended

    # bob's own ticket works for bob; without VM.Console he gets none
    bobs = requests.post(f"{node.url}/nodes/n1/qemu/{guest}/termproxy", verify=False, timeout=10,
                         cookies={"PVEAuthCookie": bob_cookie},
                         headers={"CSRFPreventionToken": _csrf(node, "bob@pve", "bob-secret-1")}).json()["data"]
    with open_ws(node, bob_cookie, guest, bobs["port"], bobs["ticket"]) as ws:
        assert terminal_handshake(ws, "bob@pve", bobs["ticket"]).startswith(b"OK")
    px.access.acl.put(path=f"/vms/{guest}", users="bob@pve", roles="PVEVMUser", delete=1)
    assert refused(node, bob_cookie, guest, port, ticket)[0] == 403

    # no ticket ever in a log line or a task log
    with open(node.log_path, errors="replace") as f:
        log_text = f.read()
    for secret in (ticket.split("::")[1], bobs["ticket"].split("::")[1]):
        assert secret not in log_text
        assert secret[:40] not in json.dumps(px.nodes("n1").tasks(term["upid"]).log.get())


def _csrf(node, user: str, password: str) -> str:
    r = requests.post(node.url + "/access/ticket", data={"username": user, "password": password}, verify=False,
                      timeout=10)
    return r.json()["data"]["CSRFPreventionToken"]


@pytest.mark.slow
def test_a_terminal_bridges_the_serial_port_and_the_serial_log_keeps_recording(node, guest):
    px = node.api()
    term = px.nodes("n1").qemu(guest).termproxy.post(serial="serial0")
    cookie = node.session().cookies["PVEAuthCookie"]
    with open_ws(node, cookie, guest, term["port"], term["ticket"]) as ws:
        assert terminal_handshake(ws, "root@pam", term["ticket"]).startswith(b"OK")
        assert task_of(px, term["upid"])["status"] == "running"
        command = "echo GPVE-WS-$((6*7))\r"
        ws.send(f"1:100:30:0:{len(command)}:{command}2".encode())  # a resize, the input and a ping in one message
        seen = b""
        deadline = time.monotonic() + 30
        while b"GPVE-WS-42" not in seen and time.monotonic() < deadline:
            seen += ws.recv(timeout=30)
    wait_serial(node, guest, r"GPVE-WS-42")  # the guest ran it, and the log file still records the port
    assert done(px, term["upid"], timeout=30)["exitstatus"] == "OK"
    ticks = len(re.findall(r"GPVE-TICK", serial_text(node, guest)))
    wait_for(lambda: len(re.findall(r"GPVE-TICK", serial_text(node, guest))) > ticks, timeout=10)


@pytest.mark.slow
def test_aborting_the_console_task_closes_its_connection(node, guest):
    px = node.api()
    term = px.nodes("n1").qemu(guest).termproxy.post()
    with open_ws(node, node.session().cookies["PVEAuthCookie"], guest, term["port"], term["ticket"]) as ws:
        assert terminal_handshake(ws, "root@pam", term["ticket"]).startswith(b"OK")
        px.nodes("n1").tasks(term["upid"]).delete()
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=15)
    assert done(px, term["upid"], timeout=30)["exitstatus"] == "received interrupt"


@pytest.mark.slow
def test_a_console_of_a_stopped_guest_fails_its_task_with_proxmoxs_message(node, other_guest):
    px = node.api()
    term = px.nodes("n1").qemu(other_guest).termproxy.post()
    cookie = node.session().cookies["PVEAuthCookie"]
    with open_ws(node, cookie, other_guest, term["port"], term["ticket"]) as ws:
        assert terminal_handshake(ws, "root@pam", term["ticket"]) == b"OK"
        assert ws.recv(timeout=10) == f"VM {other_guest} not running\r\n".encode()
    assert done(px, term["upid"], timeout=30)["exitstatus"] == f"VM {other_guest} not running"


@pytest.mark.slow
def test_spiceproxy_without_spice_answers_proxmoxs_error_and_a_qxl_guest_gets_a_remote_viewer_config(node, guest):
    px = node.api()
    with pytest.raises(ResourceException) as info:
        px.nodes("n1").qemu(guest).spiceproxy.post()
    assert info.value.status_code == 409 and "no spice port" in str(info.value)
    vmid = int(px.cluster.nextid.get())
    ok(px, px.nodes("n1").qemu.create(vmid=vmid, name="spicy", memory=64, kvm=0, vga="qxl"))
    ok(px, px.nodes("n1").qemu(vmid).status.start.post())
    try:
        config = px.nodes("n1").qemu(vmid).spiceproxy.post(proxy="127.0.0.1")
        assert config["type"] == "spice" and config["proxy"] == "http://127.0.0.1:3128"
        assert config["title"] == f"VM {vmid} - spicy" and len(config["password"]) == 40
        assert re.fullmatch(rf"pvespiceproxy:[0-9a-f]{{8}}:{vmid}:n1:{config['tls-port']}::[0-9a-f]{{40}}",
                            config["host"])
        assert 61000 <= config["tls-port"] <= 61999 and "CN=" in config["host-subject"]
        # QEMU's SPICE server speaks TLS there with the node's certificate
        ca = tls()
        with socket.create_connection(("127.0.0.1", config["tls-port"]), timeout=10) as raw, \
                ca.wrap_socket(raw) as conn:
            served = conn.getpeercert(binary_form=True)
        with open(os.path.join(node.data_dir, "ssl", "pve-ssl.pem"), "rb") as f:
            assert served == ssl.PEM_cert_to_DER_cert(f.read().decode())
    finally:
        ok(px, px.nodes("n1").qemu(vmid).status.stop.post())


@pytest.mark.slow
def test_the_console_page_is_rendered_for_the_cookies_user_and_serves_only_its_packages(node):
    base = f"https://127.0.0.1:{node.api_port}"
    get = lambda path, **kw: requests.get(base + path, verify=False, timeout=10, **kw)  # noqa: E731
    anonymous = get("/?console=kvm&novnc=1&vmid=100&node=n1")
    assert anonymous.status_code == 200 and anonymous.headers["Content-Type"].startswith("text/html")
    assert '"user": ""' in anonymous.text and '"csrf": ""' in anonymous.text
    cookie = node.session().cookies["PVEAuthCookie"]
    page = get("/?console=kvm&xtermjs=1&vmid=100&node=n1%3C/script%3E", cookies={"PVEAuthCookie": cookie}).text
    config = json.loads(re.search(r"const cfg = (\{.*?\});", page).group(1))
    assert config["user"] == "root@pam" and config["node"] == "n1</script>" and "n1</script>" not in page
    assert re.fullmatch(r"[0-9A-F]{8}:\S+", config["csrf"])
    assert get("/?console=lxc&vmid=100&node=n1").status_code == 501
    assert get("/?console=kvm&novnc=1&vmid=x&node=n1").status_code == 400
    script = get("/novnc/core/rfb.js")
    assert script.status_code == 200 and script.headers["Content-Type"].startswith("text/javascript")
    assert get("/xtermjs/css/xterm.css").status_code == 200
    assert get("/novnc/%2e%2e/%2e%2e/%2e%2e/pyproject.toml").status_code == 404
    assert get("/").status_code == 404


# ---- the console page in headless Chromium --------------------------------------------------------------------

def _page(pw, node, tmp_path):
    b = pw.chromium.launch(executable_path=shutil.which("chromium"), headless=True,
                           args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
    context = b.new_context(ignore_https_errors=True, viewport={"width": 1000, "height": 700})
    cookie = node.session().cookies["PVEAuthCookie"]
    context.add_cookies([{"name": "PVEAuthCookie", "value": requests.utils.quote(cookie, safe=""),
                          "url": f"https://127.0.0.1:{node.api_port}/"}])
    return b, context.new_page()


def screendump(node, px, vmid: int, name: str):
    """QEMU's screendump of the guest's display (through the monitor endpoint), as an RGB image."""
    from PIL import Image

    path = os.path.join(node.data_dir, f"{name}.ppm")
    px.nodes("n1").qemu(vmid).monitor.post(command=f"screendump {path}")
    wait_for(lambda: os.path.exists(path) and os.path.getsize(path) > 0, timeout=10)
    with Image.open(path) as img:
        return img.convert("RGB")


SHIFTED = {"$": "Digit4", "(": "Digit9", ")": "Digit0", "*": "Digit8", ">": "Period"}


def type_keys(page, text: str) -> None:
    """Type as a person on a US keyboard does, holding Shift for capitals, `$`, `(`, ... (noVNC sends QEMU the keys'
    scancodes, so a character typed without its Shift would reach the guest as the key's plain one)."""
    for char in text:
        if char in SHIFTED or char.isupper():
            page.keyboard.press(f"Shift+{SHIFTED.get(char) or 'Key' + char}")
        else:
            page.keyboard.type(char)


def differing(a, b) -> int:
    """Pixels whose colour differs by more than 64 in a channel."""
    from PIL import ImageChops

    assert a.size == b.size, (a.size, b.size)
    diff = ImageChops.difference(a, b).convert("L").point(lambda v: 255 if v > 64 else 0)
    return sum(1 for v in diff.getdata() if v)


@pytest.mark.slow
@browser
def test_the_vnc_console_page_shows_the_guest_screen_and_types_into_it(node, guest, tmp_path):
    """A person opens Proxmox's console URL: noVNC shows the guest's screen as QEMU has it (a screenshot of the page
    against QMP's screendump of the same moment), and what they type runs in the guest."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    px = node.api()
    url = f"https://127.0.0.1:{node.api_port}/?console=kvm&novnc=1&vmid={guest}&node=n1"
    html = requests.get(url, verify=False, timeout=10).text
    assert "cdn" not in html.lower() and "/novnc/core/rfb.js" in html
    with sync_playwright() as pw:
        b, page = _page(pw, node, tmp_path)
        try:
            page.goto(url)
            page.wait_for_function("document.body.dataset.state === 'connected'", timeout=30_000)
            running = [t for t in px.nodes("n1").tasks.get(vmid=guest, source="active") if t["type"] == "vncproxy"]
            assert running, "the console's vncproxy task runs while it is connected"
            time.sleep(1)
            before = screendump(node, px, guest, "before")
            page.click("#screen canvas")
            type_keys(page, "echo vnc-typed-$((6*7)) >/dev/ttyS0")
            page.keyboard.press("Enter")
            wait_serial(node, guest, r"vnc-typed-42", timeout=30)
            time.sleep(2)  # let the last screen update reach the page
            after = screendump(node, px, guest, "after")
            shot = Image.open(io.BytesIO(page.locator("#screen canvas").screenshot())).convert("RGB")
            shot.save(tmp_path / "novnc.png")
            after.save(tmp_path / "screendump.png")
        finally:
            b.close()
    assert shot.size == after.size == (720, 400)  # VGA text mode, shown 1:1
    lit = sum(1 for p in after.getdata() if max(p) > 128)
    assert lit > 2000, "the guest's screen shows text"
    changed = differing(before, after)
    assert changed > 300, "typing changed the screen"
    assert differing(shot, after) < 200, "the page shows what QEMU shows (a blinking cursor at most differs)"
    assert differing(shot, before) > changed // 2
    wait_for(lambda: not [t for t in px.nodes("n1").tasks.get(vmid=guest, source="active")
                          if t["type"] == "vncproxy"], timeout=30)


@pytest.mark.slow
@browser
def test_the_serial_console_page_types_into_the_guest_and_shows_its_answer(node, guest, tmp_path):
    from playwright.sync_api import sync_playwright

    url = f"https://127.0.0.1:{node.api_port}/?console=kvm&xtermjs=1&vmid={guest}&node=n1"
    with sync_playwright() as pw:
        b, page = _page(pw, node, tmp_path)
        try:
            page.goto(url)
            page.wait_for_function("document.body.dataset.state === 'connected'", timeout=30_000)
            page.click("#terminal")
            page.keyboard.type("echo GPVE-XTERM-$((6*7))")
            page.keyboard.press("Enter")
            wait_serial(node, guest, r"GPVE-XTERM-42", timeout=30)
            page.wait_for_function("""() => { const b = window.term.buffer.active; const lines = [];
                for (let i = 0; i < b.length; i++) lines.push(b.getLine(i).translateToString());
                return lines.some(l => l.startsWith('GPVE-XTERM-42')); }""", timeout=15_000)
        finally:
            page.screenshot(path=str(tmp_path / "xterm.png"))
            b.close()


@pytest.mark.slow
@browser
def test_the_console_page_logs_in_with_its_form_when_there_is_no_cookie(node, guest, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=shutil.which("chromium"), headless=True,
                               args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        page = b.new_context(ignore_https_errors=True).new_page()
        try:
            page.goto(f"https://127.0.0.1:{node.api_port}/?console=kvm&xtermjs=1&vmid={guest}&node=n1")
            page.wait_for_function("document.body.dataset.state === 'login'", timeout=15_000)
            page.fill("#password", node.password)
            page.click("#login button")
            page.wait_for_function("document.body.dataset.state === 'connected'", timeout=30_000)
        finally:
            b.close()


@pytest.mark.slow
def test_a_console_of_a_guest_on_another_node_is_relayed_there(tmp_path):
    """The console page's node need not be the guest's: vncproxy/termproxy go to the guest's node, and so does the
    WebSocket (its refusals too)."""
    if qemu_missing():
        pytest.skip(qemu_missing())
    cluster = Cluster(str(tmp_path), 2).start()
    n1, n2 = cluster.nodes
    px = n1.api()
    vmid = int(px.cluster.nextid.get())
    try:
        ok(px, px.nodes("n2").qemu.create(vmid=vmid, name="far", memory=256, kvm=0, serial0="socket",
                                          args=kernel_args(build_guest())))
        ok(px, px.nodes("n2").qemu(vmid).status.start.post())
        wait_serial(n2, vmid, r"built-in shell")
        term = px.nodes("n2").qemu(vmid).termproxy.post()
        cookie = n1.session().cookies["PVEAuthCookie"]

        def url(ticket: str) -> str:
            return ws_url(n1, vmid, term["port"], ticket).replace("/nodes/n1/", "/nodes/n2/")

        with pytest.raises(InvalidStatus) as info:
            connect(url(term["ticket"] + "x"), ssl=tls(), open_timeout=10,
                    additional_headers={"Cookie": f"PVEAuthCookie={requests.utils.quote(cookie, safe='')}"})
        assert info.value.response.status_code == 401
        assert json.loads(info.value.response.body)["message"] == "permission denied - invalid PVEVNC ticket"
        with connect(url(term["ticket"]), ssl=tls(), open_timeout=10, subprotocols=["binary"],
                     additional_headers={"Cookie": f"PVEAuthCookie={requests.utils.quote(cookie, safe='')}"}) as ws:
            assert terminal_handshake(ws, "root@pam", term["ticket"]).startswith(b"OK")
            command = "echo GPVE-FAR-$((6*7))\r"
            ws.send(f"0:{len(command)}:{command}")
            wait_serial(n2, vmid, r"GPVE-FAR-42", timeout=30)
        assert done(px, term["upid"], timeout=30)["exitstatus"] == "OK"
    finally:
        px.nodes("n2").qemu(vmid).status.stop.post()
        time.sleep(1)
        cluster.stop()

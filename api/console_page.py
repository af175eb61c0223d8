"""The console page at Proxmox's URL: `/?console=kvm&novnc=1&vmid=N&node=NODE` (noVNC, the guest's screen) and
`/?console=kvm&xtermjs=1&vmid=N&node=NODE[&serial=serialN]` (xterm.js, its serial console), as pveproxy serves them.

The page is served by the node from the npm packages `@novnc/novnc`, `@xterm/xterm` and `@xterm/addon-fit`,
installed at set-up (scripts/setup.sh) into `.console/node_modules` of the checkout (or `$GPVE_CONSOLE_DIR`), under
`/novnc/`, `/xtermjs/` and `/xtermjs-fit/` (no CDN). As pveproxy's index, the page is rendered for the user of the
`PVEAuthCookie` cookie with that user's CSRF token, and asks `vncproxy` (or `termproxy`) for a ticket, then connects
`vncwebsocket` (the cookie goes with it). Without a valid cookie it shows a login form (`POST /access/ticket`), which
sets the cookie as Proxmox's GUI does. `resize=scale` scales the screen to the window. The page's state is in
`document.body.dataset.state`: `login`, `connecting`, `connected`, `disconnected` (with the reason in `#status`).
Other `console` types (lxc, shell, upgrade, cmd) are features gpve does not have: 501.
"""

from __future__ import annotations

import html
import json
import os
import time

from quart import Response, request, send_from_directory

from api import auth
from api.gate import Credentials
from engine.errors import Rejection

PACKAGES = {"novnc": "@novnc/novnc", "xtermjs": "@xterm/xterm", "xtermjs-fit": "@xterm/addon-fit"}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def assets_dir() -> str:
    """Where the console's npm packages are installed (`node_modules` inside it)."""
    return os.environ.get("GPVE_CONSOLE_DIR") or os.path.join(REPO, ".console")


def package_dir(prefix: str) -> str | None:
    """The installed package served under `/{prefix}/`, or None (unknown prefix, or not installed)."""
    if prefix not in PACKAGES:
        return None
    path = os.path.join(assets_dir(), "node_modules", PACKAGES[prefix])
    return path if os.path.isfile(os.path.join(path, "package.json")) else None


async def asset(prefix: str, name: str) -> Response:
    """A file of an installed console package (send_from_directory refuses paths that leave it)."""
    root = package_dir(prefix)
    if root is None:
        raise Rejection(404, f"console package for '/{prefix}/' is not installed - run scripts/setup.sh")
    response = await send_from_directory(root, name)
    if name.endswith((".js", ".mjs")):
        response.headers["Content-Type"] = "text/javascript; charset=utf-8"
    return response


def page(api) -> Response:
    """The console page for `request.args`; 400 for a missing `vmid`/`node`, 501 for console types gpve lacks, 503
    when the packages are not installed."""
    args = request.args
    kind = args.get("console", "")
    if kind != "kvm":
        raise Rejection(501, f"console type '{kind}' not implemented - gpve has no containers or node shell")
    xterm = bool(args.get("xtermjs"))
    vmid, node = args.get("vmid", ""), args.get("node", "")
    if not vmid.isdigit() or not node:
        raise Rejection(400, "console: 'vmid' and 'node' are required")
    needed = ("xtermjs", "xtermjs-fit") if xterm else ("novnc",)
    if any(package_dir(p) is None for p in needed):
        raise Rejection(503, "console packages are not installed on this node - run scripts/setup.sh")
    user, csrf = _login_of_cookie(api)
    config = {"vmid": int(vmid), "node": node, "user": user, "csrf": csrf, "serial": args.get("serial") or None,
              "scale": args.get("resize") == "scale"}
    body = (XTERM_BODY if xterm else NOVNC_BODY).replace("__CONFIG__", json.dumps(config).replace("<", "\\u003c"))
    title = html.escape(f"VM {vmid} ({node}) - {'Serial console' if xterm else 'Console'}")
    return Response(PAGE.replace("__TITLE__", title).replace("__BODY__", body),
                    content_type="text/html; charset=utf-8", headers={"Cache-Control": "no-store"})


def _login_of_cookie(api) -> tuple[str, str]:
    """The cookie's user and a CSRF token for them (pveproxy's index does the same); empty when not logged in."""
    cookie = request.cookies.get("PVEAuthCookie")
    if not cookie:
        return "", ""
    now = time.time()
    try:
        user = api.gate.authenticate(Credentials(cookie), False, now)
        _, secret = api.node.auth_secrets()
    except Rejection:
        return "", ""
    return user, auth.make_csrf_token(secret, user, now)


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
html, body { margin: 0; height: 100%; background: #000; color: #ddd; font: 14px sans-serif; }
#status { position: fixed; top: 0; right: 0; padding: 2px 8px; background: rgba(40, 40, 40, .85); z-index: 10; }
#screen, #terminal { position: absolute; top: 0; left: 0; right: 0; bottom: 0; }
#login { display: none; position: relative; z-index: 20; max-width: 320px; margin: 80px auto; padding: 16px;
         background: #222; }
#login input, #login button { display: block; width: 100%; margin: 6px 0; box-sizing: border-box; }
body[data-state=login] #login { display: block; }
</style></head>
<body data-state="connecting"><div id="status">connecting</div>
<form id="login"><b>gpve console - log in</b>
<input id="username" autocomplete="username" placeholder="user@realm" value="root@pam">
<input id="password" type="password" autocomplete="current-password" placeholder="password">
<button type="submit">Log in</button></form>
__BODY__
</body></html>
"""

COMMON_JS = """
const cfg = __CONFIG__;
const base = `/api2/json/nodes/${encodeURIComponent(cfg.node)}/qemu/${cfg.vmid}`;
const status = document.getElementById('status');
function setState(state, text) { document.body.dataset.state = state; status.textContent = text || state; }
document.getElementById('login').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = new URLSearchParams({username: document.getElementById('username').value,
                                      password: document.getElementById('password').value});
    const res = await fetch('/api2/json/access/ticket', {method: 'POST', body});
    if (!res.ok) { status.textContent = 'login failed: ' + res.statusText; return; }
    const data = (await res.json()).data;
    document.cookie = `PVEAuthCookie=${encodeURIComponent(data.ticket)}; path=/; secure; samesite=strict`;
    location.reload();
});
async function proxy(what, params) {
    const res = await fetch(`${base}/${what}`, {method: 'POST', body: new URLSearchParams(params),
                                               headers: {CSRFPreventionToken: cfg.csrf}});
    if (!res.ok) { throw new Error(`${what}: ${res.status} ${res.statusText}`); }
    const data = (await res.json()).data;
    const url = `wss://${location.host}${base}/vncwebsocket?port=${data.port}` +
                `&vncticket=${encodeURIComponent(data.ticket)}`;
    return [data, url];
}
"""

NOVNC_BODY = """<div id="screen"></div>
<script type="module">
import RFB from '/novnc/core/rfb.js';
""" + COMMON_JS + """
async function start() {
    if (!cfg.user) { setState('login', 'not logged in'); return; }
    try {
        const [data, url] = await proxy('vncproxy', {websocket: 1});
        const rfb = new RFB(document.getElementById('screen'), url,
                            {credentials: {password: data.password}, wsProtocols: ['binary']});
        rfb.scaleViewport = cfg.scale;
        rfb.focusOnClick = true;
        rfb.addEventListener('connect', () => { setState('connected'); rfb.focus(); });
        rfb.addEventListener('disconnect', (e) => setState('disconnected',
            e.detail.clean ? 'disconnected' : 'connection failed'));
        rfb.addEventListener('securityfailure', (e) => setState('disconnected', 'refused: ' + e.detail.reason));
        window.rfb = rfb;
    } catch (e) { setState('disconnected', String(e.message || e)); }
}
start();
</script>"""

XTERM_BODY = """<link rel="stylesheet" href="/xtermjs/css/xterm.css"><div id="terminal"></div>
<script type="module">
import { Terminal } from '/xtermjs/lib/xterm.mjs';
import { FitAddon } from '/xtermjs-fit/lib/addon-fit.mjs';
""" + COMMON_JS + """
const term = new Terminal({convertEol: false, cursorBlink: true});
const fit = new FitAddon();
term.loadAddon(fit);
term.open(document.getElementById('terminal'));
fit.fit();
window.term = term;
async function start() {
    if (!cfg.user) { setState('login', 'not logged in'); return; }
    try {
        const [data, url] = await proxy('termproxy', cfg.serial ? {serial: cfg.serial} : {});
        const socket = new WebSocket(url, 'binary');
        socket.binaryType = 'arraybuffer';
        let connected = false;
        const utf8 = new TextEncoder();
        socket.onopen = () => socket.send(`${data.user}:${data.ticket}\\n`);
        socket.onmessage = (ev) => {
            const bytes = new Uint8Array(ev.data);
            if (connected) { term.write(bytes); return; }
            if (bytes[0] === 79 && bytes[1] === 75) {  // "OK"
                connected = true;
                setState('connected');
                term.write(bytes.slice(2));
                term.focus();
            } else { socket.close(); }
        };
        socket.onclose = () => setState('disconnected', connected ? 'disconnected' : 'connection refused');
        term.onData((text) => {
            if (connected) { socket.send(`0:${utf8.encode(text).length}:${text}`); }
        });
        term.onResize((size) => { if (connected) { socket.send(`1:${size.cols}:${size.rows}:`); } });
        setInterval(() => { if (connected) { socket.send('2'); } }, 30000);
        window.addEventListener('resize', () => fit.fit());
    } catch (e) { setState('disconnected', String(e.message || e)); }
}
start();
</script>"""

"""The API explorer page (`/api-explorer/`): Swagger UI from the installed swagger-ui-bundle package (never a CDN)
reading our openapi.json, with a login form in front of it.

A page script cannot set the `PVEAuthCookie` cookie the document declares, so the form logs in with
`POST /api2/json/access/ticket` and every "try it out" call then carries the ticket as
`Authorization: PVEAuthCookie=<ticket>` and the `CSRFPreventionToken` header (both accepted as Proxmox's
pveproxy accepts them; an `Authorization` set through Swagger UI's own Authorize dialog, an API token, is kept).
Swagger UI sends every optional field of a form, empty ones too (`skiplock=&timeout=`), which validation rightly
refuses; the request interceptor drops empty values from the query string and from form and JSON bodies.
"""

from __future__ import annotations

EXPLORER_SCRIPT = r"""
let current = null;  // {username, ticket, csrf} once logged in (kept for this tab in sessionStorage)
const shown = (text) => { document.getElementById("gpve-login-state").textContent = text; };
function remember(value) {
  if (value) { sessionStorage.setItem("gpve-auth", JSON.stringify(value)); }
  else { sessionStorage.removeItem("gpve-auth"); }
  current = value;
  shown(value ? "Logged in as " + value.username : "Not logged in");
  document.getElementById("gpve-logout").hidden = !value;
}

async function login(event) {
  event.preventDefault();
  const form = new URLSearchParams({username: document.getElementById("gpve-username").value,
                                    password: document.getElementById("gpve-password").value});
  shown("Logging in...");
  const resp = await fetch("/api2/json/access/ticket", {method: "POST", body: form});
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok || !body.data) { remember(null); shown("Login failed: " + (body.message || resp.statusText)); return; }
  document.getElementById("gpve-password").value = "";
  remember({username: body.data.username, ticket: body.data.ticket, csrf: body.data.CSRFPreventionToken});
}

function withoutEmpty(params) {
  for (const key of [...params.keys()]) {
    if (params.getAll(key).every((v) => v === "")) { params.delete(key); }
  }
  return params;
}

function requestInterceptor(req) {
  const url = new URL(req.url, window.location.href);
  if (url.search) { url.search = withoutEmpty(url.searchParams).toString(); req.url = url.toString(); }
  const type = Object.entries(req.headers || {}).find(([k]) => k.toLowerCase() === "content-type");
  if (typeof req.body === "string" && type && type[1].startsWith("application/x-www-form-urlencoded")) {
    req.body = withoutEmpty(new URLSearchParams(req.body)).toString();
  } else if (typeof req.body === "string" && type && type[1].startsWith("application/json")) {
    try {
      const body = JSON.parse(req.body);
      if (body && typeof body === "object" && !Array.isArray(body)) {
        req.body = JSON.stringify(Object.fromEntries(Object.entries(body).filter(([, v]) => v !== "")));
      }
    } catch (e) { /* not JSON after all: sent as it is, and refused with the server's own message */ }
  }
  const given = Object.keys(req.headers).find((k) => k.toLowerCase() === "authorization");
  if (current && !(given && req.headers[given].startsWith("PVEAPIToken"))) {
    req.headers["Authorization"] = "PVEAuthCookie=" + current.ticket;
    req.headers["CSRFPreventionToken"] = current.csrf;
  }
  return req;
}

document.getElementById("gpve-login").addEventListener("submit", login);
document.getElementById("gpve-logout").addEventListener("click", () => remember(null));
remember(JSON.parse(sessionStorage.getItem("gpve-auth") || "null"));
window.ui = SwaggerUIBundle({url: "/api2/json/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
                             requestInterceptor});
"""

EXPLORER_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>gpve API explorer</title>
<link rel="stylesheet" href="/api-explorer/swagger-ui.css">
<style>#gpve-login{font-family:sans-serif;margin:1em 2em;display:flex;gap:.5em;align-items:center}</style></head>
<body>
<form id="gpve-login">
  <label>User <input id="gpve-username" name="username" value="root@pam" autocomplete="username"></label>
  <label>Password <input id="gpve-password" name="password" type="password" autocomplete="current-password"></label>
  <button type="submit">Log in</button>
  <button type="button" id="gpve-logout" hidden>Log out</button>
  <span id="gpve-login-state">Not logged in</span>
</form>
<div id="swagger-ui"></div>
<script src="/api-explorer/swagger-ui-bundle.js"></script>
<script>""" + EXPLORER_SCRIPT + """</script>
</body></html>
"""

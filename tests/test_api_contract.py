"""The API contract from outside: a valid OpenAPI document, schemathesis, the explorer page in a real
browser, and the npm `proxmox-api` client."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import jsonschema
import pytest
import requests
from openapi_spec_validator import validate

from tests.harness import REPO

pytestmark = pytest.mark.slow
NPM_DIR = os.path.expanduser(os.environ.get("GPVE_NPM_DIR", "~/.cache/gpve/npm"))


def test_openapi_document_is_valid_and_covers_every_declaration(single_node):
    doc = requests.get(single_node.url + "/openapi.json", verify=False).json()
    validate(doc)
    assert doc["openapi"].startswith("3.")
    create = doc["paths"]["/api2/json/nodes/{node}/qemu"]["post"]
    body = create["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    assert body["required"] == ["vmid"] and body["properties"]["vmid"]["minimum"] == 100
    assert "net31" in body["properties"] and body["properties"]["ostype"]["enum"][0] == "other"
    perm = create["x-permission"]  # VM.Allocate on the guest or its pool; the per-key rules in words
    assert (perm["privilege"], perm["path"], perm["or"]) == ("VM.Allocate", "/vms/{vmid}",
                                                             {"privilege": "VM.Allocate", "path": "/pool/{pool}"})
    assert "Datastore.AllocateSpace" in perm["description"] and "args" in perm["description"]
    assert "/v1/cluster/raft" in doc["paths"]
    assert doc["paths"]["/api2/json/access/ticket"]["post"]["security"] == []
    # the document answers what its own declaration says: the document itself, not wrapped in `data`
    declared = doc["paths"]["/api2/json/openapi.json"]["get"]["responses"]["200"]["content"]["application/json"]
    jsonschema.validate(doc, declared["schema"])
    assert "data" not in declared["schema"]["properties"] and "data" not in doc


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed on this machine")
def test_the_npm_proxmox_api_client_works_unchanged(single_node):
    assert os.path.isdir(os.path.join(NPM_DIR, "node_modules", "proxmox-api")), "make test installs proxmox-api"
    root = single_node.api()
    vmid = int(root.cluster.nextid.get())
    root.nodes("n1").qemu.create(vmid=vmid, name="from-npm", memory=64, kvm=0)
    token = root.access.users("root@pam").token("npm").post(privsep=0)["value"]
    script = os.path.join(NPM_DIR, "proxmox_api_client.mjs")
    shutil.copy(os.path.join(REPO, "tests", "js", "proxmox_api_client.mjs"), script)
    result = subprocess.run(["node", script, str(single_node.api_port), single_node.password, "root@pam!npm", token,
                             str(vmid)], capture_output=True, text=True, timeout=120, cwd=NPM_DIR)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["nodes"] == ["n1"] and vmid in out["guests"] and vmid in out["tokenGuests"]
    assert out["startUpid"].startswith("UPID:n1:") and f":qmstart:{vmid}:root@pam:" in out["startUpid"]
    assert out["tokenConfigName"] == "from-npm"


def test_schemathesis_finds_no_server_error_and_no_schema_violation(single_node):
    root = single_node.api()
    token = root.access.users("root@pam").token("schemathesis").post(privsep=0)["value"]
    base = f"https://127.0.0.1:{single_node.api_port}"
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "schemathesis"), "run", base + "/api2/json/openapi.json",
         "--url", base, "--tls-verify", "false", "-H", f"Authorization: PVEAPIToken=root@pam!schemathesis={token}",
         "--phases", "examples,fuzzing", "-n", "15", "--seed", "7", "-w", "2",
         # a loaded machine answers some requests slowly: time out late, and retry a dropped connection once
         "--request-timeout", "30", "--request-retries", "1",
         "--checks", "not_a_server_error,response_schema_conformance,status_code_conformance,"
                     "content_type_conformance",
         # failed logins are delayed 3 s each, as in Proxmox, and the event long poll waits up to 60 s for an
         # event that fuzzing never makes: both are tested on their own (test_auth.py, test_events.py)
         "--exclude-path", "/api2/json/access/ticket", "--exclude-path", "/v1/events",
         # features gpve does not have answer 501 by design (tests/test_absent_features.py); applying a network
         # configuration configures this host's network (tested in a namespace of its own: tests/test_network.py);
         # a storage definition makes its directory wherever its path points, as root (tests/test_storage.py)
         "--exclude-operation-id-regex", "^(get|post|put|delete)_unsupported_|^put_reload_network$|"
                                         "^(post_create_storage|put_update_storage_config|delete_delete_storage_config)$"],
        capture_output=True, text=True, timeout=600)
    errors = result.stdout.find("ERRORS")  # a runtime error's own section (the tail holds only the summary)
    assert result.returncode == 0, (result.stdout[errors:errors + 3000] if errors >= 0 else "") + \
        result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed on this machine")
def test_the_explorer_page_lists_the_endpoints_in_headless_chromium(single_node, tmp_path):
    url = f"https://127.0.0.1:{single_node.api_port}/api-explorer/"
    html = requests.get(url, verify=False).text
    assert "cdn" not in html.lower() and "/api-explorer/swagger-ui-bundle.js" in html
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--ignore-certificate-errors", f"--user-data-dir={tmp_path}", "--virtual-time-budget=15000",
         "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert "gpve API" in dom
    for path in ("/api2/json/nodes/{node}/qemu", "/api2/json/access/ticket", "/api2/json/cluster/nextid"):
        assert path in dom, dom[-2000:]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed on this machine")
def test_the_explorer_logs_in_and_creates_a_guest_with_try_it_out(single_node, tmp_path):
    """A person on /api-explorer/: logs in with the form, opens `POST /nodes/{node}/qemu`, fills in the node,
    `vmid`, `name` and `memory` (every other field left empty), executes, and the guest exists."""
    from playwright.sync_api import expect, sync_playwright

    vmid = int(single_node.api().cluster.nextid.get())
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        page = browser.new_context(ignore_https_errors=True).new_page()
        try:
            page.goto(f"https://127.0.0.1:{single_node.api_port}/api-explorer/")
            page.fill("#gpve-password", single_node.password)
            page.click("#gpve-login button[type=submit]")
            expect(page.locator("#gpve-login-state")).to_have_text("Logged in as root@pam")
            op = page.locator("#operations-nodes-post_create_vm")
            op.locator(".opblock-summary").click()
            op.get_by_role("button", name="Try it out").click()
            op.locator("tr[data-param-name=node] input").fill("n1")
            for name, value in (("vmid", vmid), ("name", "from-explorer"), ("memory", "64")):
                op.locator(f"tr[data-property-name={name}] input[type=text]").fill(str(value))
            op.get_by_role("button", name="Execute").click()
            status = op.locator(".live-responses-table tr.response .response-col_status")
            expect(status).to_have_text("200", timeout=30_000)
        finally:
            page.screenshot(path=str(tmp_path / "explorer.png"))  # what the person saw, kept with the test's files
            browser.close()
    guests = {g["vmid"]: g for g in single_node.api().nodes("n1").qemu.get()}
    assert guests[vmid]["name"] == "from-explorer" and guests[vmid]["maxmem"] == 64 * 1024 * 1024

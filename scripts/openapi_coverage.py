#!/usr/bin/env python3
"""How much of Proxmox VE's API our OpenAPI document declares: the (method, path) pairs under /api2/json that
match a method and path of Proxmox's API schema (path parameters compared by position, not by name).

    python scripts/openapi_coverage.py PVE_APIDATA_JSON [--url https://HOST:8006/api2/json/openapi.json] [--list]

PVE_APIDATA_JSON is the Proxmox API schema as plain JSON (a tree of `{path, info: {METHOD: …}, children}`, as
pve-docs' api-viewer data). Without --url the document is built from this checkout's declarations (no server
needed). Operations marked `x-gpve-absent` (a feature gpve does not have: its reads answer as an unconfigured
Proxmox node, its writes 501) are counted apart, so the figure says what is served and what only declared.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

METHODS = ("get", "post", "put", "delete")


def proxmox_operations(apidata: list) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    stack = list(apidata)
    while stack:
        node = stack.pop()
        for method in node.get("info") or {}:
            out.add((method.upper(), _shape(node["path"])))
        stack += node.get("children") or []
    return out


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path.rstrip("/") or "/")


def our_operations(doc: dict) -> dict[tuple[str, str], dict]:
    out = {}
    for path, item in doc["paths"].items():
        if not path.startswith("/api2/json/"):
            continue
        for method in METHODS:
            if method in item:
                out[(method.upper(), _shape(path.removeprefix("/api2/json")))] = item[method]
    return out


def load_document(url: str | None) -> dict:
    if url:
        import requests
        return requests.get(url, verify=False, timeout=30).json()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from api.compat.access import GPVE_VERSION
    from api.openapi import openapi_document
    from api.registry import load_endpoints
    return openapi_document(load_endpoints(), GPVE_VERSION)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("apidata")
    parser.add_argument("--url")
    parser.add_argument("--list", action="store_true", help="print our operations Proxmox does not have")
    args = parser.parse_args()
    with open(args.apidata) as f:
        theirs = proxmox_operations(json.load(f))
    ours = our_operations(load_document(args.url))
    matched = {key: op for key, op in ours.items() if key in theirs}
    refused = [key for key, op in matched.items() if "501" in op["responses"]]
    unconfigured = [key for key, op in matched.items() if op.get("x-gpve-absent") and key not in refused]
    print(f"Proxmox operations: {len(theirs)}; ours under /api2/json: {len(ours)}; matching Proxmox: {len(matched)}: "
          f"{len(matched) - len(refused) - len(unconfigured)} served by gpve's features, {len(unconfigured)} reads "
          f"of features gpve does not have (answered as unconfigured), {len(refused)} answered 501")
    if args.list:
        for method, path in sorted(set(ours) - theirs, key=lambda k: (k[1], k[0])):
            print(f"  not in Proxmox: {method} {path}")


if __name__ == "__main__":
    main()

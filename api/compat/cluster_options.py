"""/cluster/options: the datacenter options (Proxmox's `datacenter.cfg`, `PVE::DataCenterConfig`), in the log.

Every key is declared once here (`OPTIONS`): a plain value as a `Param`, a property string as its sub-keys'
`Param`s. PUT checks each value against it (an unknown key 400 `property is not defined in schema…`, a bad
sub-key `invalid format - …` as Proxmox words it) and stores the canonical string; GET answers property strings
parsed into objects, as Proxmox's reader does, with `mac_prefix` and `description` always present.
"""

from __future__ import annotations

import ipaddress
import math

from api.context import Ctx
from api.registry import API
from api.schema import Param, ParamErrors, Permission, split_list
from engine.datacenter import SetDatacenterOptions
from hypervisor import propstr

PROXMOX_OUI = "BC:24:11"
TAG = r"[a-z0-9_][a-z0-9_\-+.]*"
KEYBOARDS = ("de", "de-ch", "da", "en-gb", "en-us", "es", "fi", "fr", "fr-be", "fr-ca", "fr-ch", "hu", "is", "it",
             "ja", "lt", "mk", "nl", "no", "pl", "pt", "pt-br", "sv", "sl", "tr")
LANGUAGES = ("ar", "ca", "da", "de", "en", "es", "eu", "fa", "fr", "hr", "he", "it", "ja", "ka", "kr", "nb", "nl", "nn",
             "pl", "pt_BR", "ru", "sl", "sv", "tr", "ukr", "zh_CN", "zh_TW")
NETWORK = {"type": Param("type", enum=("secure", "insecure"), default="secure"), "network": Param("network")}

# Property strings: key -> its sub-keys (the default key, given bare, first where it has one).
FORMATS: dict[str, dict[str, Param]] = {
    "migration": NETWORK, "replication": NETWORK,
    "bwlimit": {k: Param(k, "number", minimum=0) for k in ("clone", "default", "migration", "move", "restore")},
    "crs": {"ha": Param("ha", enum=("basic", "static", "dynamic"), default="basic"),
            "ha-rebalance-on-start": Param("ha-rebalance-on-start", "boolean", default=0),
            "ha-auto-rebalance": Param("ha-auto-rebalance", "boolean", default=0),
            "ha-auto-rebalance-threshold": Param("ha-auto-rebalance-threshold", "number", minimum=0),
            "ha-auto-rebalance-method": Param("ha-auto-rebalance-method", enum=("bruteforce", "topsis")),
            "ha-auto-rebalance-hold-duration": Param("ha-auto-rebalance-hold-duration", "number", minimum=0),
            "ha-auto-rebalance-margin": Param("ha-auto-rebalance-margin", "number", minimum=0)},
    "ha": {"shutdown_policy": Param("shutdown_policy", enum=("freeze", "failover", "conditional", "migrate"))},
    "next-id": {"lower": Param("lower", "integer"), "upper": Param("upper", "integer")},
    "notify": {"fencing": Param("fencing", enum=("always", "never")),
               "package-updates": Param("package-updates", enum=("auto", "always", "never")),
               "replication": Param("replication", enum=("always", "never")),
               **{k: Param(k) for k in ("target-fencing", "target-package-updates", "target-replication")}},
    "tag-style": {"case-sensitive": Param("case-sensitive", "boolean"),
                  "color-map": Param("color-map", pattern=rf"(?i:{TAG}:[0-9a-fA-F]{{6}}(?::[0-9a-fA-F]{{6}})?"
                                                           rf"(?:;{TAG}:[0-9a-fA-F]{{6}}(?::[0-9a-fA-F]{{6}})?)*)"),
                  "ordering": Param("ordering", enum=("config", "alphabetical")),
                  "shape": Param("shape", enum=("full", "circle", "dense", "none"))},
    "u2f": {"appid": Param("appid"), "origin": Param("origin")},
    "user-tag-access": {"user-allow": Param("user-allow", enum=("none", "list", "existing", "free")),
                        "user-allow-list": Param("user-allow-list", pattern=rf"(?i:{TAG}(?:;{TAG})*)")},
    "webauthn": {"allow-subdomains": Param("allow-subdomains", "boolean"), "id": Param("id"),
                 "origin": Param("origin"), "rp": Param("rp")},
}
DEFAULT_KEYS = {"migration": "type", "replication": "type"}
LISTS = {("user-tag-access", "user-allow-list")}  # sub-keys holding `;` lists, answered as arrays

OPTIONS: list[Param] = [
    Param("keyboard", enum=KEYBOARDS, description="Default keyboard layout for VNC consoles."),
    Param("language", enum=LANGUAGES, description="Default GUI language."),
    Param("console", enum=("applet", "vv", "html5", "xtermjs"), description="Default console viewer."),
    Param("mac_prefix", pattern=r"[a-fA-F0-9][02468aceACE](?::[a-fA-F0-9]{2}){0,2}(?::[a-fA-F0-9]?)?",
          description=f"Prefix of generated MAC addresses (default {PROXMOX_OUI})."),
    Param("description", max_length=65536, description="Datacenter description (a comment in datacenter.cfg)."),
    Param("consent-text", max_length=65536, description="Consent text shown before login."),
    Param("email_from", description="Sender address of notification mails."),
    Param("http_proxy", pattern=r"http://.*", description="Proxy for downloads (http://...)."),
    Param("fencing", enum=("watchdog", "hardware", "both"), description="HA fencing mode."),
    Param("max_workers", "integer", minimum=1, description="Parallel workers of bulk actions."),
    Param("migration_unsecure", "boolean", description="Deprecated: use 'migration' type=insecure."),
    Param("registered-tags", pattern=rf"(?i:(?:{TAG};)*{TAG})", description="Tags only privileged users may set."),
    *[Param(key, description=f"Property string: {', '.join(fmt)}.") for key, fmt in FORMATS.items()],
]
PARAMS = {p.name: p for p in OPTIONS}
LIMITED = ("console", "tag-style")  # what GET answers without Sys.Audit on /


def _typed(param: Param, value: str):
    """A sub-key's value as its type (booleans 0/1), or ValueError with Proxmox's message."""
    typed = param.coerce(value)
    if param.type == "number" and not math.isfinite(typed):
        raise ValueError(f"type check ('number') failed - got '{value}'")
    return int(typed) if param.type == "number" and float(typed).is_integer() else typed


def _parse(key: str, text: str) -> dict:
    """A stored property string as an object (sub-keys typed), as Proxmox's `parse_property_string`."""
    fmt = FORMATS[key]
    out: dict = {}
    for sub, value in propstr.parse(text, DEFAULT_KEYS.get(key)).items():
        try:
            out[sub] = _typed(fmt[sub], value)
        except (KeyError, ValueError):
            out[sub] = value
        if (key, sub) in LISTS:
            out[sub] = str(value).split(";")
    return out


def canonical(key: str, value) -> str:
    """The value `datacenter.cfg` keeps for `key`; raises ValueError with Proxmox's message."""
    if key not in FORMATS:
        return str(value)
    fmt, default_key = FORMATS[key], DEFAULT_KEYS.get(key)
    parts: dict[str, str] = {}
    for part in (p for p in str(value).split(",") if p.strip()):
        sub, sep, val = part.partition("=")
        if not sep:
            if default_key is None:
                raise ValueError("invalid format - value without key, but schema does not define a default key")
            sub, val = default_key, part
        if sub not in fmt:
            raise ValueError(f"invalid format - invalid key in comma-separated list property: {sub}")
        if sub in parts:
            raise ValueError(f"invalid format - duplicate key in comma-separated list property: {sub}")
        try:
            typed = _typed(fmt[sub], val)
        except ValueError as exc:
            raise ValueError(f"invalid format - format error\n{key}.{sub}: {exc}") from None
        parts[sub] = str(typed)
    if key in ("migration", "replication") and "network" in parts:
        try:
            ipaddress.ip_network(parts["network"], strict=False)
        except ValueError:
            raise ValueError(f"invalid format - format error\n{key}.network: invalid format - value does not look "
                             "like a valid CIDR network") from None
    if key == "next-id" and int(parts.get("lower", 100)) > int(parts.get("upper", 1_000_000)):
        raise ValueError(f"lower ({parts.get('lower', 100)}) <= upper ({parts.get('upper', 1_000_000)}) boundary "
                         "rule broken")
    ordered = ([default_key] if default_key in parts else []) + sorted(k for k in parts if k != default_key)
    return ",".join(parts[k] if k == default_key else f"{k}={parts[k]}" for k in ordered)


@API.endpoint("GET", "/cluster/options", returns={"type": "object", "properties": {
    "mac_prefix": {"type": "string"}, "description": {"type": "string"},
    "allowed-tags": {"type": "array", "items": {"type": "string"}}}})
async def get_options(ctx: Ctx, p: dict) -> dict:
    """The datacenter options; without `Sys.Audit` on `/` only `console` and `tag-style`. Property strings
    come as objects, `registered-tags` as a list; `allowed-tags`: the tags the caller may set (those on guests it
    can see, and the registered and user-allowed ones)."""
    with ctx.node.read() as s:
        stored = dict(s.datacenter)
        tags = {t for v, g in s.guests.items() for t in split_list(g["conf"].get("tags", ""))
                if ctx.can("VM.Audit", f"/vms/{v}")}
    out: dict = {"description": "", "mac_prefix": PROXMOX_OUI}
    for key, value in stored.items():
        param = PARAMS.get(key)
        out[key] = _parse(key, value) if key in FORMATS else int(value) if param and param.type != "string" else value
    if "registered-tags" in out:
        out["registered-tags"] = out["registered-tags"].split(";")
    if "migration_unsecure" in out and "type" not in out.get("migration", {}):
        out.setdefault("migration", {})["type"] = "insecure" if out["migration_unsecure"] else "secure"
    if not ctx.can("Sys.Audit", "/"):
        out = {k: out[k] for k in LIMITED if k in out}
    tags |= set(out.get("registered-tags", [])) | set(out.get("user-tag-access", {}).get("user-allow-list", []))
    out["allowed-tags"] = sorted(tags)
    return out


@API.endpoint("PUT", "/cluster/options", permission=Permission("Sys.Modify", "/"),
              params=[*OPTIONS, Param("delete", format="pve-configid-list",
                                      description="Options to reset to their defaults.")])
async def set_options(ctx: Ctx, p: dict) -> None:
    """Set datacenter options (and `delete` some); stored in the log, so every node answers them at once."""
    delete = split_list(p.pop("delete", ""))
    errors = {k: "property is not defined in schema and the schema does not allow additional properties"
              for k in delete if k not in PARAMS}
    changes: dict[str, str] = {}
    for key, value in p.items():
        if key == "console" and value == "applet":
            value = "html5"  # Proxmox maps the retired applet to html5
        try:
            changes[key] = canonical(key, value)
        except ValueError as exc:
            errors[key] = str(exc)
    if "mac_prefix" in changes and changes["mac_prefix"].upper() == PROXMOX_OUI:
        del changes["mac_prefix"]  # the default is not written out
        delete.append("mac_prefix")
    if "migration_unsecure" in changes and "migration" not in changes:
        changes["migration"] = "insecure" if changes.pop("migration_unsecure") == "1" else "secure"
        delete.append("migration_unsecure")
    if errors:
        raise ParamErrors(errors)
    if not changes and not delete:
        return None
    await ctx.node.submit(SetDatacenterOptions(request_id=ctx.command_id, ts=ctx.now, user=ctx.user, set=changes,
                                               delete=delete))
    return None

"""Cloud-init data as Proxmox generates it, pure: the files of a guest's cloud-init drive from its config.

Source: qemu-server `PVE/QemuServer/Cloudinit.pm` (the texts, byte for byte, quirks included),
`PVE/QemuServer/Network.pm` (`ipconfigN`), pve-common `JSONSchema.pm` (the value formats and their wording).

    files(conf, vmid, host, custom) -> (label, {path: text})
        nocloud       `cidata`:   /user-data, /network-config (v1), /meta-data, /vendor-data
        configdrive2  `config-2`: /openstack/latest/{user_data,meta_data.json,vendor_data.json}, /openstack/content/0000
        opennebula    `CONTEXT`:  /context.sh
    dump(conf, vmid, kind, host, mask) -> the text `GET …/cloudinit/dump?type=user|network|meta` answers
    pending(conf, generated) -> the rows of `GET …/cloudinit`

`host` is the node's DNS (resolv.conf), used when the guest sets neither `nameserver` nor `searchdomain`;
`custom` the texts of the `cicustom` snippets (user, network, meta, vendor). The format defaults to nocloud,
configdrive2 for Windows `ostype`s. `cipassword` is what the config holds: a crypt hash for every `ostype`
but Windows (api/services/cloudinit.py hashes it before it reaches the log).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass
from urllib.parse import unquote

# $cloudinitoptions (PVE/API2/Qemu.pm): the keys `GET …/cloudinit` always lists
KEYS = ("cicustom", "cipassword", "citype", "ciuser", "ciupgrade", "nameserver", "searchdomain", "sshkeys")
TRACKED = re.compile(r"(cicustom|cipassword|citype|ciuser|ciupgrade|nameserver|searchdomain|sshkeys|name|"
                     r"ipconfig\d+|net\d+)")  # what changes the image (qemu-server cloudinit_pending_properties)
MASK = "**********"
WINDOWS = ("wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8", "win10", "win11")  # Helpers::windows_version
HASHED = re.compile(r"\$(?:[156]|2[ay])(\$.+){2}")  # a crypt hash already (PVE/API2/Qemu.pm)
MAX_SNIPPETS = 3 * 1024 * 1024
IPV4 = r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
DNS_NAME = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?\.)*[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?"


class CloudinitError(ValueError):
    """A cloud-init value or custom file that cannot be used; the message is Proxmox's wording."""


@dataclass(frozen=True)
class HostDns:
    """The node's resolv.conf: its first `search` (or `domain`) line and first three name servers."""

    search: str = ""
    nameservers: tuple[str, ...] = ()


def parse_resolv_conf(text: str) -> HostDns:
    """pve-common `read_etc_resolv_conf`."""
    search, servers = "", []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] in ("search", "domain") and not search:
            search = " ".join(words[1:])
        elif len(words) >= 2 and words[0] == "nameserver" and len(servers) < 3:
            servers.append(words[1])
    return HostDns(search, tuple(servers))


def is_tracked(key: str) -> bool:
    return bool(TRACKED.fullmatch(key))


def tracked(conf: dict) -> dict:
    """The config values an image is made from (recorded when it is made)."""
    return {k: v for k, v in conf.items() if is_tracked(k)}


def is_windows(conf: dict) -> bool:
    return str(conf.get("ostype", "")) in WINDOWS


def format_of(conf: dict) -> str:
    """`citype`, or configdrive2 for Windows (cloudbase-init reads only that) and nocloud for the rest."""
    return str(conf.get("citype") or ("configdrive2" if is_windows(conf) else "nocloud"))


# ---- values --------------------------------------------------------------------------------------
def _props(value: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in (p for p in str(value).split(",") if p.strip()):
        key, sep, val = part.partition("=")
        if not sep or not val:
            raise CloudinitError("invalid format - value without key, but schema does not define a default key"
                                 if not sep else "invalid format - missing key in comma-separated list property")
        if key in out:
            raise CloudinitError(f"invalid format - duplicate key in comma-separated list property: {key}")
        out[key] = val
    return out


def _cidr(value: str, version: int) -> bool:
    addr, sep, prefix = value.partition("/")
    if not sep or not prefix.isdigit() or not 7 < int(prefix) <= (32 if version == 4 else 128):
        return False
    return _ip(addr, version)


def _ip(value: str, version: int) -> bool:
    if version == 4:
        return bool(re.fullmatch(IPV4, value))
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return True


IPCONFIG_FORMATS = {  # key -> (check, Proxmox's message)
    "ip": (lambda v: v in ("dhcp", "manual") or _cidr(v, 4), "value does not look like a valid ipv4 network "
                                                             "configuration"),
    "gw": (lambda v: _ip(v, 4), "value does not look like a valid IPv4 address"),
    "ip6": (lambda v: v in ("auto", "dhcp", "manual") or _cidr(v, 6), "value does not look like a valid ipv6 "
                                                                      "network configuration"),
    "gw6": (lambda v: _ip(v, 6), "value does not look like a valid IPv6 address"),
}


def check_ipconfig(key: str, value: str) -> dict[str, str]:
    """`ipconfigN` (`ip=CIDR|dhcp,gw=IP,ip6=CIDR|auto|dhcp,gw6=IP`) as pve-common checks the
    `pve-qm-ipconfig` format; CloudinitError with its message."""
    props = _props(value)
    errors = []
    for name, val in props.items():
        if name not in IPCONFIG_FORMATS:
            raise CloudinitError(f"invalid format - invalid key in comma-separated list property: {name}")
        check, message = IPCONFIG_FORMATS[name]
        if not check(val):
            errors.append(f"{key}.{name}: invalid format - {message}")
    for name, required in (("gw", "ip"), ("gw6", "ip6")):
        if name in props and required not in props:
            errors.append(f"{key}.{required}: missing property required by '{key}.{name}'")
    if errors:
        raise CloudinitError("invalid format - format error\n" + "\n".join(sorted(errors)))
    return props


def check_value(key: str, value: str) -> None:
    """The formats Proxmox declares for cloud-init keys: `ipconfigN`, `sshkeys` (urlencoded), `nameserver`
    (address-list). CloudinitError with pve-common's message."""
    if re.fullmatch(r"ipconfig\d+", key):
        check_ipconfig(key, value)
    elif key == "sshkeys" and not re.fullmatch(r"[-%a-zA-Z0-9_.!~*'()]*", value):
        raise CloudinitError(f"invalid format - invalid urlencoded string: {value}")
    elif key == "nameserver":
        for address in (a for a in re.split(r"[\0\s,;]+", value.strip()) if a):
            if not (_ip(address, 4) or _ip(address, 6) or re.fullmatch(DNS_NAME, address)):
                raise CloudinitError(f"invalid format - value does not look like a valid address: {address}")


def ipconfig(value: str) -> dict[str, str]:
    """`parse_ipconfig` as the generators use it: a value that does not parse, or sets a gateway without its
    address, configures nothing; none of `ip` and `ip6` means DHCP for both."""
    try:
        props = check_ipconfig("ipconfig", value)
    except CloudinitError:
        return {}
    if (props.get("gw") and props.get("ip") in (None, "dhcp")) or \
            (props.get("gw6") and not _ip(props.get("ip6", "").partition("/")[0], 6)):
        return {}
    if not props.get("ip") and not props.get("ip6"):
        return {"ip": "dhcp", "ip6": "dhcp"}
    return props


def mac_of(key: str, value: str) -> str:
    """The MAC address of a `netN` value (`virtio=BC:24:11:…` or `macaddr=`)."""
    for part in str(value).split(","):
        name, _, val = part.partition("=")
        if name == "macaddr" or re.fullmatch(r"(?:[0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}", val):
            return val
    raise CloudinitError(f"network interface '{key}' has no mac address")


def _nics(conf: dict) -> list[tuple[str, str, dict[str, str]]]:
    """(netN, N, its ipconfig) of the NICs with an `ipconfigN`, in Proxmox's (string) order."""
    out = []
    for key in sorted(k for k in conf if re.fullmatch(r"net\d+", k)):
        n = key[3:]
        if conf.get(f"ipconfig{n}"):
            out.append((key, n, ipconfig(str(conf[f"ipconfig{n}"]))))
    return out


def _ipv4(cidr: str) -> tuple[str, str]:
    addr, sep, prefix = cidr.partition("/")
    if not sep:
        raise CloudinitError(f"not a CIDR: {cidr}")
    return addr, str(ipaddress.IPv4Network(f"0.0.0.0/{prefix}").netmask)


def _keys(conf: dict) -> list[str]:
    if conf.get("sshkeys") is None:
        return []
    return [k.rstrip("\n") for k in unquote(str(conf["sshkeys"])).split("\n") if k.strip()]


def hostname_fqdn(conf: dict, vmid: int) -> tuple[str, str]:
    hostname = str(conf.get("name") or f"VM{vmid}")
    if "." in hostname:
        return hostname.split(".")[0], hostname
    if conf.get("searchdomain"):
        return hostname, f"{hostname}.{conf['searchdomain']}"
    return hostname, hostname


def dns(conf: dict, host: HostDns) -> tuple[list[str], list[str]]:
    """(search domains, name servers): the guest's own, else the node's (`get_dns_conf`)."""
    search = conf["searchdomain"] if conf.get("searchdomain") is not None else host.search
    servers = str(conf["nameserver"]).split() if conf.get("nameserver") is not None else list(host.nameservers)
    return str(search).split(), servers


# ---- the files -----------------------------------------------------------------------------------
def user_data(conf: dict, vmid: int, mask: bool = False) -> str:
    hostname, fqdn = hostname_fqdn(conf, vmid)
    text = f"#cloud-config\nhostname: {hostname}\nmanage_etc_hosts: true\nfqdn: {fqdn}\n"
    user, password = conf.get("ciuser"), conf.get("cipassword")
    if user is not None:
        text += f"user: {user}\n"
        if user == "root":
            text += "disable_root: False\n"
    if password is not None:
        text += f"password: {MASK if mask else password}\n"
    if conf.get("sshkeys") is not None:
        text += "ssh_authorized_keys:\n" + "".join(f"  - {k}\n" for k in _keys(conf))
    text += "chpasswd:\n  expire: False\n"
    if user != "root":
        text += "users:\n  - default\n"
    if int(conf.get("ciupgrade", 1)):
        text += "package_upgrade: true\n"
    return text


def nocloud_network(conf: dict, host: HostDns) -> str:
    """network-config, version 1."""
    text = "version: 1\nconfig:\n"
    for key, n, ip in _nics(conf):
        text += (f"    - type: physical\n      name: eth{n}\n      mac_address: '{mac_of(key, conf[key]).lower()}'\n"
                 "      subnets:\n")
        i = "      "
        if ip.get("ip") == "dhcp":
            text += f"{i}- type: dhcp4\n"
        elif ip.get("ip"):
            addr, mask = _ipv4(ip["ip"])
            text += f"{i}- type: static\n{i}  address: '{addr}'\n{i}  netmask: '{mask}'\n"
            if ip.get("gw"):
                text += f"{i}  gateway: '{ip['gw']}'\n"
        if ip.get("ip6") == "dhcp":
            text += f"{i}- type: dhcp6\n"
        elif ip.get("ip6") == "auto":
            text += f"{i}- type: ipv6_slaac\n"
        elif ip.get("ip6"):
            text += f"{i}- type: static6\n{i}  address: '{ip['ip6']}'\n"
            if ip.get("gw6"):
                text += f"{i}  gateway: '{ip['gw6']}'\n"
    search, servers = dns(conf, host)
    text += "    - type: nameserver\n"  # always: Proxmox tests array references, which are always true
    if servers:
        text += "      address:\n" + "".join(f"      - '{s}'\n" for s in servers)
    if search:
        text += "      search:\n" + "".join(f"      - '{s}'\n" for s in search)
    return text


def _eni(conf: dict, host: HostDns, cloudbase: bool) -> str:
    """/etc/network/interfaces text: configdrive2's (`configdrive2_network`) or cloudbase-init's
    (`cloudbase_network_eni`)."""
    search, servers = dns(conf, host)
    text = ""
    if not cloudbase:
        text = "auto lo\niface lo inet loopback\n\n"
        if servers:
            text += f"        dns_nameservers {' '.join(servers)}\n"
        if search:
            text += f"        dns_search {' '.join(search)}\n"
    dns_line = f"        dns-nameservers {' '.join(servers)}\n" if cloudbase and servers else ""
    for _key, n, ip in _nics(conf):
        text += f"auto eth{n}\n"
        if ip.get("ip") == "dhcp":
            text += f"iface eth{n} inet dhcp\n"
        elif ip.get("ip"):
            addr, mask = _ipv4(ip["ip"])
            text += f"iface eth{n} inet static\n        address {addr}\n        netmask {mask}\n"
            text += f"        gateway {ip['gw']}\n" if ip.get("gw") else ""
            text += dns_line
        if ip.get("ip6") in ("auto", "dhcp"):
            text += f"iface eth{n} inet6 {ip['ip6']}\n"
        elif ip.get("ip6"):
            addr, _, mask = ip["ip6"].partition("/")
            text += f"iface eth{n} inet6 static\n        address {addr}\n        netmask {mask}\n"
            text += f"        gateway {ip['gw6']}\n" if ip.get("gw6") else ""
            text += dns_line
    return text


def _instance_id(user: str, network: str) -> str:
    return hashlib.sha1((user + network).encode()).hexdigest()


def nocloud_meta(user: str, network: str) -> str:
    return f"instance-id: {_instance_id(user, network)}\n"


def configdrive2_meta(user: str, network: str) -> str:
    return ('{\n     "uuid": "' + _instance_id(user, network) + '",\n'
            '     "network_config": { "content_path": "/content/0000" }\n}\n')


def cloudbase_meta(user: str, network: str, conf: dict) -> str:
    meta: dict = {"uuid": _instance_id(user, network), "network_config": {"content_path": "/content/0000"}}
    if conf.get("cipassword"):
        meta["admin_pass"] = conf["cipassword"]
    if conf.get("sshkeys") is not None:
        meta["public_keys"] = {f"key-{i}": k for i, k in enumerate(_keys(conf))}
    return json.dumps(meta, separators=(",", ":"), sort_keys=True)


def opennebula_context(conf: dict, vmid: int, host: HostDns) -> str:
    text = f"USERNAME={conf.get('ciuser') or 'root'}\n"
    if conf.get("cipassword") is not None:
        b64 = base64.b64encode(str(conf["cipassword"]).encode()).decode()
        text += "CRYPTED_PASSWORD_BASE64=" + "".join(b64[i:i + 76] + "\n" for i in range(0, len(b64), 76)) + "\n"
    if conf.get("sshkeys") is not None:
        keys = [k.strip() for k in unquote(str(conf["sshkeys"])).split("\n")]
        text += 'SSH_PUBLIC_KEY="' + "\n".join(k for k in keys if k) + '"\n'
    text += f"SET_HOSTNAME={hostname_fqdn(conf, vmid)[0]}\n"
    search, servers = dns(conf, host)
    text += f'DNS="{" ".join(servers)}"\n' if servers else ""
    text += f'SEARCH_DOMAIN="{" ".join(search)}"\n' if search else ""
    enabled = False
    for key, n, ip in _nics(conf):
        eth, mac = f"ETH{n}", mac_of(key, conf[key]).lower()
        mtu = dict(p.partition("=")[::2] for p in str(conf[key]).split(",")).get("mtu")
        if ip.get("ip"):
            enabled = True
            if ip["ip"] == "dhcp":
                text += f"{eth}_DHCP=YES\n"
            else:
                addr, mask = _ipv4(ip["ip"])
                text += f"{eth}_IP={addr}\n{eth}_MASK={mask}\n{eth}_MAC={mac}\n"
                text += f"{eth}_GATEWAY={ip['gw']}\n" if ip.get("gw") else ""
            text += f"{eth}_MTU={mtu}\n" if mtu else ""
        if ip.get("ip6"):
            enabled = True
            if ip["ip6"] in ("dhcp", "auto"):
                text += f"{eth}_{'DHCP6' if ip['ip6'] == 'dhcp' else 'AUTO6'}=YES\n"
            else:
                addr, _, mask = ip["ip6"].partition("/")
                text += f"{eth}_IP6={addr}\n{eth}_MASK6={mask}\n{eth}_MAC6={mac}\n"
                text += f"{eth}_GATEWAY6={ip['gw6']}\n" if ip.get("gw6") else ""
            text += f"{eth}_MTU={mtu}\n" if mtu else ""
    return text + ("NETWORK=YES\n" if enabled else "")


def files(conf: dict, vmid: int, host: HostDns, custom: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """The drive's volume label and files ({path: text}); `custom` replaces the generated parts it names.
    CloudinitError when the parts together exceed 3 MiB (Proxmox's limit for its 4 MiB drive)."""
    custom = custom or {}
    kind = format_of(conf)
    if kind == "opennebula":
        return "CONTEXT", {"/context.sh": opennebula_context(conf, vmid, host)}
    user = custom.get("user", user_data(conf, vmid))
    vendor = custom.get("vendor", "")
    if kind == "configdrive2":
        network = custom.get("network", _eni(conf, host, cloudbase=is_windows(conf)))
        meta = custom.get("meta", cloudbase_meta(user, network, conf) if is_windows(conf)
                          else configdrive2_meta(user, network))
        out = {"/openstack/latest/user_data": user, "/openstack/content/0000": network,
               "/openstack/latest/meta_data.json": meta, "/openstack/latest/vendor_data.json": vendor}
        label = "config-2"
    elif kind == "nocloud":
        network = custom.get("network", nocloud_network(conf, host))
        out = {"/user-data": user, "/network-config": network,
               "/meta-data": custom.get("meta", nocloud_meta(user, network)), "/vendor-data": vendor}
        label = "cidata"
    else:
        raise CloudinitError(f"missing cloudinit methods for format '{kind}'")
    if sum(len(t) for t in out.values()) > MAX_SNIPPETS:
        raise CloudinitError("Cloud-Init sum of snippets too big (> 3 MiB)")
    return label, out


def dump(conf: dict, vmid: int, kind: str, host: HostDns, mask: bool) -> str:
    """`dump_cloudinit_config`: the generated user-data (password masked if `mask`), network config (v1 for
    nocloud, else configdrive2's) or meta-data (its instance id from the unmasked user-data)."""
    network = nocloud_network(conf, host) if format_of(conf) == "nocloud" else _eni(conf, host, cloudbase=False)
    if kind == "user":
        return user_data(conf, vmid, mask)
    if kind == "network":
        return network
    if format_of(conf) == "nocloud":
        return nocloud_meta(user_data(conf, vmid), network)
    return configdrive2_meta(user_data(conf, vmid), network)


# ---- current and pending -------------------------------------------------------------------------
def pending(conf: dict, generated: dict | None) -> list[dict]:
    """`GET …/cloudinit`: each cloud-init key with the value the drive's image was made from (`value`) and the
    config's newer one (`pending`), or `delete: 1` when the config no longer has it; `name` and `netN` (hostname,
    MACs) only when they changed. Never made: every key set is pending. `cipassword` shows as MASK."""
    rows = []
    before = generated or {}
    for key in sorted({k for k in (*conf, *before) if is_tracked(k)}):
        old, new = before.get(key), conf.get(key)
        if old == new and not (key in KEYS or key.startswith("ipconfig")):
            continue  # name, netN: only when changed
        if generated is None and not (key in KEYS or key.startswith("ipconfig")):
            continue
        row: dict = {"key": key}
        if old is not None:
            row["value"] = old
        if new is None:
            row["delete"] = 1
        elif generated is None or old != new:
            row["pending"] = new
        for side in ("value", "pending"):
            if key == "cipassword" and side in row:
                row[side] = MASK
        rows.append(row)
    return rows

"""Property strings (`virtio=BC:24:11:00:00:01,bridge=vmbr0`): parsed and checked against their declared format,
printed in Proxmox's canonical form, refused with Proxmox's messages.

One parser and one printer, driven by the format descriptions (api/formats_pve.py, generated from Proxmox's
API schema; api/formats_named.py; scalar formats in api/formats_scalar.py), as pve-common's
`PVE/JSONSchema.pm` does it:

- `parse(fmt, text, path)`: `parse_property_string` with `check_object`: `k=v` parts, a bare value for the
  format's `default_key`, aliases (`volume=` is `file=`; `virtio=MAC` is `model=virtio,macaddr=MAC` through
  `keyAlias`), booleans read as 1/0, then every key checked (type, format, pattern, length, range, enum,
  `requires`). Raises ValueError with pve-common's text (`format error\\nnet0.macaddr: invalid format - value does
  not look like a valid unicast MAC address`, `invalid key in comma-separated list property: gateway`, ...), which
  `coerce` gives the parameter behind `invalid format - `, as `check_prop` does.
- `print_(data, fmt)`: `print_property_string`: the default key first without `key=` (merged with its keyAlias:
  `virtio=MAC`), the required keys, then the rest, each sorted; sizes as `format_size`.
- `coerce(format, key, value)`: a parameter's value as the API stores it (the hook Param uses): checked, then
  re-printed where Proxmox re-prints it (disks through `print_drive` after `parse_drive`'s checks and
  `cleanup_drive_path`; NICs through `print_net`; tags through `get_unique_tags`; `boot` with `order` through
  `print_bootorder`), else kept as given (Proxmox stores `agent`, `ipconfigN`, ... as the client wrote them).
- `print_drive(key, drive)`: a drive the service changes after the check (an allocated volume), printed alike.

Departures: `bps`, `bps_rd`, `bps_wr` become `mbps*` with their value (qemu-server's `parse_drive` writes
0.000, a slip); a `custom-` CPU model is taken as given (gpve has no cluster-wide CPU models to look it up in).
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse

from api import formats_named, formats_pve, formats_scalar
from api.formats_scalar import format_size, parse_size, split_list

FORMATS: dict[str, dict[str, dict]] = {**formats_pve.FORMATS, **formats_named.FORMATS}
# config parameters' scalar formats checked here (the others, `dns-name`, `pve-storage-id`, ..., in api/schema.py)
PARAM_SCALAR_FORMATS = ("pve-cpuset", "pve-qm-bootdisk", "pve-volume-id", "pve-hotplug-features", "address-list",
                        "urlencoded", "pve-startup-order", "pve-tag-list")
TRUE, FALSE = ("1", "on", "yes", "true"), ("0", "off", "no", "false")
NEW_DISK_RE = re.compile(r"(?:([^/:\s]+):)?(\d+(?:\.\d+)?)")
THROTTLE_REQUIRES = (("mbps_max", "mbps"), ("mbps_rd_max", "mbps_rd"), ("mbps_wr_max", "mbps_wr"),
                     ("bps_max_length", "mbps_max"), ("bps_rd_max_length", "mbps_rd_max"),
                     ("bps_wr_max_length", "mbps_wr_max"), ("iops_max_length", "iops_max"),
                     ("iops_rd_max_length", "iops_rd_max"), ("iops_wr_max_length", "iops_wr_max"))
SSH_KEY_TYPES = ("ssh-rsa", "ssh-dss", "ssh-ed25519", "ssh-ed448", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                 "ecdsa-sha2-nistp521", "sk-ecdsa-sha2-nistp256@openssh.com", "sk-ssh-ed25519@openssh.com")


class FormatErrors(ValueError):
    """pve-common's `raise "format error", errors => {path: message}`."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("format error\n" + "\n".join(f"{path}: {errors[path]}" for path in sorted(errors)))


def _add_error(errors: dict[str, str], path: str, message: str) -> None:
    path = path or "_root"
    errors[path] = f"{errors[path]}\\n{message}" if path in errors else message


def _is_number(value: str) -> bool:
    return bool(re.fullmatch(r"[+-]?(\d+\.\d+|\d+\.|\.\d+|\d+)([eE][+-]?\d+)?", value))


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _truthy(value) -> bool:
    """Perl's truth of a string: not undef, not empty, not "0"."""
    return value is not None and value not in ("", "0")


def _parse_boolean(value: str) -> str | None:
    word = value.lower()
    return "1" if word in TRUE else "0" if word in FALSE else None


def check_format(name: str | dict, value: str, path: str) -> dict | None:
    """`check_format`: a property-string format (a name in FORMATS, or a format dict) parses `value` (its keys,
    or FormatErrors); a scalar format checks it. Raises ValueError with the checker's message."""
    if isinstance(name, dict) or name in FORMATS:
        return parse(name, value, path)
    check = formats_scalar.checker(name)
    if check is None:
        raise ValueError(f"undefined format '{name}'")
    check(value)
    return None


def _check_value(value: str, schema: dict, path: str, errors: dict[str, str]) -> None:
    """`check_prop` for one scalar value: type, format, pattern, length, range, enum (the first failure)."""
    kind = schema.get("type")
    if kind == "boolean" and value not in ("0", "1") or kind == "integer" and not re.fullmatch(r"[+-]?\d+", value) \
            or kind == "number" and not _is_number(value):
        _add_error(errors, path, f"type check ('{kind}') failed - got '{value}'")
        return
    if schema.get("format"):
        try:
            check_format(schema["format"], value, path)
        except ValueError as exc:
            _add_error(errors, path, f"invalid format - {exc}")
            return
    checks = (
        ("pattern" in schema and not re.fullmatch(schema["pattern"], value), "value does not match the regex pattern"),
        ("maxLength" in schema and len(value) > schema["maxLength"],
         f"value may only be {schema.get('maxLength')} characters long"),
        ("minLength" in schema and len(value) < schema["minLength"],
         f"value must be at least {schema.get('minLength')} characters long"),
        (_is_number(value) and "maximum" in schema and float(value) > schema["maximum"],
         f"value must have a maximum value of {_num(schema.get('maximum', 0))}"),
        (_is_number(value) and "minimum" in schema and float(value) < schema["minimum"],
         f"value must have a minimum value of {_num(schema.get('minimum', 0))}"),
    )
    failed = next((message for bad, message in checks if bad), None)
    if failed is None and "enum" in schema and value not in schema["enum"]:
        failed = f"value '{value}' does not have a value in the enumeration '{', '.join(schema['enum'])}'"
    if failed is not None:
        _add_error(errors, path, failed)


def check_object(path: str, fmt: dict, data: dict[str, str], errors: dict[str, str]) -> None:
    """`check_object` without additional properties: every key of `fmt` against `data`, then `requires`."""
    for key, schema in fmt.items():
        sub = f"{path}.{key}" if path else key
        if schema.get("alias"):
            continue
        if key not in data:
            if not schema.get("optional"):
                _add_error(errors, sub, "property is missing and it is not optional")
            continue
        _check_value(data[key], schema, sub, errors)
    for key in data:
        sub = f"{path}.{key}" if path else key
        schema = fmt.get(key)
        if schema is None:
            _add_error(errors, sub, "property is not defined in schema and the schema does not allow additional "
                                    "properties")
        elif schema.get("requires") and schema["requires"] not in data:
            required = schema["requires"]
            _add_error(errors, f"{path}.{required}" if path else required, f"missing property required by '{sub}'")


def default_key(fmt: dict) -> tuple[str | None, dict[str, str]]:
    """The format's default key and its key aliases ({keyAlias: alias}: `model` -> `macaddr` for NICs)."""
    key = next((k for k, schema in fmt.items() if schema.get("default_key")), None)
    aliases = {schema["keyAlias"]: schema["alias"] for schema in fmt.values() if schema.get("keyAlias")}
    return key, aliases


def parse(fmt: str | dict, text: str, path: str = "", skip: tuple[str, ...] = ()) -> dict[str, str]:
    """`parse_property_string` + `check_object`: {key: value} (booleans as "1"/"0"), or ValueError with
    Proxmox's message (without the `invalid format - ` its caller adds)."""
    fmt = FORMATS[fmt] if isinstance(fmt, str) else fmt
    dkey, _ = default_key(fmt)
    res: dict[str, str] = {}
    default_seen = False
    for part in str(text).split(","):
        if not part.strip():
            continue
        m = re.fullmatch(r"([^=]+)=(.+)", part)
        if m:
            key, value = m.groups()
            if key in skip:
                continue
            if key in res:
                raise ValueError(f"duplicate key in comma-separated list property: {key}")
            schema = fmt.get(key)
            if schema and schema.get("alias"):
                if schema.get("keyAlias"):
                    if schema["keyAlias"] in res:
                        raise ValueError(f"key alias '{schema['keyAlias']}' is already defined")
                    res[schema["keyAlias"]] = key
                key = schema["alias"]
                schema = fmt.get(key)
                if key in res:
                    raise ValueError(f"key '{key}' is already defined (via alias)")
            if not schema:
                raise ValueError(f"invalid key in comma-separated list property: {key}")
            res[key] = (_parse_boolean(value) or value) if schema.get("type") == "boolean" else value
        elif "=" not in part:
            if default_seen:
                raise ValueError(f"duplicate key in comma-separated list property: {dkey}")
            if dkey is None:
                raise ValueError("value without key, but schema does not define a default key")
            default_seen = True
            if res.get(dkey, "") not in ("", "0"):  # Perl: `if (!$res->{$default_key})`
                raise ValueError(f"duplicate key in comma-separated list property: {dkey}")
            res[dkey] = (_parse_boolean(part) or part) if fmt[dkey].get("type") == "boolean" else part
        else:
            raise ValueError("missing key in comma-separated list property")
    errors: dict[str, str] = {}
    check_object(path, fmt, res, errors)
    if errors:
        raise FormatErrors(errors)
    return res


def print_(data: dict, fmt: str | dict, skip: tuple[str, ...] = ()) -> str:
    """`print_property_string` of checked data: default key first (bare, or `keyalias=alias` for a NIC's model and
    MAC), then required keys, then the rest, sorted; `disk-size` values (bytes) as `format_size`."""
    fmt = FORMATS[fmt] if isinstance(fmt, str) else fmt
    dkey, key_aliases = default_key(fmt)
    done, parts = set(skip), []

    def text(key: str, value) -> str:
        schema = fmt.get(key, {})
        schema = fmt.get(schema["alias"], {}) if schema.get("alias") else schema
        if schema.get("format") == "disk-size":  # bytes, as parse_drive leaves them
            return format_size(value if isinstance(value, int) else parse_size(str(value)) or 0)
        if "," in str(value):
            raise ValueError(f"illegal value with commas for {key}")
        return str(value)

    def add(key: str, bare: bool = False) -> None:
        if key in done or data.get(key) is None:
            return
        done.add(key)
        combine = key_aliases.get(key)
        if combine and data.get(combine) is not None:
            parts.append(f"{text(key, data[key])}={text(combine, data[combine])}")
            done.add(combine)
        else:
            parts.append(text(key, data[key]) if bare else f"{key}={text(key, data[key])}")

    if dkey is not None:
        add(dkey, bare=True)
    for key in sorted(k for k in data if k in fmt and not fmt[k].get("optional")):
        add(key)
    for key in sorted(data):
        add(key)
    return ",".join(parts)


def typetext(fmt: str | dict) -> str:
    """`generate_typetext`: `[model=]<enum> [,bridge=<bridge>] ...`, for the documentation."""
    fmt = FORMATS[fmt] if isinstance(fmt, str) else fmt
    dkey, key_aliases = default_key(fmt)
    out: list[str] = []

    def add(key: str) -> None:
        schema = fmt[key]
        if key in done or schema.get("alias"):
            return
        done.add(key)
        enum = schema.get("enum")
        kind = f"<{schema['format_description']}>" if schema.get("format_description") else \
            f"<{'|'.join(enum) if len(enum) <= 3 else 'enum'}>" if enum else \
            {"boolean": "<1|0>", "integer": "<integer>", "number": "<number>"}.get(schema.get("type", ""), "<string>")
        item = f"[{key}=]{kind}" if key == dkey else f"{key}={kind}"
        item = f",{item}" if out else item
        out.append(f"[{item}]" if schema.get("optional") else item)

    done: set[str] = set()
    if dkey is not None:
        add(dkey)
    for key in sorted(k for k in fmt if not fmt[k].get("optional")):
        add(key)
    for key in sorted(fmt):
        add(key)
    out += [f"[,<{alias}>=<{target}>]" for alias, target in sorted(key_aliases.items())]
    return " ".join(out)


# ---- parameters: what the API stores -------------------------------------------------------------------------
def _drive(key: str, data: dict[str, str]) -> dict:
    """qemu-server's `parse_drive` checks, `check_drive_param`'s `import-from` rules and `cleanup_drive_path`;
    ValueError with Proxmox's message. Returns the drive as `print_drive` prints it (size in bytes)."""
    drive: dict = dict(data)
    for opt in ("bps", "bps_rd", "bps_wr"):
        if opt in drive:
            if f"m{opt}" in drive:
                raise ValueError("unable to parse drive options")  # both bps and mbps given
            drive[f"m{opt}"] = f"{int(drive.pop(opt)) / (1024 * 1024.0):.3f}"
    get = drive.get
    if any(_truthy(get(opt)) and not _truthy(get(req)) for opt, req in THROTTLE_REQUIRES) \
            or any(_truthy(get(a)) and _truthy(get(b)) for a, b in (("mbps_rd", "mbps"), ("mbps_wr", "mbps"),
                                                                    ("iops_rd", "iops"), ("iops_wr", "iops"))) \
            or get("media") == "cdrom" and (_truthy(get("snapshot")) or _truthy(get("format"))
                                            or key.startswith("virtio")):
        raise ValueError("unable to parse drive options")
    if drive.get("size") is not None:
        drive["size"] = parse_size(drive["size"])
    if drive.get("import-from"):
        m = NEW_DISK_RE.fullmatch(drive["file"])
        if not m or float(m.group(2)) != 0:
            raise ValueError("'import-from' requires special syntax - use <storage ID>:0,import-from=<source>")
        needed = {"efidisk0": ("efitype", "pre-enrolled-keys"), "tpmstate0": ("version",)}.get(key, ())
        missing = next((opt for opt in needed if opt not in drive), None)
        if missing:
            raise ValueError(f"need to specify '{missing}' when using 'import-from'")
    if "media" not in drive and drive["file"] in ("cdrom", "none"):
        drive["media"] = "cdrom"
    return drive


def ssh_public_keys(text: str) -> None:
    """`validate_ssh_public_keys` of the URL-decoded `sshkeys`: every line that is not blank one public key (the
    authorized_keys form: options, type, base64 key whose own type is the same, comment), else ValueError
    `SSH public key validation error` (Proxmox asks `ssh-keygen -l`)."""
    for line in urllib.parse.unquote(text).split("\n"):
        if line.strip() and not _ssh_key(line):
            raise ValueError("SSH public key validation error")


def _ssh_key(line: str) -> bool:
    words = line.split()
    at = next((i for i, w in enumerate(words) if w in SSH_KEY_TYPES or w.endswith("-cert-v01@openssh.com")), None)
    if at is None or at + 1 >= len(words):
        return False
    try:
        blob = base64.b64decode(words[at + 1], validate=True)
    except (binascii.Error, ValueError):
        return False
    fields, pos = [], 0
    while pos + 4 <= len(blob):
        size = int.from_bytes(blob[pos:pos + 4], "big")
        fields.append(blob[pos + 4:pos + 4 + size])
        pos += 4 + size
    if not fields or fields[0] != words[at].encode():
        return False
    # a plain key is length-prefixed strings only (a certificate also holds bare integers)
    return words[at].endswith("-cert-v01@openssh.com") or (pos == len(blob) and len(fields) >= 2)


def _vm_cpu(data: dict[str, str]) -> None:
    """`validate_vm_cpu_conf`."""
    cputype = data.get("cputype")
    if not cputype:
        raise ValueError("CPU is missing cputype")
    if not cputype.startswith("custom-") and cputype not in formats_named.CPU_MODELS \
            and cputype not in formats_named.BUILTIN_CPU_MODELS:
        raise ValueError(f"Built-in cputype '{cputype}' is not defined (missing 'custom-' prefix?)")
    supported = "|".join(re.escape(f) for f in formats_named.VM_CPU_FLAGS)
    if data.get("flags") and not re.fullmatch(rf"[+-](?:{supported})(?:;[+-](?:{supported}))*", data["flags"]):
        raise ValueError("VM-specific CPU flags must be a subset of: " + ", ".join(sorted(formats_named.VM_CPU_FLAGS)))
    if data.get("reported-model") is not None:
        raise ValueError("Property 'reported-model' not allowed in VM-specific CPU config.")


# what Proxmox's handlers check beyond the schema, for one parameter (qemu-server `create_vm`, `update_vm`)
PARAM_CHECKS = {"sshkeys": ssh_public_keys}
DRIVE_FORMATS = ("pve-qm-ide-with-alloc", "pve-qm-sata-with-alloc", "pve-qm-scsi-with-alloc",
                 "pve-qm-virtio-with-alloc", "pve-qm-efidisk-with-alloc", "pve-qm-tpmstate-with-alloc")


def print_drive(key: str, drive: dict) -> str:
    """A drive (`ide0` ... `tpmstate0`) as qemu-server's `print_drive` writes it: for a value the service changes
    after checking it (an allocated volume replacing `local:8`); `size` in bytes or as `32G`."""
    bus = re.sub(r"\d+$", "", key)
    return print_(drive, f"pve-qm-{bus}-with-alloc")


def knows(name: str | None) -> bool:
    return name in FORMATS or name in PARAM_SCALAR_FORMATS


def coerce(name: str, key: str, value: str) -> str:
    """A config parameter's value checked against format `name` (ValueError with the message Proxmox gives the
    parameter `key`), as it is stored."""
    if name == "pve-tag-list":
        try:
            check_format("pve-tag-list", value, key)
        except ValueError as exc:
            raise ValueError(f"invalid format - {exc}") from None
        return ";".join(sorted({tag.lower() for tag in split_list(value)}))  # get_unique_tags
    try:
        data = check_format(name, value, key)
        if name == "pve-vm-cpu-conf":
            _vm_cpu(data or {})
    except ValueError as exc:
        raise ValueError(f"invalid format - {exc}") from None
    if name in DRIVE_FORMATS:
        return print_(_drive(key, data or {}), name)
    if name == "pve-qm-net":
        return print_(data or {}, name)
    if name == "pve-qm-boot" and data and data.get("order"):
        return print_({"order": ";".join(split_list(data["order"]))}, name)
    if key in PARAM_CHECKS:
        PARAM_CHECKS[key](value)
    return value

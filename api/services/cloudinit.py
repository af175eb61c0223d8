"""Cloud-init: the password kept hashed, the config as callers see it, `cicustom` snippets checked, the drive's
current and pending values, the generated texts, and regeneration.

Source: qemu-server `PVE/API2/Qemu.pm` (`cipassword` handling in update_vm, `cloudinit_pending`,
`cloudinit_update`, `cloudinit_generated_config_dump`, the masking in `vm_config` and `vm_pending`) and
`PVE/QemuServer/Cloudinit.pm`. Departures: the password is hashed on create too (Proxmox hashes it only on
update), and a config, snapshot or dump never shows it, hashed or not, to anyone: `**********`.
"""

from __future__ import annotations

import re

from passlib.hash import sha256_crypt

from api.context import Ctx
from api.errors import ApiError
from api.schema import ParamErrors
from api.services.tasks import start_task, wait_task
from engine import cloudinit
from engine.cloudinit import HASHED, MASK, CloudinitError, HostDns
from hypervisor.cloudinit import check_custom, drive_key, host_dns

SALT_CHARS = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def hashed(password: str, ostype: str | None, entropy: str) -> str:
    """What the config keeps of `cipassword`: SHA-256 crypt (`$5$SALT$…`, as pve-common's `encrypt_pw`) unless
    it is a crypt hash already or the guest is a Windows one (cloudbase-init needs it as given). `entropy`: 64
    hex digits for the salt."""
    if re.match(HASHED, password) or cloudinit.is_windows({"ostype": ostype}):
        return password
    salt = "".join(SALT_CHARS[int(entropy[i:i + 2], 16) % 64] for i in range(0, 32, 2))
    return sha256_crypt.using(salt=salt, rounds=5000).hash(password)


def with_hashed_password(values: dict, ostype: str | None, entropy: str) -> dict:
    """`values` with `cipassword` hashed (`ostype`: the guest's, as Proxmox takes it before the change)."""
    if values.get("cipassword") is None:
        return values
    return {**values, "cipassword": hashed(str(values["cipassword"]), ostype, entropy)}


def shown(conf: dict) -> dict:
    """A config (or snapshot) as answered: `cipassword` masked, for every caller (Proxmox's vm_config)."""
    return {**conf, "cipassword": MASK} if conf.get("cipassword") else conf


def check_custom_snippets(ctx: Ctx, node: str, values: dict) -> None:
    """A `cicustom` value names snippets that exist on a storage holding snippets. Checked where the guest's
    storages are (REST requests run on the guest's node); elsewhere (a gRPC call answered by another node) the
    guest's start reports it. ParamErrors with pve-storage's wording."""
    if values.get("cicustom") is None or node != ctx.node.name or not ctx.rt.storages:
        return
    try:
        check_custom(str(values["cicustom"]), ctx.rt.storages)
    except CloudinitError as exc:
        raise ParamErrors({"cicustom": str(exc)}) from None


def pending(guest: dict) -> list[dict]:
    """`GET …/cloudinit`: rows {key, value (in the current image), pending, delete}."""
    return cloudinit.pending(guest["conf"], guest.get("cloudinit"))


def dump(ctx: Ctx, guest: dict, kind: str) -> str:
    """`GET …/cloudinit/dump?type=user|network|meta`: the text Proxmox would generate from the config. The
    password shows as its hash to callers holding VM.Config.Cloudinit (as Proxmox), never in clear."""
    conf = guest["conf"]
    mask = not ctx.can("VM.Config.Cloudinit", f"/vms/{guest['vmid']}") or \
        not re.match(HASHED, str(conf.get("cipassword", "")))
    try:
        return cloudinit.dump(conf, guest["vmid"], kind, host_dns(), mask)
    except CloudinitError as exc:  # a value its format allows but no generator can use (`ip=manual`)
        raise ApiError(400, str(exc)) from None


async def regenerate(ctx: Ctx, guest: dict) -> None:
    """`PUT …/cloudinit`: the drive's image made anew (and given to a running guest), in a task of the guest's
    node; 423 when the guest is locked, 409 while another task of it runs, 400 for a config no image can be made
    from (`ip=manual`, a snippet gone)."""
    conf = guest["conf"]
    if drive_key(conf) is not None:
        try:
            if conf.get("cicustom") and guest["node"] == ctx.node.name and ctx.rt.storages:
                check_custom(str(conf["cicustom"]), ctx.rt.storages)
            cloudinit.files(conf, guest["vmid"], HostDns(), {})
        except CloudinitError as exc:
            raise ApiError(400, str(exc)) from None
    await wait_task(ctx, await start_task(ctx, guest["node"], guest["vmid"], "qmcloudinit"))

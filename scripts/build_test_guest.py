#!/usr/bin/env python3
"""Build the tiny test guest: Debian's cloud kernel and a busybox initramfs, cached.

The guest boots in a few seconds under software emulation, prints `GPVE-GUEST-READY` on its serial
console, then every second `GPVE-TICK <n> disk=<first bytes of its first disk>` (a counter in RAM
and what the disk holds, so tests can tell a restored snapshot). It powers off on the ACPI power
button (evdev + button modules, busybox acpid), unless booted with `gpve.noacpi`. It runs Debian's QEMU guest
agent (`qemu-ga` from `qemu-guest-agent`, with the shared libraries it loads from the packages its Depends name)
on the `org.qemu.guest_agent.0` virtio-serial port when it has one (`agent: 1`), with its NICs up (virtio_net),
an /etc/os-release, root in /etc/passwd and /etc/shadow, a `chpasswd` (what `guest-set-user-password` runs) and
a /sbin/shutdown that powers off (what `guest-shutdown` runs). With a cloud-init drive
(an ISO 9660 CD-ROM on IDE or virtio-scsi), it prints before READY what the drive holds: `GPVE-CLOUDINIT
label=… user=… hostname=… key=<first SSH key's comment>`, a `GPVE-CLOUDINIT-NET <line>` per line of its
network config (leading blanks dropped) and `GPVE-CLOUDINIT-END`. It then applies, from NoCloud network-config
(version 1, as gpve and Proxmox write it for `ipconfigN: ip=A.B.C.D/N,gw=…`), each static IPv4 subnet to the NIC whose
MAC is the entry's `mac_address`: the address, and a default route via `gateway` (`GPVE-NET-STATIC <nic>
<addr>/<prefix> gw=<gateway>`; DHCP, IPv6, DNS and ConfigDrive's interfaces file are not applied). From
`#cloud-config` user-data it writes the files of `write_files:`, each entry's keys on lines of their own, the content
on one line (`encoding: b64` or none; other keys such as `owner` ignored), with parent directories and `permissions`
(0644 if none): `GPVE-WRITE-FILE <path> <mode>` (`GPVE-WRITE-FILE-SKIPPED <path> encoding=…` for another encoding).
`runcmd:` and the rest are not run: a real Kubernetes template image's cloud-init would run them (kubeadm, k3s). When
/etc/kubernetes/pki/apiserver.crt, apiserver.key and ca.crt exist then, it runs the stand-in for the Kubernetes API
server (no Kubernetes server can be installed here): Debian's `openssl s_server` on port 6443 with that certificate
and key, requiring a client certificate that verifies against ca.crt (`-Verify 1 -verify_return_error`: another CA's
certificate or none fails the handshake), restarted if it exits; a GET of any path answers `HTTP/1.0 200 ok` with an
HTML page of the TLS session, which shows the client certificate (what `kubectl get --raw /` prints). It serves one
connection at a time, and a request other than GET gets no answer. Once 6443 listens it prints `GPVE-K8S-STANDIN
listening` (`GPVE-K8S-STANDIN failed <openssl's last line>` if not within 10 s), before READY. Booted with
`gpve.busy=N`, it prints `GPVE-BUSY` at tick N and keeps a CPU busy from then on. A shell reads the serial console
(getty), and, when booted with `console=tty0`, the screen's console too: what a console page types reaches the guest.

usage: build_test_guest.py [OUTDIR]   (default: $GPVE_TEST_GUEST_DIR, or ~/.cache/gpve/test-guest-<hash of
this script>, so a changed guest is built afresh and branches with different guests do not share one)
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile

MODULES = ["evdev", "button", "virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod", "virtio_console", "virtio_net",
           "ata_piix", "sr_mod", "isofs"]
LIBDIR = "lib/x86_64-linux-gnu"
GUEST_PACKAGES = ("qemu-guest-agent", "openssl")

# /lib/gpve/network.awk: network-config (NoCloud v1, as engine/cloudinit.py writes it) -> `mac address prefix
# gateway` per static IPv4 subnet; `q` is a single quote (values are quoted)
NET_AWK = r"""
function val(v) { v = $0; sub(/^[^:]*: */, "", v); gsub(q, "", v); gsub(/"/, "", v); return v }
function bits(m, o, n, i, p) { n = split(m, o, "."); for (i = 1; i <= n; i++) for (; o[i] > 0; o[i] = int(o[i] / 2))
    p += o[i] % 2; return p + 0 }
function flush() { if (mac != "" && addr != "") print mac, addr, bits(mask), gw; addr = mask = gw = "" }
/^ *- type: (physical|nameserver)/ { flush(); mac = ""; st = 0; next }
/^ *- type:/ { flush(); st = ($0 ~ /type: *static *$/); next }
/^ *mac_address:/ { mac = tolower(val()) }
st && /^ *address:/ { addr = val() }
st && /^ *netmask:/ { mask = val() }
st && /^ *gateway:/ { gw = val() }
END { flush() }
"""

# /lib/gpve/write_files.awk: user-data's `write_files:` -> `path permissions encoding content` per entry (`-` for
# a key not given); each key on its own line, the content on one line
FILES_AWK = r"""
function val(v) { v = $0; sub(/^[^:]*: */, "", v); gsub(q, "", v); gsub(/"/, "", v); return v }
function flush() { if (path != "") print path, (mode == "" ? "-" : mode), (enc == "" ? "-" : enc), content
    path = mode = enc = content = "" }
/^write_files:/ { on = 1; next }
on && /^[^ -]/ { flush(); on = 0 }
!on { next }
/^ *- / { flush(); sub(/- /, "") }
/^ *path:/ { path = val() }
/^ *encoding:/ { enc = val() }
/^ *permissions:/ { mode = val() }
/^ *content:/ { content = val() }
END { flush() }
"""

INIT = r"""#!/bin/sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp /etc/acpi/PWRF /var/run /var/log
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m.ko || echo "GPVE-INSMOD-FAILED $m" > /dev/ttyS0; done
printf '#!/bin/sh\necho GPVE-GUEST-POWEROFF > /dev/ttyS0\npoweroff -f\n' > /etc/acpi/PWRF/00000080
chmod +x /etc/acpi/PWRF/00000080
grep -q gpve.noacpi /proc/cmdline || acpid -c /etc/acpi
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
hostname gpve-guest
for n in /sys/class/net/*; do ip link set "${n##*/}" up; done
for p in /sys/class/virtio-ports/*; do
    [ "$(cat "$p/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] || continue
    qemu-ga -m virtio-serial -p "/dev/${p##*/}" >/tmp/qga.log 2>&1 &
done
(while true; do getty -n -l /bin/sh 115200 ttyS0; sleep 1; done) &
grep -q console=tty0 /proc/cmdline && (while true; do getty -n -l /bin/sh 38400 tty1; sleep 1; done) &
sleep 1
disk=""
for d in /dev/vda /dev/sda; do [ -b $d ] && disk=$d && break; done
if [ -b /dev/sr0 ] && mkdir -p /mnt/ci && mount -t iso9660 -o ro /dev/sr0 /mnt/ci 2>/dev/null; then
    ud=/mnt/ci/user-data; nc=/mnt/ci/network-config
    if [ -f /mnt/ci/openstack/latest/user_data ]; then
        ud=/mnt/ci/openstack/latest/user_data; nc=/mnt/ci/openstack/content/0000
    fi
    label=$(dd if=/dev/sr0 bs=1 skip=32808 count=32 2>/dev/null | tr -d ' ')  # the volume id
    user=$(sed -n 's/^user: *//p' $ud | head -n 1)
    host=$(sed -n 's/^hostname: *//p' $ud | head -n 1)
    key=$(awk '/^ssh_authorized_keys:/ {f=1; next} f && /^ *- / {print $NF; exit} f && /^[^ ]/ {exit}' $ud)
    echo "GPVE-CLOUDINIT label=$label user=$user hostname=$host key=$key" > /dev/ttyS0
    [ -f $nc ] && sed 's/^ *//' $nc | while IFS= read -r line; do echo "GPVE-CLOUDINIT-NET $line"; done > /dev/ttyS0
    echo "GPVE-CLOUDINIT-END" > /dev/ttyS0
    [ -f $nc ] && awk -v q="'" -f /lib/gpve/network.awk $nc | while read -r mac addr prefix gw; do
        for n in /sys/class/net/*; do
            [ "$(cat $n/address)" = "$mac" ] || continue
            ip addr add "$addr/$prefix" dev "${n##*/}"
            [ -z "$gw" ] || ip route add default via "$gw" dev "${n##*/}"
            echo "GPVE-NET-STATIC ${n##*/} $addr/$prefix gw=$gw" > /dev/ttyS0
        done
    done
    [ "$(head -n 1 $ud)" = "#cloud-config" ] && awk -v q="'" -f /lib/gpve/write_files.awk $ud |
    while read -r path mode enc content; do
        mkdir -p "${path%/*}"
        case $enc in
            b64|base64) (umask 077; printf '%s' "$content" | base64 -d > "$path") ;;
            -) (umask 077; printf '%s\n' "$content" > "$path") ;;
            *) echo "GPVE-WRITE-FILE-SKIPPED $path encoding=$enc" > /dev/ttyS0; continue ;;
        esac
        [ "$mode" = - ] && mode=0644  # cloud-init's default
        chmod "$mode" "$path"
        echo "GPVE-WRITE-FILE $path $mode" > /dev/ttyS0
    done
    umount /mnt/ci
fi
pki=/etc/kubernetes/pki
if [ -f $pki/apiserver.crt ] && [ -f $pki/apiserver.key ] && [ -f $pki/ca.crt ]; then
    (cd /tmp; while true; do
        openssl s_server -quiet -accept 6443 -cert $pki/apiserver.crt -key $pki/apiserver.key -CAfile $pki/ca.crt \
            -Verify 1 -verify_return_error -www >/tmp/k8s-standin.log 2>&1 </dev/null
        sleep 1
    done) &
    up=""
    for i in $(seq 100); do
        grep -q ':192B [0-9A-F]*:0000 0A' /proc/net/tcp /proc/net/tcp6 2>/dev/null && up=1 && break
        sleep 0.1
    done
    if [ -n "$up" ]; then echo "GPVE-K8S-STANDIN listening" > /dev/ttyS0
    else echo "GPVE-K8S-STANDIN failed $(tail -n 1 /tmp/k8s-standin.log)" > /dev/ttyS0; fi
fi
echo "GPVE-GUEST-READY disk=${disk:-none}" > /dev/ttyS0
busy=$(sed -n 's/.*gpve\.busy=\([0-9]*\).*/\1/p' /proc/cmdline)
n=0
while true; do
    n=$((n+1))
    [ "$n" = "$busy" ] && { echo GPVE-BUSY > /dev/ttyS0; while :; do :; done & }
    content=""
    [ -n "$disk" ] && content=$(dd if=$disk bs=512 count=1 iflag=direct 2>/dev/null | head -c 16 | tr -dc 'A-Za-z0-9_-')
    echo "GPVE-TICK $n disk=$content" > /dev/ttyS0
    sleep 1
done
"""


# What guest-set-user-password runs: `chpasswd [-e]` reading `user:password` (busybox has no chpasswd applet).
CHPASSWD = r"""#!/bin/sh
IFS= read -r line
user=${line%%:*}
pass=${line#*:}
if [ "$1" = -e ]; then hash=$pass; else hash=$(mkpasswd -m sha512 "$pass") || exit 1; fi
grep -q "^$user:" /etc/shadow || exit 1
sed -i "s|^$user:[^:]*:|$user:$hash:|" /etc/shadow
"""


def sh(*args: str, cwd: str | None = None) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout


def cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (path, mode, data); directories have mode 0o040755 and no data."""
    out = io.BytesIO()
    for ino, (name, mode, data) in enumerate(entries + [("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        header = "070701" + "".join(f"{v:08X}" for v in (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0,
                                                         len(encoded), 0))
        out.write(header.encode() + encoded)
        out.write(b"\0" * ((4 - (110 + len(encoded)) % 4) % 4))
        out.write(data)
        out.write(b"\0" * ((4 - len(data) % 4) % 4))
    return out.getvalue()


def _depends(path: str) -> list[str]:
    """A module's dependencies, read from the `depends=` string of its .modinfo section."""
    with open(path, "rb") as f:
        data = f.read()
    at = data.find(b"\0depends=")
    if at < 0:
        return []
    value = data[at + len(b"\0depends="): data.index(b"\0", at + 1)].decode()
    return [d.replace("-", "_") for d in value.split(",") if d]


def module_order(moddir: str, wanted: list[str]) -> list[str]:
    """Modules to load, dependencies first, as paths relative to the modules dir."""
    by_name = {}
    for path in glob.glob(os.path.join(moddir, "kernel", "**", "*.ko*"), recursive=True):
        by_name[os.path.basename(path).split(".ko")[0].replace("-", "_")] = os.path.relpath(path, moddir)
    order: list[str] = []

    def visit(name: str) -> None:
        rel = by_name.get(name)
        if rel is None:  # built into the kernel
            return
        for dep in _depends(os.path.join(moddir, rel)):
            visit(dep)
        if rel not in order:
            order.append(rel)

    for name in wanted:
        visit(name)
    return order


def elf_files(root: str, binary: str) -> list[tuple[str, int, bytes]]:
    """An executable of the extracted packages (`usr/sbin/qemu-ga`) and the shared libraries it loads, resolved by
    `ldd` inside the extracted packages: every one must come from there."""
    libdirs = [os.path.join(root, LIBDIR), os.path.join(root, "usr", LIBDIR)]
    out = subprocess.run(["ldd", os.path.join(root, binary)], check=True, capture_output=True, text=True,
                         env={**os.environ, "LD_LIBRARY_PATH": ":".join(libdirs)}).stdout
    entries = []
    for name, path in re.findall(r"^\s*(\S+) => (\S+)", out, re.M):
        if not path.startswith(root + "/"):
            raise SystemExit(f"{binary} needs {name}, which no extracted package holds ({path})")
        with open(path, "rb") as f:
            entries.append((f"{LIBDIR}/{name}", 0o100755, f.read()))
    with open(os.path.join(root, binary), "rb") as f:
        entries.append((binary, 0o100755, f.read()))
    return entries


def agent_files(root: str) -> list[tuple[str, int, bytes]]:
    """qemu-ga with its libraries, the loader, and what its commands expect of the guest."""
    entries = elf_files(root, "usr/sbin/qemu-ga")
    with open(os.path.join(root, LIBDIR, "ld-linux-x86-64.so.2"), "rb") as f:  # lib64's is an absolute link
        entries.append(("lib64/ld-linux-x86-64.so.2", 0o100755, f.read()))
    entries.append(("sbin/shutdown", 0o100755,
                    b"#!/bin/sh\necho GPVE-GUEST-AGENT-SHUTDOWN > /dev/ttyS0\npoweroff -f\n"))
    entries.append(("etc/os-release", 0o100644, b'ID=gpve-test-guest\nNAME="gpve test guest"\nVERSION_ID=1\n'
                                                 b'PRETTY_NAME="gpve test guest"\n'))
    entries.append(("etc/passwd", 0o100644, b"root:x:0:0:root:/:/bin/sh\n"))
    entries.append(("etc/shadow", 0o100600, b"root:*:19000:0:99999:7:::\n"))
    entries.append(("sbin/chpasswd", 0o100755, CHPASSWD.encode()))
    return entries


def guest_packages() -> list[str]:
    """The Debian packages whose programs the guest runs besides busybox (qemu-guest-agent; openssl for the
    Kubernetes API server's stand-in) and those their shared libraries come from: their Depends, recursively
    (Pre-Depends bring only init scripts' helpers)."""
    deps = sh("apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
              "--no-breaks", "--no-replaces", "--no-enhances", "--no-pre-depends", *GUEST_PACKAGES)
    return sorted({line.strip() for line in deps.splitlines() if line.strip() and not line.startswith((" ", "<"))})


def _kernel_package() -> str:
    """The versioned kernel package behind the `linux-image-cloud-amd64` metapackage."""
    for attempt in range(2):
        try:
            deps = sh("apt-cache", "depends", "linux-image-cloud-amd64")
            return [line.split()[-1] for line in deps.splitlines() if "Depends:" in line][0]
        except (subprocess.CalledProcessError, IndexError):
            if attempt:
                raise
            sh("apt-get", "update", "-qq")  # a fresh machine has no package lists yet
    raise AssertionError("unreachable")


def build(outdir: str) -> None:
    os.makedirs(outdir, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        kernel_pkg = _kernel_package()
        sh("apt-get", "download", "-q", kernel_pkg, "busybox-static", *guest_packages(), cwd=work)
        for deb in glob.glob(os.path.join(work, "*.deb")):
            sh("dpkg-deb", "-x", deb, os.path.join(work, "root"))
        root = os.path.join(work, "root")
        vmlinuz = glob.glob(os.path.join(root, "boot", "vmlinuz-*"))[0]
        moddir = glob.glob(os.path.join(root, "lib", "modules", "*"))[0]
        order = module_order(moddir, MODULES)
        dirs = ("bin", "dev", "lib", "lib/modules", "lib/gpve", "proc", "sys", "tmp", "etc", "sbin", "usr", "usr/bin",
                "usr/sbin", "lib64", LIBDIR)
        entries: list[tuple[str, int, bytes]] = [(d, 0o040755, b"") for d in dirs]
        with open(os.path.join(root, "bin", "busybox"), "rb") as f:
            entries.append(("bin/busybox", 0o100755, f.read()))
        entries.append(("bin/sh", 0o120777, b"busybox"))
        names = []
        for rel in order:
            name = os.path.basename(rel).split(".ko")[0]
            with open(os.path.join(moddir, rel), "rb") as f:
                data = f.read()
            if rel.endswith(".xz") or rel.endswith(".zst"):
                raise SystemExit(f"compressed module {rel}: busybox insmod cannot load it")
            entries.append((f"lib/modules/{name}.ko", 0o100644, data))
            names.append(name)
        entries.append(("lib/modules/order", 0o100644, (" ".join(names) + "\n").encode()))
        entries += agent_files(root) + elf_files(root, "usr/bin/openssl")
        entries.append(("lib/gpve/network.awk", 0o100644, NET_AWK.encode()))
        entries.append(("lib/gpve/write_files.awk", 0o100644, FILES_AWK.encode()))
        entries.append(("init", 0o100755, INIT.encode()))
        unique = list({name: (name, mode, data) for name, mode, data in entries}.values())  # a library two need
        with open(os.path.join(outdir, "initrd.img.tmp"), "wb") as f:
            f.write(gzip.compress(cpio_newc(unique)))
        shutil.copy(vmlinuz, os.path.join(outdir, "vmlinuz.tmp"))
    os.replace(os.path.join(outdir, "initrd.img.tmp"), os.path.join(outdir, "initrd.img"))
    os.replace(os.path.join(outdir, "vmlinuz.tmp"), os.path.join(outdir, "vmlinuz"))


def default_dir() -> str:
    with open(os.path.abspath(__file__), "rb") as f:
        version = hashlib.sha256(f.read()).hexdigest()[:12]
    return os.environ.get("GPVE_TEST_GUEST_DIR") or os.path.expanduser(f"~/.cache/gpve/test-guest-{version}")


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else default_dir()
    if not (os.path.exists(os.path.join(target, "vmlinuz")) and os.path.exists(os.path.join(target, "initrd.img"))):
        build(target)
    print(target)

#!/usr/bin/env bash
# Sets up everything gpve needs on a Debian machine: system packages, then .venv with the project.
#   scripts/setup.sh          runtime only
#   scripts/setup.sh test     runtime plus what the tests need
#   scripts/setup.sh bench    runtime, test needs, and the benchmarks' peers
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=${1:-}

packages=$(grep -v '^#' scripts/debian-packages.txt | xargs)
if [ "$want_test" = test ] || [ "$want_test" = bench ]; then
    packages="$packages $(grep -v '^#' scripts/debian-test-packages.txt | xargs)"
fi
if [ "$want_test" = bench ]; then
    packages="$packages $(grep -v '^#' scripts/debian-bench-packages.txt | xargs)"
fi
command_of() {  # the command a package gives, where its name differs
    case $1 in kubernetes-client) echo kubectl ;; *) echo "$1" ;; esac
}
missing=""
for p in $packages; do  # a package whose command is there already (npm bundled with another nodejs, a kubectl from
    # elsewhere, which Debian's would collide with) is present
    dpkg -s "$p" >/dev/null 2>&1 || command -v "$(command_of "$p")" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "installing Debian packages:$missing"
    sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq $missing >/dev/null
fi

quiet_pip() {  # pip's warnings about this machine's unused local indexes are noise
    .venv/bin/python -m pip install -q "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

# the console page's browser clients (api/console_page.py), from the npm registry: the node serves them from
# .console/node_modules (or $GPVE_CONSOLE_DIR/node_modules), no CDN
console_dir="${GPVE_CONSOLE_DIR:-.console}"
console_packages="@novnc/novnc@1.7.0 @xterm/xterm@6.0.0 @xterm/addon-fit@0.11.0"
for pkg in $console_packages; do
    if ! grep -qs "\"version\": \"${pkg##*@}\"" "$console_dir/node_modules/${pkg%@*}/package.json"; then
        mkdir -p "$console_dir"
        (cd "$console_dir" && { [ -f package.json ] || echo '{"name": "gpve-console", "private": true}' > package.json; } \
            && npm install --silent $console_packages)
        break
    fi
done

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if [ "$want_test" = test ] || [ "$want_test" = bench ]; then
    if [ "$want_test" = bench ]; then quiet_pip -e '.[test,bench]'; else quiet_pip -e '.[test]'; fi
    # npm clients for the client-compatibility tests (cached outside the repo): `proxmox-api` (REST), and
    # @grpc/grpc-js with @grpc/proto-loader (gRPC, loading proto/gpve/v1 at run time)
    npm_dir="${GPVE_NPM_DIR:-$HOME/.cache/gpve/npm}"
    npm_packages="proxmox-api@1.1.1 @grpc/grpc-js@1.14.7 @grpc/proto-loader@0.8.1"
    if command -v npm >/dev/null 2>&1; then
        for pkg in $npm_packages; do
            if [ ! -d "$npm_dir/node_modules/${pkg%@*}" ]; then
                mkdir -p "$npm_dir"
                (cd "$npm_dir" && { [ -f package.json ] || npm init -y >/dev/null; } && npm install --silent $npm_packages)
                break
            fi
        done
    fi
else
    quiet_pip -e .
fi

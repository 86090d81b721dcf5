#!/bin/sh
# Install the Debian packages listed in scripts/debian-packages.txt that are
# missing. Runs without prompting (CI has no terminal). As non-root it only
# reports what is missing.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
find_missing() {
    missing=""
    for p in $(grep -v '^#' "$here/debian-packages.txt" | tr -s ' \n' '\n' | grep -v '^$'); do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
    done
}
# schemathesis (PyPI, pinned) in a venv under var/, for scripts/conformance.sh.
# Runs as any user once python3-venv is there; pip never prompts.
SCHEMATHESIS_VERSION=4.32.5
venv=${CM_SCHEMATHESIS_VENV:-$here/../var/venv-schemathesis}
install_schemathesis() {
    if [ -x "$venv/bin/st" ] && "$venv/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
        return 0
    fi
    echo "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input \
        "schemathesis==$SCHEMATHESIS_VERSION"
}
find_missing
if [ -z "$missing" ]; then
    install_schemathesis
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages:$missing" >&2
    echo "run as root, or: sudo apt-get install$missing" >&2
    exit 1
fi
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null || apt-get update
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing >/dev/null
# Check again: every listed package must now be there.
find_missing
if [ -n "$missing" ]; then
    echo "install-deps: still missing after apt-get install:$missing; retrying" >&2
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing >/dev/null
    find_missing
    if [ -n "$missing" ]; then
        echo "install-deps: could not install:$missing" >&2
        exit 1
    fi
fi
install_schemathesis

#!/bin/bash
# A development cloud on this machine: one master and one host, SQLite and
# everything else under ./var (DESIGN.md §1). Called by `make run` / `make stop`.
#   run-local.sh start   start them (if not running), say what to try (README's "Using it")
#   run-local.sh stop    stop the VMs (kept, stopped), the host agent and the master
# Settings: VAR (default ./var), CM_PORT (default 8107), CM_BIN_DIR (default target/debug),
# CM_FORWARD_BIND (where instances' port forwards listen, default 127.0.0.1).
# It needs only bash, coreutils, grep, awk and the built binaries: no CM_* variable, no
# ~/.config/cm; it talks to its master with the admin token file the master writes.
set -euo pipefail
cd "$(dirname "$0")/.."
VAR=${VAR:-$PWD/var}
PORT=${CM_PORT:-8107}
BIN=${CM_BIN_DIR:-$PWD/target/debug}
FORWARD_BIND=${CM_FORWARD_BIND:-127.0.0.1}
URL=http://127.0.0.1:$PORT
RUN=$VAR/run
LOG=$VAR/log
mkdir -p "$RUN" "$LOG"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# cm as this script uses it: its own master and token, whatever the caller's environment says.
cm() {
    env -u CM_CONFIG CM_URL="$URL" CM_TOKEN="$(cat "$VAR/master/admin.token")" "$BIN/cm" "$@"
}

wait_for() { # what, seconds, command...
    local what=$1 secs=$2; shift 2
    for _ in $(seq 1 $((secs * 10))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "run-local: $what did not happen within ${secs}s (logs in $LOG)" >&2
    return 1
}

host_ready() { cm --json host show local | grep -q '"state": "ready"'; }

start() {
    for b in cloudmasterd cloudhostd cm; do
        [ -x "$BIN/$b" ] || { echo "run-local: $BIN/$b is missing (make build)" >&2; exit 1; }
    done
    if alive "$RUN/master.pid"; then
        echo "the master is already running (pid $(cat "$RUN/master.pid"))"
    else
        nohup "$BIN/cloudmasterd" --data-dir "$VAR/master" --listen "127.0.0.1:$PORT" \
            >>"$LOG/master.log" 2>&1 </dev/null &
        echo $! >"$RUN/master.pid"
        wait_for "the master to listen on $URL" 30 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT"
    fi
    if alive "$RUN/host.pid"; then
        echo "the host agent is already running (pid $(cat "$RUN/host.pid"))"
    else
        local probe=()
        [ -f "$VAR/images/cm-test/vmlinuz" ] && probe=(--probe-kernel "$VAR/images/cm-test/vmlinuz")
        nohup "$BIN/cloudhostd" --master "$URL" --join-token-file "$VAR/master/join.token" \
            --name local --data-dir "$VAR/host" --forward-bind "$FORWARD_BIND" \
            --kvm-probe-timeout 8 "${probe[@]}" \
            >>"$LOG/host.log" 2>&1 </dev/null &
        echo $! >"$RUN/host.pid"
        echo "starting the host agent (the first start probes KVM for a few seconds)..."
    fi
    wait_for "host 'local' to be ready" 60 host_ready
    cat <<EOF

cloudmaster is running: master $URL (store in $VAR/master), host 'local' ($VAR/host).
Logs: $LOG/master.log, $LOG/host.log. Stop everything with: make stop

Try, in this directory (cm finds the local master and its token by itself):
EOF
    # Every command printed here is in README.md's "Using it" block (crates/e2e/tests/readme.rs).
    local path_line='export PATH=$PWD/target/debug:$PATH'
    [ "$BIN" = "$PWD/target/debug" ] || path_line="export PATH=$BIN:\$PATH"
    echo "  $path_line"
    echo "  cm host list"
    # Registering the image is the user's own first step, once.
    if ! cm image show cm-test >/dev/null 2>&1; then
        echo "  cm image add cm-test --kernel var/images/cm-test/vmlinuz --initrd var/images/cm-test/initrd.img"
    fi
    echo "  cm instance create web-1 --image cm-test --flavor m1.tiny --port 80:8080"
    echo "  cm instance list"
    echo "  cm instance console web-1"
    echo "  cm instance stop web-1"
    echo "  cm instance start web-1 && cm instance reboot web-1"
    echo "  cm instance delete web-1"
    echo "  cm event list --follow"
}

stop() {
    if alive "$RUN/master.pid" && alive "$RUN/host.pid"; then
        # Stop the VMs through the cloud, so they stay stopped on the next start.
        # Top-level fields of each instance in cm's JSON (4 spaces in), not its services' names.
        for name in $(cm --json instance list | awk -F'"' '/^    "name": /{print $4}'); do
            cm instance stop "$name" --force >/dev/null 2>&1 || true
        done
    fi
    for p in host master; do
        if alive "$RUN/$p.pid"; then
            kill "$(cat "$RUN/$p.pid")" 2>/dev/null || true
            wait_for "the $p to stop" 10 bash -c "! kill -0 $(cat "$RUN/$p.pid") 2>/dev/null" || true
        fi
        rm -f "$RUN/$p.pid"
    done
    echo "stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac

#!/bin/bash
# The live master against its own OpenAPI document (issue 10, docs/api.md):
# schemathesis sends generated requests to every route of a master started
# here with its admin token; it fails on any 5xx and on any answer the
# document does not describe. Bounded: CM_CONFORMANCE_EXAMPLES examples per
# operation (default 30) and CM_CONFORMANCE_SECS seconds in all (default 180).
# Only loopback: the master listens on 127.0.0.1, and its https:// imports go
# to a proxy address on loopback where nothing listens.
set -euo pipefail
cd "$(dirname "$0")/.."
st=${CM_SCHEMATHESIS_VENV:-$PWD/var/venv-schemathesis}/bin/st
if [ ! -x "$st" ]; then
    echo "conformance: schemathesis is not installed: run scripts/install-deps.sh" >&2
    exit 1
fi
bin=${CM_BIN_DIR:-$PWD/target/debug}
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
HTTPS_PROXY=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 NO_PROXY= no_proxy= \
    "$bin/cloudmasterd" --listen "127.0.0.1:$port" --data-dir "$dir/master" \
    >"$dir/master.log" 2>&1 &
pid=$!
cleanup() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
url=http://127.0.0.1:$port
for _ in $(seq 1 300); do
    if [ -s "$dir/master/admin.token" ] && curl -fs -o /dev/null "$url/v1/openapi.json"; then
        break
    fi
    kill -0 "$pid" 2>/dev/null || { cat "$dir/master.log" >&2; exit 1; }
    sleep 0.2
done
token=$(cat "$dir/master/admin.token")
status=0
# The admin token's rotation is left out: it would lock the run out. Run in
# the temporary directory, where schemathesis leaves its cache.
hooks=$PWD/scripts/conformance
cd "$dir"
SCHEMATHESIS_HOOKS=hooks PYTHONPATH=$hooks \
    "$st" run "$url/v1/openapi.json" \
    -H "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --exclude-path /v1/tokens/admin/rotate \
    --max-examples "${CM_CONFORMANCE_EXAMPLES:-30}" \
    --max-time "${CM_CONFORMANCE_SECS:-180}" \
    --request-timeout 90 \
    --workers 1 \
    --seed "${CM_CONFORMANCE_SEED:-1}" \
    --no-color || status=$?
if [ "$status" != 0 ]; then
    echo "conformance: failed; the master's log:" >&2
    tail -n 50 "$dir/master.log" >&2
fi
exit "$status"

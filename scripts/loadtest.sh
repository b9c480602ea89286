#!/bin/sh
# Load test of the real daemon: `chargingd serve` (embedded Redis, sample tariff,
# [server] workers = $WORKERS) + scripts/loadgen.py for auth, acct and call modes.
#   scripts/loadtest.sh [WORKERS] [SECONDS] [LOADGEN OPTIONS...]
# Run from the repository root. Prints `uptime` (machine load) and loadgen's figures.
set -eu
WORKERS=${1:-1}
SECONDS_EACH=${2:-10}
[ $# -ge 2 ] && shift 2 || shift $#
PY=${PY:-.venv/bin/python}
DIR=$(mktemp -d /tmp/chargingd-load.XXXXXX)
AUTH=${AUTH_PORT:-21812}
ACCT=${ACCT_PORT:-21813}
cat > "$DIR/chargingd.toml" <<CONF
[server]
data_dir = "$DIR/data"
log_level = "warning"
workers = $WORKERS

[export]
run_in_serve = false

[rating]
default_plan = "$PWD/config/tariffs/sample.toml"

[radius]
bind = "127.0.0.1"
auth_port = $AUTH
acct_port = $ACCT

[[radius.clients]]
name = "load"
address = "127.0.0.1"
secret = "testing123"
coa_port = 0
CONF
$PY -m chargingd serve --config "$DIR/chargingd.toml" 2> "$DIR/daemon.log" &
DAEMON=$!
trap 'kill -TERM $DAEMON 2>/dev/null; wait $DAEMON 2>/dev/null; rm -rf "$DIR"' EXIT
CTL="$PY -m chargingd ctl --socket $DIR/data/chargingd.sock"
for _ in $(seq 1 300); do $CTL status >/dev/null 2>&1 && break; sleep 0.1; done
$CTL account create load --mode prepaid --currency EUR --balance 1000000000.00 \
    --identity user:load >/dev/null
echo "workers=$WORKERS"
for MODE in auth acct call; do
    uptime
    $PY scripts/loadgen.py --mode "$MODE" --seconds "$SECONDS_EACH" --user load \
        --auth-port "$AUTH" --acct-port "$ACCT" --secret testing123 "$@"
done
$CTL --json status | $PY -c 'import json,sys; d=json.load(sys.stdin)
for p in d["radius"]["processes"]:
    f = p["frontend"]
    print("pid", p["pid"], p["role"], "received", f["received"], "accepted", f["accepted"],
          "rejected", f["rejected"], "accounted", f["accounted"], "dropped", f["dropped_overload"],
          "errors", f["errors"])'

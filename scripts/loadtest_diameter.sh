#!/bin/sh
# Diameter next to RADIUS on the real daemon: `chargingd serve` with both frontends
# (embedded Redis, sample tariff, one process), then scripts/loadgen.py (RADIUS auth
# and call modes) and scripts/loadgen_diameter.py (CCR-I/U/T calls), one after another
# on the same daemon, for figures side by side.
#   scripts/loadtest_diameter.sh [SECONDS] [LOADGEN_DIAMETER OPTIONS...]
# Run from the repository root.
set -eu
SECONDS_EACH=${1:-10}
[ $# -ge 1 ] && shift 1
PY=${PY:-.venv/bin/python}
DIR=$(mktemp -d /tmp/chargingd-dia-load.XXXXXX)
AUTH=${AUTH_PORT:-21812}
ACCT=${ACCT_PORT:-21813}
DIA=${DIAMETER_PORT:-23868}
cat > "$DIR/chargingd.toml" <<CONF
[server]
data_dir = "$DIR/data"
log_level = "warning"

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

[diameter]
enabled = true
bind = "127.0.0.1"
port = $DIA

[[diameter.peers]]
name = "loadims"
origin_host = "load.ims.test"
realm = "ims.test"
addresses = ["127.0.0.1"]
CONF
$PY -m chargingd serve --config "$DIR/chargingd.toml" 2> "$DIR/daemon.log" &
DAEMON=$!
trap 'kill -TERM $DAEMON 2>/dev/null; wait $DAEMON 2>/dev/null; rm -rf "$DIR"' EXIT
CTL="$PY -m chargingd ctl --socket $DIR/data/chargingd.sock"
for _ in $(seq 1 300); do $CTL status >/dev/null 2>&1 && break; sleep 0.1; done
$CTL account create load --mode prepaid --currency EUR --balance 1000000000.00 \
    --identity user:load --identity ani:+4930555000 >/dev/null
for MODE in auth call; do
    uptime
    echo "== RADIUS $MODE"
    $PY scripts/loadgen.py --mode "$MODE" --seconds "$SECONDS_EACH" --user load \
        --auth-port "$AUTH" --acct-port "$ACCT" --secret testing123
done
uptime
echo "== Diameter call (CCR-I, CCR-U, CCR-T)"
$PY scripts/loadgen_diameter.py --port "$DIA" --seconds "$SECONDS_EACH" "$@"
uptime
echo "== Diameter initial (CCR-I, CCR-T)"
$PY scripts/loadgen_diameter.py --port "$DIA" --seconds "$SECONDS_EACH" --mode initial "$@"

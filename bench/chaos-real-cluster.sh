#!/usr/bin/env bash
# `rollcall chaos --scenario all` against a real cluster on this machine: a `rollcall server`
# and endpoint processes started with `--allow-chaos` on three loopback /24s (127.0.5–7.x,
# one ring each), LAN timing; a fresh cluster for each seed (a real cluster does not restart
# what a scenario kills, so within one run the fleet shrinks as the scenarios go).
#
#   bench/chaos-real-cluster.sh [PER_SUBNET] [SEEDS]      (defaults: 20 and "1")
#   ROLLCALL=target/release/rollcall bench/chaos-real-cluster.sh 20 "1 2 3"
#   SCENARIO=loss-and-duplication bench/chaos-real-cluster.sh 20 3    (one scenario)
#
# Prints each run's invariant table; the processes' logs stay in the printed directory.
# Everything listens on loopback only; every process is stopped on exit.
set -euo pipefail

per_subnet=${1:-20}
seeds=${2:-1}
bin=${ROLLCALL:-target/release/rollcall}
[ -x "$bin" ] || { echo "no $bin: cargo build --release -p rollcall first" >&2; exit 1; }
bin=$(realpath "$bin")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

run_seed() {
seed=$1
dir=$(mktemp -d /tmp/rollcall-chaos.XXXXXX)
echo "cluster in $dir"

cat >"$dir/rollcall.toml" <<'EOF'
[ring]
probe_interval_ms = 400   # LAN timing, as the simulated scenarios and the process suite use
hop_timeout_ms = 200
register_min_ms = 5000
register_max_ms = 10000
[chaos]
fault_limit_secs = 10     # a machine cut off from the server cannot hear "heal": it heals itself
EOF

token=$("$bin" ca init --dir "$dir/ca" | sed -n 's/^join token: //p')
"$bin" ca issue-operator --dir "$dir/ca" --name chaos --role admin --out "$dir/admin" >/dev/null
"$bin" ca issue-operator --dir "$dir/ca" --name asker --role operator --out "$dir/operator" >/dev/null

server=127.0.0.1:4998
"$bin" server --ca-dir "$dir/ca" --listen "$server" --state-dir "$dir/server" \
    --config "$dir/rollcall.toml" >"$dir/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
    grep -q "^server " "$dir/server.log" 2>/dev/null && break
    sleep 0.1
done

n=0
for s in 5 6 7; do
    for h in $(seq 1 "$per_subnet"); do
        "$bin" endpoint --server "$server" --join-token "$token" --state-dir "$dir/ep-$s-$h" \
            --listen "127.0.$s.$h:0" --allow-chaos --config "$dir/rollcall.toml" \
            >"$dir/ep-$s-$h.log" 2>&1 &
        pids+=($!)
        n=$((n + 1))
    done
done
echo "started $n endpoints"

# Until every endpoint answers one question (at most 30 tries).
for i in $(seq 1 30); do
    answered=$("$bin" ask --server "$server" --cert-dir "$dir/operator" --json --wait-secs 5 \
        "Get Computer Name from all machines" 2>/dev/null |
        sed -n 's/.*"answered": *\([0-9]*\).*/\1/p' | head -1)
    echo "try $i: ${answered:-0} of $n answered"
    [ "${answered:-0}" = "$n" ] && break
done

echo "== rollcall chaos --scenario ${SCENARIO:-all} --seed $seed"
"$bin" chaos --server "$server" --cert-dir "$dir/admin" --scenario "${SCENARIO:-all}" --seed "$seed" || true
cleanup
pids=()
}

for seed in $seeds; do
    run_seed "$seed"
done

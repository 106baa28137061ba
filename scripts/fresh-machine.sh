#!/usr/bin/env bash
# Proves the README's first command on a machine with an empty cargo home and no target/:
# `cargo build --release` builds both binaries with no protoc and nothing pre-installed, and
# `target/release/etcd-operator local -f examples/cluster.yaml` brings up a 3-member cluster
# that serves, then stops it on Ctrl-C (SIGINT). CI runs it from a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${CARGO_HOME:-}" ] || [ -d "$CARGO_HOME/registry" ]; then
  echo "scripts/fresh-machine.sh: set CARGO_HOME to an empty directory" >&2
  exit 2
fi
if [ -e target/release/etcd-operator ] || [ -e target/release/etcd-server ]; then
  echo "scripts/fresh-machine.sh: target/release already holds the binaries; run it on a fresh clone" >&2
  exit 2
fi

cargo build --release
for bin in etcd-operator etcd-server; do
  test -x "target/release/$bin" || { echo "cargo build --release did not build $bin" >&2; exit 1; }
done

state=$(mktemp -d)
log="$state/operator.log"
target/release/etcd-operator local -f examples/cluster.yaml --state-dir "$state/cluster" >"$log" 2>&1 &
pid=$!
stop() { kill -INT "$pid" 2>/dev/null || true; }
trap stop EXIT

healthy=0
for _ in $(seq 1 120); do
  healthy=0
  for ip in 127.0.0.10 127.0.0.11 127.0.0.12; do
    if curl -fsS --max-time 2 "http://$ip:2379/health" 2>/dev/null | grep -q '"health":"true"'; then
      healthy=$((healthy + 1))
    fi
  done
  [ "$healthy" = 3 ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 1
done
if [ "$healthy" != 3 ]; then
  echo "the local cluster did not become healthy ($healthy of 3):" >&2
  cat "$log" >&2
  exit 1
fi
if grep -q $'\e\[' "$state"/cluster/*/etcd.log; then
  echo "member logs hold terminal escape codes" >&2
  exit 1
fi

kill -INT "$pid"
trap - EXIT
for _ in $(seq 1 30); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 1
done
if kill -0 "$pid" 2>/dev/null; then
  echo "etcd-operator local did not stop on SIGINT" >&2
  kill -KILL "$pid"
  exit 1
fi
wait "$pid" || { echo "etcd-operator local exited with an error:" >&2; cat "$log" >&2; exit 1; }
if pgrep -f "$state/cluster" >/dev/null; then
  echo "members still running after the operator stopped" >&2
  pkill -KILL -f "$state/cluster" || true
  exit 1
fi
rm -rf "$state"
echo "fresh machine: cargo build --release and etcd-operator local work"

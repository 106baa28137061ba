#!/usr/bin/env bash
# The project's test command (README "Run the tests"; CI runs it through .ci/run).
# Installs what the tests need, idempotently, then runs every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# Reference etcd and etcdctl 3.4.23 (Debian's etcd-server and etcd-client packages): the
# compatibility and differential tests run them side by side with our server.
need=()
etcd --version 2>/dev/null | grep -q 'etcd Version: 3.4.23' || need+=(etcd-server)
etcdctl version 2>/dev/null | grep -q 'etcdctl version: 3.4.23' || need+=(etcd-client)
if [ "${#need[@]}" -gt 0 ]; then
  echo "scripts/test.sh: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi

cargo build --workspace --all-targets
# The Helm chart: lint and render with a real Helm engine, then parse the rendered objects.
bash scripts/check-chart.sh
cargo nextest run --workspace --no-fail-fast "$@"

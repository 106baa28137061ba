#!/usr/bin/env bash
# Lints and renders charts/etcd-operator with a real Helm engine (PyPI's helm-sdkpy), then
# checks that every rendered object parses as its Kubernetes type (a Rust test).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import helm_sdkpy, yaml' 2>/dev/null; then
  # helm-sdkpy declares Python >= 3.12 but works on this machine's 3.11.
  python3 -m pip install --quiet --ignore-requires-python helm-sdkpy pyyaml
fi

export RENDERED_CHART_DIR="$PWD/target/chart"
rm -rf "$RENDERED_CHART_DIR"
python3 scripts/check_chart.py
cargo test -p etcd-operator --test it -- --ignored --exact chart::rendered_chart_is_kubernetes_objects
